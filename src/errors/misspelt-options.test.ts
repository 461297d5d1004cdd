import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { AmqpTransport } from '../amqp/amqp-transport.js';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import {
  ferryContext,
  ferryErrors,
  ferryHealth,
  ferryIdempotency,
  ferryNotFound,
} from '../http/server/express.js';
import { ferryFastify } from '../http/server/fastify.js';
import { ferryFastifyOptions } from '../http/server/fastify-errors.js';
import { MemoryIdempotencyStore } from '../http/server/memory-idempotency-store.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import { MemoryBroker } from '../messaging/memory/memory-broker.js';
import { createOutbox } from '../outbox/outbox.js';
import { decorrelatedJitter, exponentialBackoff, exponentialDelays } from '../resilience/backoff.js';
import { RetryBudget } from '../resilience/budget.js';
import { Bulkhead } from '../resilience/bulkhead.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { RetryPolicy } from '../resilience/retry.js';
import { TimeoutPolicy } from '../resilience/timeout.js';
import { startSaga } from '../saga/start-saga.js';
import { VirtualClock } from '../time/clock.js';
import { isInvalidOptionsError } from './ferry-error.js';

/**
 * Options nested one level down (a subscription's `backoff`, the bus's `subscriptionDefaults`,
 * `amqp`, `memory`): a misspelt key, or a string where an object goes, was dropped without a word
 * and its default used — a subscription meant to retry every 5 s retried after 1 s, 2 s, 4 s… Each is
 * now refused with INVALID_OPTIONS naming the key and what the call takes.
 */
function refusal(run: () => unknown): Error {
  try {
    run();
  } catch (error) {
    if (!isInvalidOptionsError(error)) throw error;
    return error;
  }
  throw new Error('expected INVALID_OPTIONS, got nothing');
}

async function asyncRefusal(run: () => Promise<unknown>): Promise<Error> {
  const error = await run().then(
    () => undefined,
    (e: unknown) => e,
  );
  if (error === undefined) throw new Error('expected INVALID_OPTIONS, got nothing');
  if (!isInvalidOptionsError(error)) throw error;
  return error;
}

const buses: Bus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
});

let n = 0;
async function memoryBus(options: Record<string, unknown> = {}): Promise<Bus> {
  const bus = await createBus({
    url: `memory://misspelt-${process.pid}-${n++}`,
    service: 'svc',
    logger: silentLogger,
    ...options,
  });
  buses.push(bus);
  return bus;
}

describe('backoff options', () => {
  it('exponentialDelays refuses a misspelt key, a string and a boxed string', () => {
    expect(refusal(() => exponentialDelays({ initialDelay: 5000 } as never, 3)).message).toBe(
      'backoff has no option "initialDelay": it takes initialDelayMs, factor, maxDelayMs',
    );
    expect(refusal(() => exponentialDelays('abc' as never, 3)).message).toMatch(
      /backoff options must be an object/,
    );
    expect(refusal(() => exponentialDelays(new String('abc') as never, 3)).message).toMatch(
      /backoff options must be an object/,
    );
  });

  it('exponentialDelays takes a key set to undefined as left out', () => {
    expect(exponentialDelays({ initialDelayMs: 500, factor: undefined } as never, 3)).toEqual([
      500, 1000, 2000,
    ]);
  });

  it('exponentialBackoff and decorrelatedJitter refuse a misspelt key', () => {
    expect(refusal(() => exponentialBackoff({ jiter: 'none' } as never)).message).toMatch(
      /^exponentialBackoff has no option "jiter": it takes initialDelayMs, factor, maxDelayMs, jitter, random$/,
    );
    expect(refusal(() => decorrelatedJitter({ maxDelay: 10 } as never)).message).toMatch(
      /^decorrelatedJitter has no option "maxDelay"/,
    );
    // Still the documented defaults when a key is undefined.
    expect(exponentialBackoff({ jitter: 'none', factor: undefined } as never)(3, 0)).toBe(400);
  });
});

