import { randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';

const HOST = '127.0.0.1';

/** Listens on `port` of `host` (0: one the kernel picks), alone; resolves the port. */
function listenOn(server: Server, port: number, host = HOST): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, exclusive: true, ipv6Only: host.includes(':') }, () => {
      const address = server.address();
      if (typeof address === 'object' && address !== null) resolve(address.port);
      else reject(new Error(`no port from ${String(address)}`));
    });
  });
}

const close = (server: Server): Promise<void> =>
  new Promise((resolve) => {
    if (server.listening) server.close(() => resolve());
    else resolve();
  });

/** Where the kernel picks ports for outgoing connections and for port 0 (Linux; others' defaults are higher). */
async function ephemeralLow(): Promise<number> {
  try {
    const low = Number(
      (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/)[0],
    );
    return Number.isInteger(low) && low > 0 ? low : DEFAULT_EPHEMERAL_LOW;
  } catch {
    return DEFAULT_EPHEMERAL_LOW;
  }
}

/** Linux's default; macOS and Windows start theirs at 49152. */
const DEFAULT_EPHEMERAL_LOW = 32_768;
/** The lowest port handed out: above the usual servers' ports (PostgreSQL, Redis, MySQL, RabbitMQ, ...). */
const LOWEST = 20_000;
/** Tries per port before falling back to one the kernel picks. */
const TRIES = 50;

/**
 * `n` distinct TCP ports free on 127.0.0.1 right now, all held open together so they differ, then
 * released. Give them to processes that start soon after. They are picked at random below the
 * kernel's ephemeral range, where no outgoing connection and no other program's port 0 can land
 * between the pick and the listen (a port the kernel picked would be in that range, and so in use,
 * under load, by some connection when the process came to listen on it). When that range is too
 * small or full, the kernel picks. Another program binding the very port in between remains
 * possible: that process fails to listen, exits, and the supervisor retries it on the same port.
 */
export async function freePorts(n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`freePorts needs an integer >= 0, not ${n}`);
  const high = Math.min(await ephemeralLow(), 65_536);
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) ports.push(await holdOne(servers, high));
    return ports;
  } finally {
    await Promise.all(servers.map(close));
  }
}

/** Binds one more port (kept in `servers` until released): random in [LOWEST, high), else port 0. */
async function holdOne(servers: Server[], high: number): Promise<number> {
  for (let attempt = 0; high - LOWEST >= 1_000 && attempt < TRIES; attempt++) {
    const server = createServer();
    try {
      const port = await listenOn(server, LOWEST + randomInt(high - LOWEST));
      servers.push(server);
      return port;
    } catch (error) {
      await close(server);
      const code = (error as { code?: string }).code;
      if (code !== 'EADDRINUSE' && code !== 'EACCES') throw error;
    }
  }
  const server = createServer();
  servers.push(server);
  return listenOn(server, 0);
}

/**
 * Resolves whether `port` is free right now on the loopback addresses `localhost` names: 127.0.0.1,
 * where the shop listens, and ::1 (bound and released at once). Another program answering on the
 * port would otherwise pass for the shop's own gateway: a browser or curl given the printed
 * `http://localhost:PORT` tries ::1 first. A machine without IPv6 loopback has only 127.0.0.1.
 */
export async function isPortFree(port: number): Promise<boolean> {
  return (await isFreeOn(port, HOST)) && (await isFreeOn(port, '::1'));
}

/** Codes of a machine that has no ::1 to bind: nothing can listen there either. */
const NO_ADDRESS = new Set(['EADDRNOTAVAIL', 'EAFNOSUPPORT']);

async function isFreeOn(port: number, host: string): Promise<boolean> {
  const server = createServer();
  try {
    await listenOn(server, port, host);
    return true;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'EADDRINUSE') return false;
    if (host !== HOST && code !== undefined && NO_ADDRESS.has(code)) return true;
    throw error;
  } finally {
    await close(server);
  }
}
