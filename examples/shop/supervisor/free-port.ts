import { createServer, type Server } from 'node:net';

const HOST = '127.0.0.1';

/** Listens on `port` of 127.0.0.1 (0: one the kernel picks), alone; resolves the port. */
function listenOn(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: HOST, exclusive: true }, () => {
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

/**
 * `n` distinct TCP ports free on 127.0.0.1 right now: the kernel picks each (bind to port 0), all
 * are held open together so they differ, then all are released. Give them to processes that start
 * soon after: another program could take one in between, in which case that process fails to
 * listen, exits, and the supervisor retries it on the same port.
 */
export async function freePorts(n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`freePorts needs an integer >= 0, not ${n}`);
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(servers.map((server) => listenOn(server, 0)));
  } finally {
    await Promise.all(servers.map(close));
  }
}

/**
 * Resolves whether `port` on 127.0.0.1 is free right now (bound and released at once). Another
 * program answering on the port would otherwise pass for the shop's own gateway.
 */
export async function isPortFree(port: number): Promise<boolean> {
  const server = createServer();
  try {
    await listenOn(server, port);
    return true;
  } catch (error) {
    if ((error as { code?: string }).code === 'EADDRINUSE') return false;
    throw error;
  } finally {
    await close(server);
  }
}