describe('bus subscriptions', () => {
  it('subscribe refuses a misspelt option and a backoff that is not an object', async () => {
    const bus = await memoryBus();
    expect(
      (await asyncRefusal(() => bus.subscribe('a.b', () => {}, { maxAttempt: 2 } as never))).message,
    ).toMatch(
      /^subscribe has no option "maxAttempt": it takes concurrency, maxAttempts, backoff, handlerTimeoutMs, group, middleware, onExpired, unitOfWork$/,
    );
    expect(
      (await asyncRefusal(() => bus.subscribe('a.b', () => {}, { backoff: 'abc' } as never))).message,
    ).toMatch(/backoff options must be an object/);
    expect(
      (await asyncRefusal(() => bus.subscribe('a.b', () => {}, { backoff: { initialDelay: 5000 } } as never)))
        .message,
    ).toMatch(/backoff has no option "initialDelay"/);
  });

  it('a subscription refused for its options takes no message; corrected, it gets every one', async () => {
    const bus = await memoryBus();
    await asyncRefusal(() => bus.subscribe('a.b', () => {}, { group: 'g', timeoutMs: 5 } as never));
    const got: unknown[] = [];
    await bus.subscribe('a.b', (m) => void got.push(m.data), { group: 'g', handlerTimeoutMs: 5000 });
    await bus.publish('a.b', 1);
    await expect.poll(() => got).toEqual([1]);
  });

  it('deleteSubscription takes the options the subscription was made with, and refuses others', async () => {
    const bus = await memoryBus();
    const options = {
      group: 'g',
      maxAttempts: 2,
      concurrency: 3,
      handlerTimeoutMs: 100,
      onExpired: 'drop',
    } as const;
    const sub = await bus.subscribe('a.b', () => {}, options);
    await sub.close();
    await expect(bus.deleteSubscription('a.b', options)).resolves.toBe(0);
    expect((await asyncRefusal(() => bus.deleteSubscription('a.b', { grup: 'g' } as never))).message).toMatch(
      /^deleteSubscription has no option "grup"/,
    );
  });

  it('createBus refuses a misspelt subscriptionDefaults key, a boxed string, a string backoff', async () => {
    expect((await asyncRefusal(() => memoryBus({ subscriptionDefaults: { maxAttempt: 2 } }))).message).toBe(
      'subscriptionDefaults has no option "maxAttempt": it takes concurrency, maxAttempts, backoff, handlerTimeoutMs',
    );
    expect(
      (await asyncRefusal(() => memoryBus({ subscriptionDefaults: new String('abc') }))).message,
    ).toMatch(/subscriptionDefaults options must be an object/);
    expect(
      (await asyncRefusal(() => memoryBus({ subscriptionDefaults: { backoff: 'abc' } }))).message,
    ).toMatch(/backoff options must be an object/);
  });
});

describe('transport options', () => {
  it('createBus refuses a misspelt amqp key, on a memory URL too (checked before deployment)', async () => {
    expect((await asyncRefusal(() => memoryBus({ amqp: { queuetype: 'classic' } }))).message).toMatch(
      /^createBus amqp has no option "queuetype": it takes exchange, queueType, /,
    );
    // url and logger are the bus's own: inside amqp they would be ignored.
    expect((await asyncRefusal(() => memoryBus({ amqp: { url: 'amqp://elsewhere' } }))).message).toMatch(
      /^createBus amqp has no option "url"/,
    );
    expect((await asyncRefusal(() => memoryBus({ amqp: { reconnect: { initialDelay: 10 } } }))).message).toBe(
      'amqp reconnect has no option "initialDelay": it takes initialDelayMs, maxDelayMs',
    );
    expect((await asyncRefusal(() => memoryBus({ amqp: { reconnect: 'fast' } }))).message).toMatch(
      /amqp reconnect options must be an object/,
    );
  });

  it('AmqpTransport refuses a misspelt key when made directly', () => {
    expect(
      refusal(() => new AmqpTransport({ url: 'amqp://127.0.0.1:1', publishwindow: 5 } as never)).message,
    ).toMatch(/^the amqp transport has no option "publishwindow": it takes /);
    // Its own options, given as documented, are taken.
    expect(
      () =>
        new AmqpTransport({
          url: 'amqp://127.0.0.1:1',
          logger: silentLogger,
          exchange: 'x',
          reconnect: { initialDelayMs: 10, maxDelayMs: undefined } as never,
        }),
    ).not.toThrow();
  });

  it('the memory broker refuses a misspelt key', async () => {
    expect(refusal(() => new MemoryBroker({ maxQueueLenght: 5 } as never)).message).toBe(
      'the memory broker has no option "maxQueueLenght": it takes maxQueueLength, maxMessageBytes, maxRedeliveries, clock',
    );
    expect((await asyncRefusal(() => memoryBus({ memory: { maxRedelivery: 1 } }))).message).toMatch(
      /^the memory broker has no option "maxRedelivery"/,
    );
  });
});

