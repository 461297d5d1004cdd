import { describe, expect, it } from 'vitest';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import type { Logger } from '../logging/logger.js';
import { Bus } from '../messaging/bus.js';
import { type Envelope, JSON_CONTENT_TYPE, newMessageId, nowIso } from '../messaging/envelope.js';
import { createOutbox } from '../outbox/outbox.js';
import {
  AmqpTransport,
  type AmqpTransportOptions,
  DEFAULT_AMQP_TRANSPORT_OPTIONS,
} from './amqp-transport.js';
import { testVhosts } from './fixtures/test-vhosts.js';
import { isMessageTooLargeError } from './message-too-large-error.js';

const { vhost, defer } = testVhosts('ferry-size');

/** RabbitMQ's default max_message_size (3.8+), which the local broker reports. */
const BROKER_LIMIT = 134_217_728;

/** Warnings and errors of the transport under test, to count its reconnects. */
let warnings: string[] = [];
const logger: Logger = {
  debug() {},
  info() {},
  warn: (message) => void warnings.push(message),
  error: (message) => void warnings.push(message),
};
const reconnects = () => warnings.filter((w) => w.startsWith('lost the RabbitMQ connection')).length;

async function transport(options: Omit<AmqpTransportOptions, 'url' | 'logger'> = {}): Promise<AmqpTransport> {
  const v = await vhost();
  warnings = [];
  const t = new AmqpTransport({ url: v.url, logger, ...options });
  defer(() => t.close(1000));
  await t.connect();
  const bound = await t.subscribe({ group: 'sink', pattern: '#', concurrency: 10, retryDelays: [] }, () => ({
    action: 'ack',
  }));
  defer(() => bound.close(1000));
  return t;
}

function envelope(data: unknown): Envelope {
  const id = newMessageId();
  return {
    specversion: '1.0',
    id,
    source: 'test',
    type: 'file.uploaded',
    time: nowIso(),
    datacontenttype: JSON_CONTENT_TYPE,
    data,
    correlationid: id,
  };
}

/** Publishes small messages and resolves how long the slowest took. */
async function smallPublishes(t: AmqpTransport, count: number): Promise<number> {
  const started = Date.now();
  await Promise.all(Array.from({ length: count }, (_, i) => t.publish(envelope({ i }))));
  return Date.now() - started;
}

describe('RabbitMQ message size', () => {
  it('defaults to the broker default limit', () => {
    expect(DEFAULT_AMQP_TRANSPORT_OPTIONS.maxMessageBytes).toBe(BROKER_LIMIT);
  });

  it('sends a body of exactly maxMessageBytes and rejects one byte more at once, leaving other publishes alone', async () => {
    const t = await transport({ maxMessageBytes: 1000 });
    const fits = 'x'.repeat(998); // JSON adds the two quotes: 1000 bytes
    await t.publish(envelope(fits));
    const tooBig = t.publish(envelope(`${fits}y`)).catch((e: unknown) => e);
    const ms = await smallPublishes(t, 50);
    const error = await tooBig;
    expect(isMessageTooLargeError(error)).toBe(true);
    expect(error).toMatchObject({ size: 1001, limit: 1000 });
    expect(ms).toBeLessThan(5000);
    expect(t.status().publishes).toMatchObject({ inFlight: 0, waiting: 0 });
    expect(reconnects()).toBe(0);
  }, 60_000);

  it('refuses a message too large when an outbox writes it, as publish would later, keeping nothing', async () => {
    const t = await transport({ maxMessageBytes: 1000 });
    const fits = 'x'.repeat(998);
    t.check(envelope(fits));
    expect(() => t.check(envelope(`${fits}y`))).toThrow(
      expect.objectContaining({ code: 'MESSAGE_TOO_LARGE' }),
    );
    const bus = new Bus(t, { service: 'files', logger });
    const store = new EventStore(new MemoryEventStoreBackend());
    const outbox = await createOutbox({ store, bus, logger, relay: false });
    defer(() => outbox.close());
    const error = await outbox
      .unitOfWork(async (work) => {
        await work.append('file-1', [{ type: 'Uploaded', data: {} }]);
        await work.publish('file.uploaded', `${fits}y`);
      })
      .catch((e: unknown) => e);
    expect(isMessageTooLargeError(error)).toBe(true);
    expect(await store.readStream('file-1')).toEqual([]);
    expect(await outbox.backlog()).toMatchObject({ pending: 0 });
  }, 60_000);

  it('rejects a message over the broker limit without sending it, and later publishes go through', async () => {
    const t = await transport();
    const huge = t.publish(envelope('x'.repeat(BROKER_LIMIT))).catch((e: unknown) => e);
    const ms = await smallPublishes(t, 20);
    const error = await huge;
    expect(isMessageTooLargeError(error)).toBe(true);
    expect(error).toMatchObject({ size: BROKER_LIMIT + 2, limit: BROKER_LIMIT });
    expect((error as Error).cause).toBeUndefined(); // not refused by the broker: never sent
    expect(reconnects()).toBe(0);
    expect(ms).toBeLessThan(5000);
  }, 90_000);

  it('a message the broker refuses by closing the channel is rejected after one refusal, not re-sent, and learned', async () => {
    // Configured above what the broker takes: the broker is the one to refuse.
    const t = await transport({
      maxMessageBytes: 2 * BROKER_LIMIT,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      // Long enough that only a bounded number of re-sends, not the timeout, can end the publish.
      confirmTimeoutMs: 600_000,
    });
    const huge = t.publish(envelope('x'.repeat(BROKER_LIMIT))).catch((e: unknown) => e);
    const error = await huge;
    expect(isMessageTooLargeError(error)).toBe(true);
    expect(error).toMatchObject({ size: BROKER_LIMIT + 2, limit: BROKER_LIMIT });
    expect(reconnects()).toBeLessThanOrEqual(1); // refused once, never sent again
    expect(String((error as Error).cause)).toMatch(/max size/);
    // Publishing goes on; the next oversized message is refused before it is sent.
    expect(await smallPublishes(t, 20)).toBeLessThan(5000);
    const second = await t.publish(envelope('x'.repeat(BROKER_LIMIT))).catch((e: unknown) => e);
    expect(isMessageTooLargeError(second)).toBe(true);
    expect((second as Error).cause).toBeUndefined(); // refused before sending, not by the broker
    expect(reconnects()).toBeLessThanOrEqual(1);
    expect(t.status().publishes).toMatchObject({ inFlight: 0, waiting: 0 });
  }, 90_000);
});
