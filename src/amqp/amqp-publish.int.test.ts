import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts } from '../messaging/contracts.js';
import {
  isPublishBufferFullError,
  isPublishNackedError,
  isPublishNotConfirmedError,
} from '../messaging/errors.js';
import { FaultProxy } from '../testing/fault-proxy.js';
import { AmqpTransport, type AmqpTransportOptions } from './amqp-transport.js';
import { testVhosts } from './fixtures/test-vhosts.js';

const { vhost, defer } = testVhosts('ferry-publish');

/** A vhost reached through a fault proxy. */
async function proxied(): Promise<{ proxy: FaultProxy; url: string }> {
  const v = await vhost();
  const proxy = await FaultProxy.start({ host: '127.0.0.1', port: 5672 });
  defer(() => proxy.close());
  const url = new URL(v.url);
  url.port = String(proxy.port);
  return { proxy, url: url.toString() };
}

async function bus(
  url: string,
  amqpOptions: Omit<AmqpTransportOptions, 'url' | 'logger'> = {},
): Promise<Bus<Contracts>> {
  const b = await createBus({
    url,
    service: 'publisher',
    logger: silentLogger,
    amqp: amqpOptions,
    closeTimeoutMs: 500,
  });
  defer(() => b.close());
  return b as Bus<Contracts>;
}

function settled<T>(promise: Promise<T>): {
  readonly state: 'pending' | 'resolved' | 'rejected';
  readonly error?: unknown;
} {
  const box: { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } = { state: 'pending' };
  promise.then(
    () => {
      box.state = 'resolved';
    },
    (error: unknown) => {
      box.state = 'rejected';
      box.error = error;
    },
  );
  return box;
}

