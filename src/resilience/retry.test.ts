import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { constantBackoff, exponentialBackoff } from './backoff.js';
import { RetryBudget } from './budget.js';
import {
  BulkheadFullError,
  CircuitOpenError,
  isRetryBudgetExhaustedError,
  RetryBudgetExhaustedError,
} from './errors.js';
import type { PolicyContext } from './policy.js';
import { DEFAULT_RETRY, defaultShouldRetry, type RetryInfo, retry } from './retry.js';

/** A function failing `failures` times with `error`, then returning 'ok'; records its contexts. */
function flaky(failures: number, error: unknown = new Error('boom')) {
  const calls: PolicyContext[] = [];
  const fn = vi.fn(async (context: PolicyContext) => {
    calls.push(context);
    if (calls.length <= failures) throw error;
    return 'ok';
  });
  return { fn, calls };
}

/** Settles `promise` into an inspectable result without an unhandled rejection. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('retry', () => {
  it('makes maxAttempts attempts in all, then rejects with the last error', async () => {
    const { fn } = flaky(10);
    const result = track(retry({ maxAttempts: 4, backoff: constantBackoff(10) }).execute(fn));
    await vi.runAllTimersAsync();
    expect(fn).toHaveBeenCalledTimes(4);
    expect(result.error).toMatchObject({ message: 'boom' });
  });

  it('defaults to 3 attempts, and returns the first success', async () => {
    expect(DEFAULT_RETRY.maxAttempts).toBe(3);
    const { fn, calls } = flaky(2);
    const result = track(retry().execute(fn));
    await vi.runAllTimersAsync();
    expect(result.value).toBe('ok');
    expect(calls.map((c) => c.attempt)).toEqual([1, 2, 3]);
  });

  it('makes one attempt only when the first succeeds, without any timer', async () => {
    const { fn } = flaky(0);
    await expect(retry().execute(fn)).resolves.toBe('ok');
    expect(fn).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('waits the backoff delay before each retry', async () => {
    const { fn } = flaky(2);
    const backoff = exponentialBackoff({ initialDelayMs: 100, jitter: 'none' });
    const result = track(retry({ backoff }).execute(fn));
    await vi.advanceTimersByTimeAsync(0);
    expect(fn).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(99);
    expect(fn).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(fn).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(199);
    expect(fn).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(fn).toHaveBeenCalledTimes(3);
    expect(result.value).toBe('ok');
  });

  it('hands the backoff the retry number and its own previous delay', async () => {
    const backoff = vi.fn((attempt: number) => attempt * 10);
    const result = track(retry({ maxAttempts: 4, backoff }).execute(flaky(5).fn));
    await vi.runAllTimersAsync();
    expect(result.settled).toBe(true);
    expect(backoff.mock.calls).toEqual([
      [1, 0],
      [2, 10],
      [3, 20],
    ]);
  });

  it('stops at the first error shouldRetry refuses', async () => {
    const fatal = Object.assign(new Error('bad request'), { status: 400 });
    let calls = 0;
    const shouldRetry = vi.fn(
      (error: unknown, _attempt: number) => (error as { status?: number }).status !== 400,
    );
    const result = track(
      retry({ maxAttempts: 5, backoff: constantBackoff(1), shouldRetry }).execute(async () => {
        calls++;
        throw calls === 1 ? new Error('flaky') : fatal;
      }),
    );
    await vi.runAllTimersAsync();
    expect(calls).toBe(2);
    expect(result.error).toBe(fatal);
    expect(shouldRetry.mock.calls.map(([, attempt]) => attempt)).toEqual([1, 2]);
  });

  it('by default does not retry calls refused by a breaker, bulkhead or budget', async () => {
    for (const refused of [
      new CircuitOpenError('db', 123),
      new BulkheadFullError(1, 0),
      new RetryBudgetExhaustedError(1, new Error('x')),
    ]) {
      expect(defaultShouldRetry(refused)).toBe(false);
      const { fn } = flaky(1, refused);
      await expect(retry().execute(fn)).rejects.toBe(refused);
      expect(fn).toHaveBeenCalledTimes(1);
    }
    expect(defaultShouldRetry(new Error('ECONNRESET'))).toBe(true);
  });

  it('rejects with what onRetryRefused returns when a retry is refused, told the refusal and the error before it', async () => {
    const down = new Error('503');
    const open = new CircuitOpenError('db', 123);
    const told: unknown[] = [];
    const onRetryRefused = (info: unknown) => {
      told.push(info);
      return (info as { error: unknown }).error;
    };
    const policy = retry({ maxAttempts: 4, backoff: constantBackoff(10), onRetryRefused });
    // The attempt ran and failed; the breaker refused the retry (its fn never ran).
    const fn = vi.fn(async ({ attempt }: PolicyContext) => {
      throw attempt === 1 ? down : open;
    });
    const result = track(policy.execute(fn));
    await vi.runAllTimersAsync();
    expect(result.error).toBe(down);
    expect(fn).toHaveBeenCalledTimes(2);
    expect(told).toEqual([{ attempt: 2, refusal: open, error: down }]);
    // A first attempt refused is no retry: it ends with the refusal, unseen by the hook.
    const refused = track(policy.execute(flaky(5, open).fn));
    await vi.runAllTimersAsync();
    expect(refused.error).toBe(open);
    expect(told).toHaveLength(1);
    // Without the hook, the refusal ends the execution, as before.
    const plain = track(retry({ backoff: constantBackoff(10) }).execute(fn));
    await vi.runAllTimersAsync();
    expect(plain.error).toBe(open);
  });

  it('waits at least an error retryAfterMs hint (HTTP Retry-After)', async () => {
    const busy = Object.assign(new Error('503'), { retryAfterMs: 2000 });
    const { fn } = flaky(1, busy);
    const onRetry = vi.fn();
    const result = track(retry({ backoff: constantBackoff(100), onRetry }).execute(fn));
    await vi.advanceTimersByTimeAsync(1999);
    expect(fn).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(result.value).toBe('ok');
    expect(onRetry).toHaveBeenCalledWith({ attempt: 1, delayMs: 2000, error: busy });
  });

  it('caps every wait, hint included, at maxDelayMs', async () => {
    const busy = Object.assign(new Error('503'), { retryAfterMs: 60_000 });
    const onRetry = vi.fn();
    const result = track(retry({ maxDelayMs: 500, onRetry }).execute(flaky(1, busy).fn));
    await vi.advanceTimersByTimeAsync(500);
    expect(result.value).toBe('ok');
    expect(onRetry.mock.calls[0]?.[0]).toMatchObject({ delayMs: 500 });
  });

  it('tells onRetry about each retry before its wait', async () => {
    const infos: RetryInfo[] = [];
    const errors = [new Error('one'), new Error('two')];
    let i = 0;
    const result = track(
      retry({ backoff: constantBackoff(50), onRetry: (info) => infos.push(info) }).execute(async () => {
        if (i < errors.length) throw errors[i++];
        return 'ok';
      }),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(infos).toEqual([{ attempt: 1, delayMs: 50, error: errors[0] }]);
    await vi.runAllTimersAsync();
    expect(infos).toEqual([
      { attempt: 1, delayMs: 50, error: errors[0] },
      { attempt: 2, delayMs: 50, error: errors[1] },
    ]);
    expect(result.value).toBe('ok');
  });

  describe('with a budget', () => {
    it('records one request per execution, not per attempt', async () => {
      const budget = new RetryBudget();
      const result = track(retry({ budget, backoff: constantBackoff(1) }).execute(flaky(2).fn));
      await vi.runAllTimersAsync();
      expect(result.value).toBe('ok');
      expect(budget.stats()).toMatchObject({ requests: 1, retries: 2 });
    });

    it('rejects with RetryBudgetExhaustedError, caused by the last error, when the budget refuses', async () => {
      const budget = new RetryBudget({ ratio: 0, minRetriesPerSecond: 0.1, windowMs: 10_000 }); // 1 retry
      const policy = retry({ budget, maxAttempts: 5, backoff: constantBackoff(1) });
      const last = new Error('still down');
      const first = track(policy.execute(flaky(1).fn));
      await vi.runAllTimersAsync();
      expect(first.value).toBe('ok'); // used the one retry

      const { fn } = flaky(5, last);
      const second = track(policy.execute(fn));
      await vi.runAllTimersAsync();
      expect(fn).toHaveBeenCalledTimes(1);
      expect(isRetryBudgetExhaustedError(second.error)).toBe(true);
      expect(second.error).toMatchObject({ code: 'RETRY_BUDGET_EXHAUSTED', attempts: 1, cause: last });
    });

    it('rejects with what onBudgetExhausted returns, told the attempt and its error', async () => {
      const budget = new RetryBudget({ ratio: 0, minRetriesPerSecond: 0 });
      const told: unknown[] = [];
      const last = new Error('still down');
      const policy = retry({
        budget,
        backoff: constantBackoff(1),
        onBudgetExhausted: (info) => {
          told.push(info);
          return info.error;
        },
      });
      const result = track(policy.execute(flaky(5, last).fn));
      await vi.runAllTimersAsync();
      expect(result.error).toBe(last);
      expect(told).toEqual([{ attempt: 1, error: last }]);
    });

    it('counts every execution from its start, one a breaker inside refuses included (what it runs is opaque to it)', async () => {
      const budget = new RetryBudget();
      const refusal = new CircuitOpenError('down', 1000);
      await expect(retry({ budget }).execute(() => Promise.reject(refusal))).rejects.toBe(refusal);
      expect(budget.stats()).toMatchObject({ requests: 1, retries: 0 });
    });

    it('counts an execution whose call was made, then refused a retry by a retry policy inside', async () => {
      const budget = new RetryBudget();
      const inner = new RetryBudgetExhaustedError(1, new Error('down'));
      await expect(retry({ budget }).execute(() => Promise.reject(inner))).rejects.toBe(inner);
      expect(budget.stats()).toMatchObject({ requests: 1 });
    });

    it('spends no budget on errors that are not retried', async () => {
      const budget = new RetryBudget();
      const policy = retry({ budget, shouldRetry: () => false });
      await expect(policy.execute(flaky(1).fn)).rejects.toThrow('boom');
      expect(budget.stats()).toMatchObject({ requests: 1, retries: 0 });
    });
  });

  describe('cancellation', () => {
    it('rejects with the signal reason as soon as the caller aborts during a wait', async () => {
      const controller = new AbortController();
      const { fn } = flaky(5);
      const result = track(
        retry({ backoff: constantBackoff(10_000) }).execute(fn, { signal: controller.signal }),
      );
      await vi.advanceTimersByTimeAsync(100);
      const reason = new Error('client went away');
      controller.abort(reason);
      await vi.advanceTimersByTimeAsync(0);
      expect(result.error).toBe(reason);
      expect(fn).toHaveBeenCalledTimes(1);
      expect(vi.getTimerCount()).toBe(0); // the wait's timer is cleared
    });

    it('does not retry once the caller has aborted, and rethrows the attempt error', async () => {
      const controller = new AbortController();
      const aborted = new Error('aborted');
      const fn = vi.fn(async () => {
        controller.abort();
        throw aborted;
      });
      const shouldRetry = vi.fn(() => true);
      await expect(retry({ shouldRetry }).execute(fn, { signal: controller.signal })).rejects.toBe(aborted);
      expect(fn).toHaveBeenCalledTimes(1);
      expect(shouldRetry).not.toHaveBeenCalled();
    });

    it('runs nothing, spends no budget and rejects with the reason when the caller aborted before', async () => {
      const controller = new AbortController();
      const reason = new Error('client went away');
      controller.abort(reason);
      const budget = new RetryBudget();
      const fn = vi.fn(async () => 'ok');
      await expect(retry({ budget }).execute(fn, { signal: controller.signal })).rejects.toBe(reason);
      expect(fn).not.toHaveBeenCalled();
      expect(budget.stats()).toMatchObject({ requests: 0, retries: 0 });
    });

    it('passes the caller signal to every attempt', async () => {
      const controller = new AbortController();
      const { fn, calls } = flaky(1);
      const result = track(retry({ backoff: constantBackoff(1) }).execute(fn, { signal: controller.signal }));
      await vi.runAllTimersAsync();
      expect(result.value).toBe('ok');
      expect(calls.map((c) => c.signal)).toEqual([controller.signal, controller.signal]);
    });
  });

  describe('deadline', () => {
    it('does not start a wait that would end past the deadline, and rethrows the last error', async () => {
      const last = new Error('down');
      const { fn } = flaky(5, last);
      const onRetry = vi.fn();
      const deadline = Date.now() + 250;
      const result = track(
        retry({ maxAttempts: 5, backoff: constantBackoff(100), onRetry }).execute(fn, { deadline }),
      );
      await vi.advanceTimersByTimeAsync(200); // attempts at 0 and 100 ms, and at 200 ms
      expect(result.error).toBe(last); // the next wait would end at 300 > 250
      expect(fn).toHaveBeenCalledTimes(3);
      expect(onRetry).toHaveBeenCalledTimes(2);
      expect(vi.getTimerCount()).toBe(0);
    });

    it('does not retry after a Retry-After hint that ends past the deadline', async () => {
      const busy = Object.assign(new Error('429'), { retryAfterMs: 30_000 });
      const { fn } = flaky(1, busy);
      await expect(retry().execute(fn, { deadline: Date.now() + 5000 })).rejects.toBe(busy);
      expect(fn).toHaveBeenCalledTimes(1);
    });
    it('tells onDeadlineReached, not onRetry, of a retry given up for the deadline', async () => {
      const onRetry = vi.fn();
      const onDeadlineReached = vi.fn();
      const busy = Object.assign(new Error('busy'), { retryAfterMs: 10_000 });
      const fn = vi.fn().mockRejectedValueOnce(new Error('first')).mockRejectedValue(busy);
      const policy = retry({ maxAttempts: 5, backoff: constantBackoff(10), onRetry, onDeadlineReached });
      const result = track(policy.execute(fn, { deadline: Date.now() + 1000 }));
      await vi.advanceTimersByTimeAsync(10);
      expect(result.error).toBe(busy);
      expect(fn).toHaveBeenCalledTimes(2);
      expect(onRetry).toHaveBeenCalledTimes(1);
      expect(onDeadlineReached).toHaveBeenCalledTimes(1);
      expect(onDeadlineReached).toHaveBeenCalledWith({ attempt: 2, delayMs: 10_000, error: busy });
      // Without a deadline, or with time left, it is never called.
      onDeadlineReached.mockClear();
      const undated = track(
        retry({ maxAttempts: 2, backoff: constantBackoff(1), onDeadlineReached }).execute(() => {
          throw new Error('down');
        }),
      );
      await vi.advanceTimersByTimeAsync(1);
      expect((undated.error as Error).message).toBe('down');
      expect(onDeadlineReached).not.toHaveBeenCalled();
    });

    it('passes the deadline on to the function context', async () => {
      const { fn, calls } = flaky(0);
      await retry().execute(fn, { deadline: 12345 });
      expect(calls[0]).toMatchObject({ deadline: 12345, attempt: 1 });
    });
  });

  it('turns a synchronous throw into an attempt failure', async () => {
    let calls = 0;
    const result = track(
      retry({ backoff: constantBackoff(1) }).execute(() => {
        calls++;
        if (calls === 1) throw new Error('sync');
        return 42;
      }),
    );
    await vi.runAllTimersAsync();
    expect(result.value).toBe(42);
  });

  it.each([
    ['0 attempts', { maxAttempts: 0 }],
    ['101 attempts', { maxAttempts: 101 }],
    ['unlimited attempts', { maxAttempts: Number.POSITIVE_INFINITY }],
    ['a fractional maxAttempts', { maxAttempts: 2.5 }],
    ['a negative maxDelayMs', { maxDelayMs: -1 }],
    ['a NaN maxDelayMs', { maxDelayMs: Number.NaN }],
    ['a maxDelayMs given as a string', { maxDelayMs: '5' as unknown as number }],
    ['a backoff that is no function', { backoff: 5 as unknown as () => number }],
    ['an onRetry that is no function', { onRetry: 'log' as unknown as () => void }],
    ['an onBudgetExhausted that is no function', { onBudgetExhausted: {} as () => unknown }],
    ['a budget that is no RetryBudget', { budget: 0.2 as unknown as RetryBudget }],
  ])('rejects %s with INVALID_OPTIONS', (_, options) => {
    let error: unknown;
    try {
      retry(options);
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error)).toBe(true);
  });
});
