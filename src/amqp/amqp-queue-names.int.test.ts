import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts } from '../messaging/contracts.js';
import { isInvalidTopicError } from '../messaging/errors.js';
import { sleep, waitFor } from '../testing/wait.js';
import { testVhosts } from './fixtures/test-vhosts.js';

const { vhost, defer } = testVhosts('ferry-names');

async function bus(url: string): Promise<Bus<Contracts>> {
  const b = await createBus({ url, service: 'billing', logger: silentLogger, closeTimeoutMs: 500 });
  defer(() => b.close());
  return b as Bus<Contracts>;
}

async function queueNames(url: string): Promise<string[]> {
  const vhostName = decodeURIComponent(new URL(url).pathname.slice(1));
  return new Promise((resolve, reject) =>
    execFile('rabbitmqctl', ['list_queues', '-p', vhostName, '-q', '--no-table-headers', 'name'], (e, out) =>
      e ? reject(e) : resolve(out.split('\n').filter((l) => l.length > 0)),
    ),
  );
}

describe('RabbitMQ queue names', () => {
  it('a subscription to "dead-letter" does not consume the group\'s dead letters', async () => {
    const v = await vhost();
    const b = await bus(v.url);
    const seen: string[] = [];
    await b.subscribe('dead-letter', (m) => void seen.push(m.type));
    await b.subscribe(
      'order.placed',
      () => {
        throw new Error('cannot place');
      },
      { maxAttempts: 1 },
    );
    await b.publish('order.placed', { n: 1 });
    await b.publish('dead-letter', { n: 2 });
    await waitFor(
      async () => (await b.listDeadLetters({ limit: 10 })).length === 1,
      'the expected deliveries',
      5000,
    );
    await waitFor(() => seen.length === 1, 'the expected deliveries', 5000);
    await sleep(300);
    expect(seen).toEqual(['dead-letter']);
    const letters = await b.listDeadLetters({ limit: 10 });
    expect(letters.map((l) => l.routingKey)).toEqual(['order.placed']);
  });

  it('a pattern shaped like a delay queue gets a queue of its own', async () => {
    const v = await vhost();
    const b = await bus(v.url);
    const plain: string[] = [];
    const colon: string[] = [];
    await b.subscribe('x', (m) => void plain.push(m.type), {
      backoff: { initialDelayMs: 1000, maxDelayMs: 1000 },
    });
    await b.subscribe('x:retry-1000ms', (m) => void colon.push(m.type));
    await b.publish('x', {});
    await b.publish('x:retry-1000ms', {});
    await waitFor(() => plain.length === 1 && colon.length === 1, 'the expected deliveries', 5000);
    await sleep(300);
    expect(plain).toEqual(['x']);
    expect(colon).toEqual(['x:retry-1000ms']);
    const names = await queueNames(v.url);
    expect(names).toContain('ferry:billing:x');
    expect(names).toContain('ferry:billing:x:retry-1000ms');
    expect(names).toContain('ferry:billing:x%3Aretry-1000ms');
  });

  it('a 240-byte pattern works end to end within the 255-byte name limit, and a 256-byte one fails before declaring anything', async () => {
    const v = await vhost();
    const b = await bus(v.url);
    const type = `order.${'p'.repeat(234)}`;
    expect(Buffer.byteLength(type)).toBe(240);
    const got: string[] = [];
    let failures = 0;
    const subscription = await b.subscribe(
      type,
      (m) => {
        if (m.attempt === 1) {
          failures++;
          throw new Error('once');
        }
        got.push(m.type);
      },
      { backoff: { initialDelayMs: 50, maxDelayMs: 50 } },
    );
    await b.publish(type, {});
    await waitFor(() => got.length === 1, 'the expected deliveries', 5000);
    expect(failures).toBe(1);
    await subscription.close();
    expect(await b.deleteSubscription(type, { backoff: { initialDelayMs: 50, maxDelayMs: 50 } })).toBe(0);

    const before = await queueNames(v.url);
    const tooLong = `order.${'p'.repeat(250)}`;
    const attempt = await b.subscribe(tooLong, () => {}).catch((error: unknown) => error);
    expect(isInvalidTopicError(attempt)).toBe(true);
    // The dead-letter calls refuse a group subscribe refuses, as in memory (amqplib threw a TypeError
    // for a queue name past 255 bytes).
    const longGroup = 'x'.repeat(240);
    expect(isInvalidTopicError(await b.listDeadLetters({ group: longGroup }).catch((e: unknown) => e))).toBe(
      true,
    );
    expect(
      isInvalidTopicError(await b.replayDeadLetters({ group: longGroup }).catch((e: unknown) => e)),
    ).toBe(true);
    expect((await queueNames(v.url)).sort()).toEqual(before.sort());
  });

  it('hostile patterns each get their own queue, all within 255 bytes', async () => {
    const v = await vhost();
    const b = await bus(v.url);
    const patterns = ['a:b', 'a%3Ab', 'a%b', '注文.作成', `${'é'.repeat(127)}`, `${'a:'.repeat(127)}a`];
    const got = new Map<string, string[]>();
    for (const p of patterns) {
      got.set(p, []);
      await b.subscribe(p, (m) => void got.get(p)!.push(m.type));
    }
    for (const p of patterns) await b.publish(p, {});
    await waitFor(() => [...got.values()].every((l) => l.length === 1), 'the expected deliveries', 5000);
    await sleep(300);
    for (const p of patterns) expect(got.get(p)).toEqual([p]);
    for (const name of await queueNames(v.url)) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(255);
  });
});