describe('publishing on RabbitMQ', () => {
  it('rejects with PUBLISH_NACKED when the broker refuses the message', async () => {
    const v = await vhost();
    const b = await bus(v.url);
    // A queue that holds one message and refuses more: the broker nacks the second publish.
    const connection = await amqp.connect(v.url);
    defer(() => connection.close());
    const channel = await connection.createChannel();
    await channel.assertQueue('full', {
      durable: true,
      arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' },
    });
    await channel.bindQueue('full', 'ferry.events', 'full.#');

    await b.publish('full.first', { n: 1 });
    const error = await b.publish('full.second', { n: 2 }, { id: 'refused-1' }).catch((e: unknown) => e);
    expect(isPublishNackedError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'PUBLISH_NACKED', messageId: 'refused-1' });
  });

  it('refuses a publish at once, before connect(), instead of holding it until the confirm times out', async () => {
    const v = await vhost();
    const transport = new AmqpTransport({ url: v.url, logger: silentLogger, confirmTimeoutMs: 30_000 });
    defer(() => transport.close(500));
    const envelope = {
      specversion: '1.0' as const,
      id: 'early-1',
      source: 'raw',
      type: 'early.publish',
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: {},
      correlationid: 'early-1',
    };
    const started = Date.now();
    const error = await transport.publish(envelope).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BROKER_UNAVAILABLE' });
    expect((error as Error).message).toMatch(/not connected.*connect\(\)/);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(transport.status().publishes).toMatchObject({ waiting: 0 });
    // Once connected, the same envelope reaches the broker (which has no queue for it).
    await transport.connect();
    await expect(transport.publish(envelope)).rejects.toMatchObject({ code: 'UNROUTABLE' });
  });

  it('resolves a second connect() only once connected, and refuses one after a failed first connect', async () => {
    const v = await vhost();
    const transport = new AmqpTransport({ url: v.url, logger: silentLogger });
    defer(() => transport.close(500));
    void transport.connect();
    await transport.connect();
    expect(transport.status().state).toBe('ready');
    // A vhost that does not exist: the first connect fails, and the transport is closed.
    const url = new URL(v.url);
    url.pathname = `/ferry-no-such-vhost-${Date.now()}`;
    const failed = new AmqpTransport({ url: url.toString(), logger: silentLogger, connectTimeoutMs: 3000 });
    defer(() => failed.close(500));
    await expect(failed.connect()).rejects.toMatchObject({ code: 'BROKER_VHOST_NOT_FOUND' });
    await expect(failed.connect()).rejects.toMatchObject({
      code: 'BUS_CLOSED',
      message: expect.stringMatching(/first connect failed/),
    });
  });

  it('rejects with PUBLISH_NOT_CONFIRMED when no confirm arrives in time', async () => {
    const { proxy, url } = await proxied();
    const b = await bus(url, { confirmTimeoutMs: 300 });
    await (await b.subscribe('stall.#', () => {})).close();
    proxy.blackhole();
    const started = Date.now();
    const error = await b.publish('stall.now', {}, { id: 'stalled-1' }).catch((e: unknown) => e);
    expect(isPublishNotConfirmedError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'PUBLISH_NOT_CONFIRMED', messageId: 'stalled-1', timeoutMs: 300 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    proxy.heal();
  });

  it('bounds what it holds while the broker is unreachable, and delivers it all once it is back', async () => {
    // Must not be lost: the 20 publishes accepted into the buffer while the broker was unreachable.
    const { proxy, url } = await proxied();
    const b = await bus(url, { publishWindow: 5, maxBufferedPublishes: 20, confirmTimeoutMs: 20_000 });
    const received = new Set<number>();
    await b.subscribe('held.#', (m) => void received.add((m.data as { i: number }).i));
    proxy.blackhole();
    const results = Array.from({ length: 25 }, (_, i) => settled(b.publish('held.msg', { i })));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = results.filter((r) => r.state === 'rejected');
    expect(refused).toHaveLength(5);
    expect(refused.every((r) => isPublishBufferFullError(r.error))).toBe(true);
    expect(results.slice(0, 20).every((r) => r.state === 'pending')).toBe(true);

    proxy.heal();
    await expect
      .poll(() => results.slice(0, 20).every((r) => r.state === 'resolved'), { timeout: 10_000 })
      .toBe(true);
    await expect.poll(() => received.size, { timeout: 10_000 }).toBe(20);
    expect([...received].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('stops writing when the socket pushes back, holds the rest, and sends it all after drain', async () => {
    // Must not be lost: any of the 2,000 publishes made while the peer stopped reading.
    const { proxy, url } = await proxied();
    const transport = new AmqpTransport({ url, logger: silentLogger, publishWindow: 10_000 });
    const b = await createBus({ transport, service: 'publisher', logger: silentLogger, closeTimeoutMs: 500 });
    defer(() => b.close());
    const received = new Set<number>();
    await b.subscribe('big.#', (m) => void received.add((m.data as { i: number }).i), { concurrency: 50 });
    proxy.blackhole();
    const blob = 'x'.repeat(8 * 1024);
    const publishes = Array.from({ length: 2000 }, (_, i) => b.publish('big.msg', { i, blob }));
    // 16 MB do not fit in the socket buffers, and amqplib's channel buffer takes 1,024 frames: it reports
    // backpressure, and Ferry holds the rest instead of piling it into amqplib.
    await expect.poll(() => transport.status().publishes.blocked, { timeout: 5000 }).toBe(true);
    const held = transport.status().publishes;
    expect(held.waiting).toBeGreaterThan(0);
    expect(held.inFlight + held.waiting).toBe(2000);
    proxy.heal();
    await Promise.all(publishes);
    expect(transport.status().publishes).toEqual({ inFlight: 0, waiting: 0, blocked: false });
    await expect.poll(() => received.size, { timeout: 20_000 }).toBe(2000);
  });

  it('re-sends what was in flight when the network cuts the connection', async () => {
    // Must not be lost: every publish that resolved, though the connection died with them unconfirmed.
    const { proxy, url } = await proxied();
    const b = await bus(url, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    const received = new Set<number>();
    await b.subscribe('cut.#', (m) => void received.add((m.data as { i: number }).i));
    proxy.blackhole();
    const publishes = Array.from({ length: 50 }, (_, i) => b.publish('cut.msg', { i }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    proxy.reset();
    proxy.heal();
    await Promise.all(publishes);
    await expect.poll(() => received.size, { timeout: 10_000 }).toBe(50);
  });
});