describe('resilience policies', () => {
  it('refuse a key they do not read, naming it (opossum and cockatiel spell some of them so)', () => {
    expect(refusal(() => new CircuitBreaker({ failureThreshold: 5 } as never)).message).toMatch(
      /^circuit breaker has no option "failureThreshold": it takes name, windowMs, buckets, minimumVolume, /,
    );
    expect(refusal(() => new RetryPolicy({ retries: 5 } as never)).message).toMatch(
      /^retry has no option "retries": it takes maxAttempts, backoff, shouldRetry, budget, /,
    );
    expect(refusal(() => new RetryBudget({ percent: 0.1 } as never)).message).toMatch(
      /^RetryBudget has no option "percent"/,
    );
    expect(refusal(() => new Bulkhead({ maxConcurrency: 2 } as never)).message).toBe(
      'bulkhead has no option "maxConcurrency": it takes maxConcurrent, maxQueue',
    );
    expect(refusal(() => new TimeoutPolicy({ ms: 100, timeoutMs: 50 } as never)).message).toBe(
      'timeout has no option "timeoutMs": it takes ms',
    );
    expect(refusal(() => new VirtualClock({ startAt: 0 } as never)).message).toMatch(
      /^VirtualClock has no option "startAt"/,
    );
  });

  it('take a key set to undefined as left out: the documented default applies', async () => {
    // These were refused ("must be an integer in 1..100, not undefined") though createBus and
    // createEventStore take `undefined` as left out.
    let attempts = 0;
    const retry = new RetryPolicy({
      maxAttempts: undefined,
      backoff: undefined,
      shouldRetry: undefined,
      maxDelayMs: undefined,
    } as never);
    await retry
      .execute(async () => {
        attempts++;
        throw new Error('down');
      })
      .catch(() => {});
    expect(attempts).toBe(3);
    const bulkhead = new Bulkhead({ maxConcurrent: undefined, maxQueue: undefined } as never);
    expect(bulkhead.stats()).toEqual({ running: 0, queued: 0 });
    expect(() => new RetryBudget({ ratio: undefined, now: undefined } as never)).not.toThrow();
    expect(new CircuitBreaker({ resetTimeoutMs: undefined, now: undefined } as never).state).toBe('closed');
    expect(new VirtualClock({ start: undefined } as never).now()).toBe(Date.UTC(2026, 0, 1));
  });
});

describe('options made with Object.create(defaults)', () => {
  it('have their inherited keys checked and read, as own ones are', async () => {
    // An inherited misspelt key was dropped without a word while an inherited valid one was read.
    expect(refusal(() => new CircuitBreaker(Object.create({ failureThreshold: 3 }))).message).toMatch(
      /^circuit breaker has no option "failureThreshold"/,
    );
    const bus = await memoryBus();
    expect(
      (await asyncRefusal(() => bus.subscribe('a.b', () => {}, Object.create({ maxAttempt: 2 })))).message,
    ).toMatch(/^subscribe has no option "maxAttempt"/);
    const inherited = new Bulkhead(Object.create({ maxConcurrent: 1 }));
    const release: (() => void)[] = [];
    void inherited.execute(() => new Promise<void>((resolve) => release.push(resolve)));
    expect(inherited.stats()).toEqual({ running: 1, queued: 0 });
    await expect(inherited.execute(async () => 1)).rejects.toMatchObject({ code: 'BULKHEAD_FULL' });
    for (const r of release) r();
  });

  it('a boxed primitive is named as such', () => {
    expect(refusal(() => exponentialDelays(new Number(5) as never, 1)).message).toBe(
      'backoff options must be an object (or left out), not a boxed number (new Number(…))',
    );
  });
});

describe('call options users misspell most', () => {
  it('store.append, readStream and readAll refuse a key they do not read (expectedVerison lost the concurrency check)', async () => {
    const store = await createEventStore({
      url: `memory://misspelt-append-${process.pid}`,
      logger: silentLogger,
    });
    try {
      await store.append('s-1', [{ type: 'T', data: 1 }]);
      // The append went through, its version unchecked.
      await expect(
        store.append('s-1', [{ type: 'T', data: 2 }], { expectedVerison: 5 } as never),
      ).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: 'append has no option "expectedVerison": it takes expectedVersion',
      });
      expect(await store.readStream('s-1')).toHaveLength(1);
      await expect(store.readStream('s-1', { from: 1 } as never)).rejects.toMatchObject({
        message: expect.stringMatching(/^readStream has no option "from"/),
      });
      await expect(store.readAll({ fromVersion: 1n } as never).next()).rejects.toMatchObject({
        message: expect.stringMatching(/^readAll has no option "fromVersion"/),
      });
    } finally {
      await store.close();
    }
  });

  it('publish, work.publish and outbox.append refuse a key they do not read (ttl never expired, kye lost the order)', async () => {
    const bus = await memoryBus();
    await expect(bus.publish('a.b', 1, { ttl: 5 } as never)).rejects.toMatchObject({
      message: expect.stringMatching(
        /^publish has no option "ttl": it takes id, correlationId, causationId, headers, expiresAt, ttlMs$/,
      ),
    });
    const store = await createEventStore({
      url: `memory://misspelt-outbox-${process.pid}`,
      logger: silentLogger,
    });
    const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
    try {
      await expect(
        outbox.unitOfWork((work) => work.publish('a.b', 1, { kye: 'order-1' } as never)),
      ).rejects.toMatchObject({
        message: expect.stringMatching(/^work.publish has no option "kye": it takes .*, key$/),
      });
      await expect(
        outbox.append('s-1', [{ type: 'T', data: 1 }], {
          expectedVersion: 'no_stream',
          mesages: [],
        } as never),
      ).rejects.toMatchObject({
        message: 'outbox.append has no option "mesages": it takes expectedVersion, messages',
      });
      await expect(
        outbox.append('s-1', [{ type: 'T', data: 1 }], {
          messages: [{ type: 'a.b', data: 1, option: {} }],
        } as never),
      ).rejects.toMatchObject({
        message: expect.stringMatching(/^outbox.append messages\[0\] has no option "option"/),
      });
      await expect(
        outbox.unitOfWork((work) =>
          work.append('s-2', [{ type: 'T', data: 1 }], { expectedVerison: 0 } as never),
        ),
      ).rejects.toMatchObject({
        message: 'work.append has no option "expectedVerison": it takes expectedVersion',
      });
      // Nothing of the refused calls was written.
      expect(await store.readStream('s-1')).toEqual([]);
      expect((await outbox.backlog()).pending).toBe(0);
    } finally {
      await outbox.close();
      await store.close();
    }
  });
});

