import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { silentLogger } from '../logging/logger.js';
import { isPublishNotConfirmedError } from '../messaging/errors.js';
import type { FaultProxy } from '../testing/fault-proxy.js';
import { sleep, waitFor } from '../testing/wait.js';
import { AmqpTransport } from './amqp-transport.js';
import { behindProxy as proxied } from './fixtures/behind-proxy.js';
import { testVhosts } from './fixtures/test-vhosts.js';

const { vhost, defer } = testVhosts('ferry-close');

/** A vhost of its own, reached through a proxy that can cut the network without closing TCP. */
async function behindProxy(): Promise<{ url: string; proxy: FaultProxy }> {
  return proxied(await vhost(), defer);
}

/** How long `close` took, or `undefined` if it was still closing after `limitMs`. */
async function timed(close: () => Promise<void>, limitMs: number): Promise<number | undefined> {
  const started = Date.now();
  const done = await Promise.race([close().then(() => true), sleep(limitMs).then(() => false)]);
  return done ? Date.now() - started : undefined;
}

// Heartbeats off: nothing but the close timeout may end the wait (a partition of a few seconds goes
// unnoticed by heartbeats of 10 s, and a broker that stalls may still send them).
const amqp = { heartbeatSeconds: 0, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } };

describe('closing while the broker stops answering (network partition, TCP left open)', () => {
  it('bus.close finishes within closeTimeoutMs with a subscription, a handler and a publish in flight', async () => {
    // Must not happen: a close that waits for the broker's replies for as long as the partition lasts.
    const { url, proxy } = await behindProxy();
    const bus = await createBus({
      url,
      service: 'partition',
      logger: silentLogger,
      closeTimeoutMs: 1000,
      amqp,
    });
    defer(() => bus.close());
    let started = 0;
    await bus.subscribe(
      'job.run',
      async () => {
        started++;
        await sleep(200);
      },
      { handlerTimeoutMs: 0 },
    );
    await bus.publish('job.run', {});
    await waitFor(() => started === 1, 'the handler to start');
    proxy.blackhole();
    const unconfirmed = bus.publish('job.run', {}).then(
      () => 'confirmed',
      (e: unknown) => e,
    );
    const ms = await timed(() => bus.close(), 5000);
    expect(ms, 'bus.close still waiting after 5 s').toBeDefined();
    expect(ms).toBeLessThan(1000 + 300);
    expect(isPublishNotConfirmedError(await unconfirmed), String(await unconfirmed)).toBe(true);
    // Says the close ended the wait, not a confirm timeout of the close's remaining (perhaps 0) ms.
    expect(((await unconfirmed) as Error).message).toMatch(
      /before its connection closed \(the close waited \d+ ms/,
    );
  });

  it('a subscription closes within closeTimeoutMs, and the bus keeps working once the network heals', async () => {
    const { url, proxy } = await behindProxy();
    const bus = await createBus({
      url,
      service: 'partition',
      logger: silentLogger,
      closeTimeoutMs: 800,
      amqp,
    });
    defer(() => bus.close());
    const sub = await bus.subscribe('job.run', async () => {});
    const got: string[] = [];
    await bus.subscribe('job.run', async (m) => void got.push(m.id), { group: 'other' });
    proxy.blackhole();
    const ms = await timed(() => sub.close(), 5000);
    expect(ms, 'sub.close still waiting after 5 s').toBeDefined();
    expect(ms).toBeLessThan(800 + 300);
    proxy.heal();
    await bus.publish('job.run', {}, { id: 'after-heal' });
    await waitFor(() => got.length === 1, 'the other subscription to get a message after the heal');
    expect(got).toEqual(['after-heal']);
  });

  it('AmqpTransport.close(timeoutMs) finishes in time and drops the connection', async () => {
    const { url, proxy } = await behindProxy();
    const transport = new AmqpTransport({ url, logger: silentLogger, ...amqp });
    defer(() => transport.close(0));
    await transport.connect();
    await transport.subscribe({ group: 'g', pattern: 'job.run', concurrency: 1, retryDelays: [] }, () => ({
      action: 'ack',
    }));
    expect(proxy.connections).toBe(1);
    proxy.blackhole();
    const ms = await timed(() => transport.close(600), 5000);
    expect(ms, 'transport.close still waiting after 5 s').toBeDefined();
    expect(ms).toBeLessThan(600 + 300);
    expect(transport.status().state).toBe('closed');
    // The client's socket is gone: once the proxy reads again it sees the close.
    proxy.heal();
    await waitFor(() => proxy.connections === 0, 'the proxied connection to end');
  });
});
