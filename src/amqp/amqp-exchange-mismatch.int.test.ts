import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import type { FerryError } from '../errors/ferry-error.js';
import { type Logger, silentLogger } from '../logging/logger.js';
import { waitFor } from '../testing/wait.js';
import { connectFailure as busConnectFailure } from './fixtures/connect-failure.js';
import { testVhosts } from './fixtures/test-vhosts.js';
import { isInequivalentExchangeError } from './inequivalent-exchange-error.js';

const { vhost, defer } = testVhosts('ferry-exchange');

/** Runs `declare` on a plain amqplib channel of the vhost, as another application would. */
async function withChannel(url: string, declare: (channel: amqp.Channel) => Promise<unknown>): Promise<void> {
  const connection = await amqp.connect(url);
  try {
    await declare(await connection.createChannel());
  } finally {
    await connection.close();
  }
}

/** How createBus fails, and how long it took: the connect timeout is long, so waiting shows. */
function connectFailure(url: string, exchange?: string): Promise<{ error: unknown; ms: number }> {
  return busConnectFailure({
    url,
    service: 'mismatch',
    logger: silentLogger,
    amqp: { connectTimeoutMs: 10_000, ...(exchange === undefined ? {} : { exchange }) },
  });
}

describe('an exchange that exists with other properties', () => {
  it('rejects the first connect at once with INEQUIVALENT_EXCHANGE, naming the exchange and what to fix', async () => {
    // Must not happen: the broker's immediate refusal retried until connectTimeoutMs, then reported
    // as BROKER_UNAVAILABLE ("could not connect").
    const v = await vhost();
    await withChannel(v.url, (channel) =>
      channel.assertExchange('ferry.events', 'topic', { durable: false }),
    );
    const { error, ms } = await connectFailure(v.url);
    expect(isInequivalentExchangeError(error), String(error)).toBe(true);
    expect(error).toMatchObject({ code: 'INEQUIVALENT_EXCHANGE', exchange: 'ferry.events' });
    expect((error as FerryError).message).toMatch(/durable topic exchange/);
    expect((error as FerryError).message).toMatch(/inequivalent arg 'durable'/);
    expect(ms).toBeLessThan(3000);
    // Once it is deleted, Ferry declares it.
    await withChannel(v.url, (channel) => channel.deleteExchange('ferry.events'));
    const bus = await createBus({ url: v.url, service: 'mismatch', logger: silentLogger });
    await bus.close();
  }, 30_000);

  it('rejects at once for an exchange option naming an exchange of another type (a direct one)', async () => {
    // amq.direct, the broker's own, is refused as the bus is made (RabbitMQ keeps amq.* for itself).
    const v = await vhost();
    await withChannel(v.url, (channel) =>
      channel.assertExchange('orders.direct', 'direct', { durable: true }),
    );
    const { error, ms } = await connectFailure(v.url, 'orders.direct');
    expect(isInequivalentExchangeError(error), String(error)).toBe(true);
    expect(error).toMatchObject({ exchange: 'orders.direct' });
    expect((error as FerryError).message).toMatch(/inequivalent arg 'type'/);
    expect(ms).toBeLessThan(3000);
  }, 30_000);

  it('a connection that recovers keeps trying, says why, and resumes once the exchange is fixed', async () => {
    const v = await vhost();
    const errors: string[] = [];
    const logger: Logger = { ...silentLogger, error: (message: string) => void errors.push(message) };
    const bus = await createBus({
      url: v.url,
      service: 'mismatch',
      logger,
      amqp: { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } },
    });
    defer(() => bus.close());
    const got: string[] = [];
    await bus.subscribe('job.run', async (m) => void got.push(m.id));
    await withChannel(v.url, async (channel) => {
      await channel.deleteExchange('ferry.events');
      await channel.assertExchange('ferry.events', 'direct', { durable: true });
    });
    await v.closeConnections();
    await waitFor(
      () => errors.some((e) => e.includes('exchange ferry.events already exists with other properties')),
      'the reason in the error log',
    );
    await withChannel(v.url, (channel) => channel.deleteExchange('ferry.events'));
    // Held while the connection recovers, sent once the exchange and the binding are back.
    await bus.publish('job.run', {}, { id: 'after-fix' });
    await waitFor(() => got.includes('after-fix'), 'the message after the fix');
  }, 30_000);
});