describe('server middleware options', () => {
  it('refuse a key they do not read (idempotncy left idempotency off: duplicate POSTs ran twice)', async () => {
    const app = Fastify();
    try {
      expect(
        refusal(() => ferryFastify(app, { idempotncy: { store: new MemoryIdempotencyStore() } } as never))
          .message,
      ).toMatch(/^ferryFastify has no option "idempotncy": it takes /);
      expect(
        refusal(() => ferryFastify(app, { idempotency: { stor: new MemoryIdempotencyStore() } } as never))
          .message,
      ).toMatch(/^ferryFastify idempotency has no option "stor"/);
      expect(refusal(() => ferryFastify(app, { health: { check: {} } } as never)).message).toMatch(
        /^ferryFastify health has no option "check"/,
      );
      expect(refusal(() => ferryFastifyOptions({ trustDeadlines: false } as never)).message).toMatch(
        /^ferryFastifyOptions has no option "trustDeadlines"/,
      );
      expect(refusal(() => ferryContext({ maxDeadline: 5 } as never)).message).toMatch(
        /^ferryContext has no option "maxDeadline"/,
      );
      expect(refusal(() => ferryErrors({ log: console } as never)).message).toMatch(
        /^ferryErrors has no option "log"/,
      );
      expect(refusal(() => ferryNotFound({ log: console } as never)).message).toMatch(
        /^ferryNotFound has no option "log"/,
      );
      expect(refusal(() => ferryHealth({ check: {} } as never)).message).toMatch(
        /^ferryHealth has no option "check"/,
      );
      expect(
        refusal(() => ferryIdempotency({ store: new MemoryIdempotencyStore(), scopes: () => 'a' } as never))
          .message,
      ).toMatch(/^ferryIdempotency has no option "scopes"/);
      // One options object for both, as the README writes it: taken by each.
      const ferry = {
        idempotency: { store: new MemoryIdempotencyStore() },
        trustDeadline: false,
        logger: console,
      };
      expect(() => ferryFastifyOptions(ferry)).not.toThrow();
      expect(() => ferryFastify(app, ferry)).not.toThrow();
    } finally {
      await app.close();
    }
  });
});

describe('outbox and saga options', () => {
  it('createOutbox (and its relay), unitOfWork and startSaga refuse a key they do not read', async () => {
    const bus = await memoryBus();
    const store = await createEventStore({
      url: `memory://misspelt-saga-${process.pid}`,
      logger: silentLogger,
    });
    try {
      await expect(createOutbox({ store, bus, maxRetry: 3 } as never)).rejects.toMatchObject({
        message: expect.stringMatching(
          /^createOutbox has no option "maxRetry": it takes store, bus, relay, /,
        ),
      });
      await expect(createOutbox({ store, bus, relay: { batchsize: 5 } } as never)).rejects.toMatchObject({
        message: expect.stringMatching(/^createOutbox relay has no option "batchsize"/),
      });
      await expect(createOutbox(undefined as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
      try {
        await expect(outbox.unitOfWork(async () => 1, { maxRetry: 0 } as never)).rejects.toMatchObject({
          message: 'unitOfWork has no option "maxRetry": it takes maxRetries',
        });
        await expect(
          startSaga({} as never, { outbox, subscibe: { concurrency: 1 } } as never),
        ).rejects.toMatchObject({
          message: expect.stringMatching(
            /^startSaga has no option "subscibe": it takes outbox, bus, group, subscribe, logger$/,
          ),
        });
      } finally {
        await outbox.close();
      }
    } finally {
      await store.close();
    }
  });
});
