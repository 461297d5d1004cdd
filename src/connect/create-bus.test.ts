import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import { createBus } from './create-bus.js';

describe('createBus options of the other transport', () => {
  it('checks amqp options on a memory:// bus, so a bad value shows before the URL is switched', async () => {
    const url = `memory://options-${randomUUID()}`;
    for (const amqp of [
      { publishWindow: 0 },
      { queueType: 'lazy' },
      { heartbeatSeconds: -1 },
      { exchange: 'ex\ud800' },
      5,
      null,
      'x',
    ]) {
      await expect(
        createBus({ url, service: 'svc', logger: silentLogger, amqp: amqp as never }),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
    // Good ones are accepted and unused: the same options serve both URLs.
    const bus = await createBus({
      url,
      service: 'svc',
      logger: silentLogger,
      amqp: { publishWindow: 10, queueType: 'classic' },
    });
    await bus.close();
  });

  it('checks subscriptionDefaults before connecting: a bad default refused every later subscribe', async () => {
    const url = 'amqp://guest:guest@127.0.0.1:1';
    for (const subscriptionDefaults of [
      { handlerTimeoutMs: -1 },
      { handlerTimeoutMs: Number.NaN },
      { handlerTimeoutMs: '100' },
      { handlerTimeoutMs: 2 ** 31 },
      { concurrency: 0 },
      { maxAttempts: 0 },
    ]) {
      await expect(
        createBus({
          url,
          service: 'svc',
          logger: silentLogger,
          subscriptionDefaults: subscriptionDefaults as never,
        }),
        JSON.stringify(subscriptionDefaults),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
    const bus = await createBus({
      url: `memory://defaults-${randomUUID()}`,
      service: 'svc',
      logger: silentLogger,
      subscriptionDefaults: { handlerTimeoutMs: 0, concurrency: 4, maxAttempts: 1 },
    });
    await (await bus.subscribe('a.b', async () => {})).close();
    await bus.close();
  });

  it('checks memory options on an amqp:// bus before connecting', async () => {
    // Port 1: nothing listens, so only the option check can answer at once.
    const url = 'amqp://guest:guest@127.0.0.1:1';
    for (const memory of [{ maxQueueLength: 0 }, { maxQueueLength: 1.5 }, { clock: {} }]) {
      await expect(
        createBus({ url, service: 'svc', logger: silentLogger, memory: memory as never }),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it('refuses a fractional maxQueueLength on a memory bus', async () => {
    await expect(
      createBus({
        url: `memory://options-${randomUUID()}`,
        service: 'svc',
        logger: silentLogger,
        memory: { maxQueueLength: 2.5 },
      }),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('maxQueueLength') });
  });
});

describe('createBus closeTimeoutMs', () => {
  it.each([Number.NaN, -1, Number.POSITIVE_INFINITY, 2 ** 31, '10', null])(
    'refuses %s with INVALID_OPTIONS on every transport, before connecting',
    async (closeTimeoutMs) => {
      for (const url of [`memory://close-${randomUUID()}`, 'amqp://guest:guest@127.0.0.1:1']) {
        await expect(
          createBus({ url, service: 'svc', logger: silentLogger, closeTimeoutMs: closeTimeoutMs as never }),
        ).rejects.toMatchObject({
          code: 'INVALID_OPTIONS',
          message: expect.stringMatching(/^closeTimeoutMs /),
        });
      }
    },
  );

  it('takes 0 and fractions (close without waiting, or for part of a millisecond)', async () => {
    for (const closeTimeoutMs of [0, 0.5, 2 ** 31 - 1]) {
      const bus = await createBus({
        url: `memory://close-${randomUUID()}`,
        service: 'svc',
        logger: silentLogger,
        closeTimeoutMs,
      });
      await bus.close();
    }
  });
});
