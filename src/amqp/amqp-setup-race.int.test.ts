import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { MemoryInbox } from '../inbox/inbox.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts } from '../messaging/contracts.js';
import { rabbitmqBaseUrl } from '../testing/rabbitmq.js';
import { waitFor } from '../testing/wait.js';
import { testVhosts } from './fixtures/test-vhosts.js';

const { vhost, defer } = testVhosts('ferry-setup-race');

/**
 * A TCP proxy in front of the broker that, once armed, cuts the next connection at the moment its
 * client asks to delete `name` (the second frame naming it: the first declares it): the subscription
 * fence's release, the last step of a reconnect before the connection is made current.
 */
class CutAtRelease {
  readonly #pairs = new Set<{ client: Socket; upstream: Socket }>();
  #armed: string | undefined;
  cuts = 0;
  accepted = 0;

  private constructor(readonly server: Server) {}

  static async start(): Promise<CutAtRelease> {
    const base = new URL(rabbitmqBaseUrl());
    let proxy!: CutAtRelease;
    const server = createServer((client) => proxy.#accept(client, base.hostname, Number(base.port) || 5672));
    proxy = new CutAtRelease(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** Cuts the connections open now, and the next one as it releases the fence `name`. */
  cutAllAndArm(name: string): void {
    this.#armed = name;
    for (const { client, upstream } of this.#pairs) {
      client.destroy();
      upstream.destroy();
    }
  }

  #accept(client: Socket, host: string, port: number): void {
    this.accepted++;
    const upstream = createConnection({ host, port });
    const pair = { client, upstream };
    this.#pairs.add(pair);
    const name = this.#armed;
    this.#armed = undefined;
    let seen = 0;
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (name !== undefined && chunk.includes(name) && ++seen === 2) {
        this.cuts++;
        end();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  }

  close(): Promise<void> {
    for (const { client, upstream } of this.#pairs) {
      client.destroy();
      upstream.destroy();
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('RabbitMQ transport: a connection lost while a reconnect sets it up', () => {
  it('starts the setup over instead of resuming on the dead connection, and loses nothing published meanwhile', async () => {
    // Must not be lost: a message published while the connection was down, and one published after.
    // Before, the fence's release swallowed the closed connection, the setup made it current, and
    // every publish after was sent on a closed channel: never confirmed, never delivered.
    const v = await vhost();
    const proxy = await CutAtRelease.start();
    defer(() => proxy.close());
    const url = new URL(v.url);
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    const bus = (await createBus({
      url: url.toString(),
      service: 'payments',
      logger: silentLogger,
      inbox: new MemoryInbox(),
      amqp: { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } },
    })) as Bus<Contracts>;
    defer(() => bus.close());
    const handled = new Set<string>();
    await bus.subscribe('order.#', async (m) => void handled.add(m.id));
    await bus.publish('order.created', { n: 0 }, { id: 'before' });
    await waitFor(() => handled.has('before'), 'the first message handled');

    proxy.cutAllAndArm('ferry:payments:order.#:fence');
    const during = bus.publish('order.created', { n: 1 }, { id: 'during' });
    await waitFor(() => proxy.cuts === 1, 'the reconnect cut as it released the fence');
    const after = bus.publish('order.created', { n: 2 }, { id: 'after' });
    const published = Promise.allSettled([during, after]);
    await waitFor(
      () => handled.has('during') && handled.has('after'),
      () => `both messages handled on a connection set up again (handled: ${[...handled].join(', ')})`,
    );
    expect((await published).map((p) => p.status)).toEqual(['fulfilled', 'fulfilled']);
    // The cut connection was dropped and another made: the first, the cut one, and at least one more.
    expect(proxy.accepted).toBeGreaterThanOrEqual(3);
  }, 30_000);
});
