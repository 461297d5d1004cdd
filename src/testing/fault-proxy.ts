import { createConnection, createServer, isIP, type Server, type Socket } from 'node:net';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

/**
 * A TCP proxy that injects network faults between a client and a real server: `blackhole()` stops
 * reading in both directions while connections stay open (a partition, or a peer that stalls: the
 * kernel buffers fill and writers see TCP backpressure), `heal()` resumes, `reset()` resets every
 * connection, both sides seeing `ECONNRESET` (a crash, or a middlebox dropping the flow), `down()`
 * resets them and refuses new ones until `up()` (a server stopped, then started again).
 */
export class FaultProxy {
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  #blackholed = false;
  #down: Promise<void> | undefined;
  readonly #target: { readonly host: string; readonly port: number };
  #port = 0;

  private constructor(server: Server, target: { readonly host: string; readonly port: number }) {
    this.#server = server;
    this.#target = target;
  }

  /**
   * Starts a proxy on an ephemeral loopback port in front of `host:port`. A target no connection
   * can reach (a port outside 1–65535, no host) is refused here: it threw inside the proxy at the
   * first connection, killing the test process. @throws InvalidOptionsError
   */
  static async start(target: { readonly host: string; readonly port: number }): Promise<FaultProxy> {
    const checked = proxyTarget(target);
    let proxy!: FaultProxy;
    const server = createServer((client) => proxy.#accept(client));
    proxy = new FaultProxy(server, checked);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy.#port = (server.address() as { port: number }).port;
    return proxy;
  }

  /** The port clients connect to (refused while `down()`). */
  get port(): number {
    return this.#port;
  }

  /** Connections currently open through the proxy. */
  get connections(): number {
    return this.#pairs.size;
  }

  #accept(client: Socket): void {
    const upstream = createConnection(this.#target);
    const pair: Pair = { client, upstream };
    this.#pairs.add(pair);
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    // Forwarded by hand rather than piped: pipe() resumes a paused source on drain, which would
    // let bytes through a black hole.
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    if (this.#blackholed) {
      client.pause();
      upstream.pause();
    }
  }

  /** Stops reading from both sides: nothing is forwarded and unread bytes back up into the senders. */
  blackhole(): void {
    this.#blackholed = true;
    for (const { client, upstream } of this.#pairs) {
      client.pause();
      upstream.pause();
    }
  }

  /** Resumes forwarding what was held back. */
  heal(): void {
    this.#blackholed = false;
    for (const { client, upstream } of this.#pairs) {
      client.resume();
      upstream.resume();
    }
  }

  /** Resets every open connection (TCP RST to the client and to the server: `ECONNRESET`, not an end). */
  reset(): void {
    this.#destroyAll((socket) => {
      if (!socket.destroyed) socket.resetAndDestroy();
    });
  }

  /**
   * Resets every open connection and stops listening until `up()`: new connections are refused
   * (`ECONNREFUSED`), as by a server that was stopped. Resolves once the port is closed.
   */
  async down(): Promise<void> {
    this.#down ??= new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.reset();
    await this.#down;
  }

  /** Listens again on the same port after `down()`: the server is back. */
  async up(): Promise<void> {
    if (this.#down === undefined) return;
    await this.#down;
    this.#down = undefined;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#port, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
  }

  /** Closes every open connection and stops listening. */
  async close(): Promise<void> {
    this.#destroyAll((socket) => socket.destroy());
    if (this.#down !== undefined) {
      await this.#down;
      return;
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #destroyAll(destroy: (socket: Socket) => void): void {
    for (const { client, upstream } of this.#pairs) {
      destroy(client);
      destroy(upstream);
    }
    this.#pairs.clear();
  }
}

/**
 * The target as `net.connect` takes it: a host name or address as is (no brackets, no spaces), a
 * port from 1 to 65535 (a string of digits too, as read from the environment).
 * @throws InvalidOptionsError
 */
function proxyTarget(target: unknown): { readonly host: string; readonly port: number } {
  if (target instanceof URL || typeof target === 'string') {
    throw new InvalidOptionsError('FaultProxy.start takes its target as { host, port }, not a URL');
  }
  if (target === undefined)
    throw new InvalidOptionsError('FaultProxy.start needs its target: { host, port }');
  checkOptions('FaultProxy.start', target, ['host', 'port']);
  const { host, port } = target as { host?: unknown; port?: unknown };
  // A host name or address, a colon only in an IPv6 one (`localhost:5672` named a port twice); no
  // brackets, spaces, slashes or control characters: every connection through the proxy was closed.
  if (
    typeof host !== 'string' ||
    !/^[A-Za-z0-9._%:-]+$/.test(host) ||
    (host.includes(':') && isIP(host) !== 6)
  ) {
    throw new InvalidOptionsError(
      `FaultProxy.start host must be a host name or address (an IPv6 address without brackets), not ${describeValue(host)}`,
    );
  }
  const number = typeof port === 'string' && /^\d{1,5}$/.test(port) ? Number(port) : port;
  if (!(Number.isInteger(number) && (number as number) >= 1 && (number as number) <= 65535)) {
    throw new InvalidOptionsError(
      `FaultProxy.start port must be an integer from 1 to 65535, not ${describeValue(port)}`,
    );
  }
  return { host, port: number as number };
}
