import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { isTimeoutError, TimeoutError } from './errors.js';
import type { PolicyContext } from './policy.js';
import { timeout } from './timeout.js';

function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

/** A function that never settles on its own; records the signal it was given. */
function hanging() {
  const seen: { context?: PolicyContext } = {};
  const fn = vi.fn((context: PolicyContext) => {
    seen.context = context;
    return new Promise<never>(() => undefined);
  });
  return { fn, seen };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('timeout', () => {
  it('rejects with TimeoutError when the time is up, without waiting for the function', async () => {
    const { fn } = hanging();
    const result = track(timeout({ ms: 500 }).execute(fn));
    await vi.advanceTimersByTimeAsync(499);
    expect(result.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(isTimeoutError(result.error)).toBe(true);
    expect(result.error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 500 });
  });

  it('tells the function to stop by aborting its signal with the TimeoutError', async () => {
    const { fn, seen } = hanging();
    const result = track(timeout({ ms: 100 }).execute(fn));
    await vi.advanceTimersByTimeAsync(0);
    expect(seen.context?.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(100);
    expect(seen.context?.signal.aborted).toBe(true);
    expect(seen.context?.signal.reason).toBe(result.error);
    expect(seen.context?.signal.reason).toBeInstanceOf(TimeoutError);
  });

  it('rejects with the TimeoutError even when the function reacts to the abort with its own error', async () => {
    const result = track(
      timeout({ ms: 100 }).execute(
        ({ signal }) =>
          new Promise((_, reject) => {
            signal.addEventListener('abort', () => reject(new Error('AbortError')));
          }),
      ),
    );
    await vi.advanceTimersByTimeAsync(100);
    expect(isTimeoutError(result.error)).toBe(true);
  });

  it('returns the result and clears its timer when the function settles first', async () => {
    const policy = timeout({ ms: 1000 });
    const result = track(
      policy.execute(async ({ signal }) => {
        await new Promise((resolve) => setTimeout(resolve, 200));
        return signal.aborted ? 'aborted' : 'done';
      }),
    );
    await vi.advanceTimersByTimeAsync(200);
    expect(result.value).toBe('done');
    expect(vi.getTimerCount()).toBe(0);
    await expect(policy.execute(() => Promise.reject(new Error('nope')))).rejects.toThrow('nope');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('follows the caller signal: aborts the function and rejects with the caller reason', async () => {
    const controller = new AbortController();
    const { fn, seen } = hanging();
    const result = track(timeout({ ms: 1000 }).execute(fn, { signal: controller.signal }));
    await vi.advanceTimersByTimeAsync(10);
    const reason = new Error('shutdown');
    controller.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(result.error).toBe(reason);
    expect(seen.context?.signal.reason).toBe(reason);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does not run the function when the caller signal is already aborted', async () => {
    const { fn } = hanging();
    const reason = new Error('gone');
    await expect(timeout({ ms: 1000 }).execute(fn, { signal: AbortSignal.abort(reason) })).rejects.toBe(
      reason,
    );
    expect(fn).not.toHaveBeenCalled();
  });

  it('passes the attempt through and gives the function its own deadline', async () => {
    const start = Date.now();
    const { fn, seen } = hanging();
    track(timeout({ ms: 300 }).execute(fn, { attempt: 2 }));
    await vi.advanceTimersByTimeAsync(0);
    expect(seen.context).toMatchObject({ attempt: 2, deadline: start + 300 });
    await vi.runAllTimersAsync();
  });

  describe('with a deadline', () => {
    it('times out at the deadline when it comes before ms', async () => {
      const deadline = Date.now() + 250;
      const { fn, seen } = hanging();
      const result = track(timeout({ ms: 1000 }).execute(fn, { deadline }));
      await vi.advanceTimersByTimeAsync(249);
      expect(result.settled).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(result.error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 250 });
      expect(seen.context).toMatchObject({ deadline });
    });

    it('keeps ms when the deadline is further away', async () => {
      const { fn } = hanging();
      const result = track(timeout({ ms: 100 }).execute(fn, { deadline: Date.now() + 10_000 }));
      await vi.advanceTimersByTimeAsync(100);
      expect(result.error).toMatchObject({ code: 'TIMEOUT', timeoutMs: 100 });
    });

    it('rejects at once, without running the function, when the deadline has passed', async () => {
      const { fn } = hanging();
      const error = await timeout({ ms: 1000 })
        .execute(fn, { deadline: Date.now() - 1 })
        .catch((e: unknown) => e);
      expect(isTimeoutError(error)).toBe(true);
      expect(fn).not.toHaveBeenCalled();
      expect(vi.getTimerCount()).toBe(0);
    });
  });

  it.each([
    ['0 ms', 0],
    ['a negative ms', -5],
    ['NaN', Number.NaN],
    ['more than setTimeout can wait', 2 ** 31],
  ])('rejects %s with INVALID_OPTIONS', (_, ms) => {
    let error: unknown;
    try {
      timeout({ ms });
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error)).toBe(true);
  });
});
