import { createConnection, createServer, type Server, type Socket } from 'node:net';

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

/**
 * A TCP proxy that injects network faults between a client and a real server: `blackhole()` stops
 * reading in both directions while connections stay open (a partition, or a peer that stalls: the
 * kernel buffers fill and writers see TCP backpressure), `heal()` resumes, `reset()` resets every
 * connection, both sides seeing `ECONNRESET` (a crash, or a middlebox dropping the flow), `down()`
 * resets them and every new one until `up()` (a server stopped, then started again).
 */
export class FaultProxy {
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  #blackholed = false;
  #down = false;

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Starts a proxy on an ephemeral loopback port in front of `host:port`. */
  static async start(target: { readonly host: string; readonly port: number }): Promise<FaultProxy> {
    let proxy!: FaultProxy;
    const server = createServer((client) => proxy.#accept(client, target));
    proxy = new FaultProxy(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  /** The port clients connect to. */
  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === 'string') throw new Error('proxy is not listening');
    return address.port;
  }

  /** Connections currently open through the proxy. */
  get connections(): number {
    return this.#pairs.size;
  }

  #accept(client: Socket, target: { readonly host: string; readonly port: number }): void {
    if (this.#down) {
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection(target);
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
   * Resets every open connection, and each new one as it arrives, until `up()`: to its clients the
   * server is gone (a stop, a restart, a crash), and comes back with `up()`.
   */
  down(): void {
    this.#down = true;
    this.reset();
  }

  /** Takes connections again after `down()`. */
  up(): void {
    this.#down = false;
  }

  /** Closes every open connection and stops listening. */
  async close(): Promise<void> {
    this.#destroyAll((socket) => socket.destroy());
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
