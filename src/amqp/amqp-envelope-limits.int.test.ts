import amqp, { type ChannelModel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import type { Envelope } from '../messaging/envelope.js';
import { HEADER_OVERHEAD_BYTES, MAX_HEADERS_BYTES } from '../messaging/envelope-limits.js';
import { waitFor } from '../testing/wait.js';
import { AmqpTransport } from './amqp-transport.js';
import { testVhosts } from './fixtures/test-vhosts.js';
import { ConfirmPublisher } from './publisher.js';

const { vhost, defer } = testVhosts('ferry-limits');

async function amqpUrl(): Promise<string> {
  const v = await vhost();
  return v.url;
}

const refused = [
  ['id', { id: 'x'.repeat(256) }],
  ['id', { id: 'é'.repeat(128) }],
  ['correlationId', { correlationId: 'c'.repeat(300) }],
  ['causationId', { causationId: '因'.repeat(86) }],
  ['headers', { headers: { h: 'v'.repeat(70_000) } }],
  ['headers', { headers: { h: 'é'.repeat(MAX_HEADERS_BYTES / 2) } }],
  ['header name', { headers: { ['n'.repeat(256)]: 'v' } }],
  // Small headers by the thousand: their AMQP encoding (6 bytes each besides name and value) counts.
  [
    'headers',
    { headers: Object.fromEntries(Array.from({ length: 10_922 }, (_, i) => [`h${i}`.padStart(3, '0'), ''])) },
  ],
  ['id', { id: '' }],
  ['id', { id: 'a\uD800b' }],
  ['correlationId', { correlationId: 'c\uDFFF' }],
] as const;

const accepted = [
  { id: 'x'.repeat(255) },
  { id: 'é'.repeat(127) },
  { correlationId: 'c'.repeat(255), causationId: '因'.repeat(85) },
  { headers: { h: 'v'.repeat(MAX_HEADERS_BYTES - HEADER_OVERHEAD_BYTES - 1) } },
] as const;

describe.each(['memory', 'amqp'] as const)('publish limits of ids and headers (%s)', (kind) => {
  it('refuses ids over 255 bytes and headers over the table budget with INVALID_OPTIONS, and delivers what fits', async () => {
    const url = kind === 'memory' ? 'memory://limits' : await amqpUrl();
    const bus = await createBus({ url, service: 'limits', logger: silentLogger });
    defer(() => bus.close());
    const got: string[] = [];
    await bus.subscribe('limit.x', async (m) => void got.push(m.id), { group: 'limits' });
    for (const [field, options] of refused) {
      const error = await bus.publish('limit.x', {}, options).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isInvalidOptionsError(error), `${field}: ${String(error)}`).toBe(true);
      expect((error as Error).message).toMatch(new RegExp(`^${field}`));
      expect((error as Error).message).toMatch(/at most \d+ bytes|must not/);
    }
    for (const options of accepted) await bus.publish('limit.x', {}, options);
    await waitFor(
      () => got.length === accepted.length,
      () => `${got.length} delivered`,
      10_000,
    );
    expect(got).toContain('x'.repeat(255));
    expect(got).toContain('é'.repeat(127));
  }, 30_000);
});

describe('dead letters of the largest messages (amqp)', () => {
  it('carry the largest application headers with a reason and stack cut at 4,000 characters of 3-byte UTF-8', async () => {
    // Must not happen: a dead-lettered copy whose header table (the application's headers plus the
    // reason, the stack and Ferry's own) is too large to encode, so the message is never settled.
    const bus = await createBus({ url: await amqpUrl(), service: 'limits', logger: silentLogger });
    defer(() => bus.close());
    await bus.subscribe(
      'limit.x',
      async () => {
        throw new Error('因'.repeat(10_000));
      },
      { group: 'limits', maxAttempts: 1 },
    );
    const value = 'é'.repeat((MAX_HEADERS_BYTES - HEADER_OVERHEAD_BYTES - 1) / 2);
    await bus.publish('limit.x', {}, { id: 'big', headers: { h: value } });
    await waitFor(
      async () => (await bus.listDeadLetters({ group: 'limits' })).length === 1,
      'the dead letter',
    );
    const [dead] = await bus.listDeadLetters({ group: 'limits' });
    expect(dead!.envelope?.headers).toEqual({ h: value });
    expect(dead!.reason.message).toBe(`${'因'.repeat(3999)}…`);
    expect(dead!.reason.stack).toMatch(/^Error: 因+…$/);
    expect(dead!.reason.stack!.length).toBe(4000);
  });
});

describe('RabbitMQ transport publish of an envelope that did not come through the bus', () => {
  it('refuses an id over 255 bytes with INVALID_OPTIONS', async () => {
    const transport = new AmqpTransport({ url: await amqpUrl(), logger: silentLogger });
    defer(() => transport.close(1000));
    await transport.connect();
    const envelope: Envelope = {
      specversion: '1.0',
      id: 'x'.repeat(300),
      source: 'raw',
      type: 'limit.x',
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: {},
      correlationid: 'x'.repeat(300),
    };
    const error = await transport.publish(envelope).catch((e: unknown) => e);
    expect(isInvalidOptionsError(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/^id must be at most 255 bytes/);
  });

  it('ConfirmPublisher turns properties amqplib cannot encode into INVALID_OPTIONS', async () => {
    const connection: ChannelModel = await amqp.connect(await amqpUrl());
    defer(() => connection.close());
    const publisher = new ConfirmPublisher({
      window: 10,
      maxBuffered: 100,
      confirmTimeoutMs: 10_000,
      maxMessageBytes: 1_000_000,
      onChannelFailure: () => {},
    });
    defer(() => publisher.close(100));
    const channel = await publisher.attach(connection);
    publisher.resume(channel);
    for (const options of [{ messageId: 'x'.repeat(300) }, { headers: { h: 'v'.repeat(70_000) } }]) {
      const error = await publisher
        .publish('', 'nowhere', Buffer.from('{}'), options)
        .catch((e: unknown) => e);
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/RabbitMQ cannot carry the properties/);
    }
    await publisher.publish('', 'nowhere', Buffer.from('{}'), { messageId: 'fine' });
  });
});
