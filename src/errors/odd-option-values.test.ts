import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import { ServiceClient } from '../http/client.js';
import { silentLogger } from '../logging/logger.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { constantBackoff, exponentialBackoff } from '../resilience/backoff.js';
import { RetryBudget } from '../resilience/budget.js';
import { Bulkhead } from '../resilience/bulkhead.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { RetryPolicy } from '../resilience/retry.js';
import { TimeoutPolicy } from '../resilience/timeout.js';
import { isFerryError, isInvalidOptionsError } from './ferry-error.js';

/**
 * Option values no type allows, as JavaScript callers or parsed settings pass them: an object
 * without a prototype (from Object.create(null) or some parsers), one whose toString throws, a
 * symbol. Each must be refused with INVALID_OPTIONS naming the option; describing them in the
 * message threw a TypeError ("Cannot convert object to primitive value") instead.
 */
const odd: [string, unknown][] = [
  ['an object without a prototype', Object.create(null)],
  [
    'an object whose toString throws',
    {
      toString: () => {
        throw new Error('boom');
      },
    },
  ],
  ['a symbol', Symbol('s')],
];

const constructors: [string, (value: never) => unknown][] = [
  ['ServiceClient name', (name) => new ServiceClient('http://127.0.0.1:1', { name })],
  ['ServiceClient timeout', (timeout) => new ServiceClient('http://127.0.0.1:1', { timeout })],
  ['ServiceClient connections', (connections) => new ServiceClient('http://127.0.0.1:1', { connections })],
  [
    'ServiceClient retry.backoff',
    (backoff) => new ServiceClient('http://127.0.0.1:1', { retry: { backoff } }),
  ],
  ['ServiceClient base URL', (url) => new ServiceClient(url)],
  ['exponentialBackoff jitter', (jitter) => exponentialBackoff({ jitter })],
  ['constantBackoff', (delay) => constantBackoff(delay)],
  ['RetryPolicy maxAttempts', (maxAttempts) => new RetryPolicy({ maxAttempts })],
  ['RetryPolicy onRetry', (onRetry) => new RetryPolicy({ onRetry })],
  ['RetryBudget ratio', (ratio) => new RetryBudget({ ratio })],
  ['Bulkhead maxConcurrent', (maxConcurrent) => new Bulkhead({ maxConcurrent })],
  ['CircuitBreaker resetTimeoutMs', (resetTimeoutMs) => new CircuitBreaker({ resetTimeoutMs })],
  ['TimeoutPolicy ms', (ms) => new TimeoutPolicy({ ms })],
  [
    'PostgresEventStoreBackend schema',
    (schema) =>
      new PostgresEventStoreBackend({ url: 'postgres://127.0.0.1:1/x', schema, logger: silentLogger }),
  ],
];

describe('odd option values', () => {
  for (const [option, make] of constructors) {
    it.each(odd)(`${option}: refuses %s with INVALID_OPTIONS`, (_, value) => {
      let error: unknown;
      try {
        make(value as never);
      } catch (e) {
        error = e;
      }
      expect(isInvalidOptionsError(error), String((error as Error)?.message)).toBe(true);
    });
  }

  it.each(odd)(
    'createBus closeTimeoutMs and amqp queueType: refuse %s with INVALID_OPTIONS',
    async (_, value) => {
      for (const options of [
        { url: 'memory://', service: 's', logger: silentLogger, closeTimeoutMs: value },
        { url: 'amqp://127.0.0.1:1', service: 's', logger: silentLogger, amqp: { queueType: value } },
      ]) {
        const error = await createBus(options as never).then(
          async (bus) => {
            await bus.close();
            return undefined;
          },
          (e: unknown) => e,
        );
        expect(isInvalidOptionsError(error), String((error as Error)?.message)).toBe(true);
      }
    },
  );

  it.each([
    ...odd,
    ['a number', 5] as [string, unknown],
    ['an array', ['memory://']] as [string, unknown],
    ['a string', 'abc'] as [string, unknown],
  ])(
    'createBus and createEventStore: refuse %s as url with INVALID_OPTIONS, and createBus the same as subscriptionDefaults',
    async (_, value) => {
      // url.indexOf is not a function (TypeError), before.
      for (const make of [
        () => createBus({ url: value, service: 's', logger: silentLogger } as never),
        () => createEventStore({ url: value } as never),
        // An object of any prototype is options; anything else is not.
        ...(typeof value === 'object' && !Array.isArray(value)
          ? []
          : [
              () =>
                createBus({
                  url: 'memory://',
                  service: 's',
                  logger: silentLogger,
                  subscriptionDefaults: value,
                } as never),
            ]),
      ]) {
        const error = await make().then(
          async (made) => {
            await made.close();
            return undefined;
          },
          (e: unknown) => e,
        );
        expect(isInvalidOptionsError(error), String((error as Error)?.message)).toBe(true);
      }
    },
  );

  it('quotes at most a short part of a huge string given as url or service', async () => {
    const huge = `x${'y'.repeat(5_000_000)}`;
    for (const options of [
      { url: huge, service: 's', logger: silentLogger },
      { url: 'memory://', service: huge, logger: silentLogger },
    ]) {
      const error = await createBus(options).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isFerryError(error), String(error).slice(0, 200)).toBe(true);
      expect((error as Error).message.length).toBeLessThan(2000);
    }
  });

  it('names a long array by its first items, not all of them', () => {
    let message = '';
    try {
      new ServiceClient('http://127.0.0.1:1', {
        retry: { statuses: Array.from({ length: 300 }, (_, i) => `x${i}`) as never },
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/^retry\.statuses must be an array of HTTP statuses/);
    expect(message.length).toBeLessThan(250);
  });
});
