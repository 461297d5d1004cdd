import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { constantBackoff } from './backoff.js';
import { bulkhead } from './bulkhead.js';
import { circuitBreaker } from './circuit-breaker.js';
import { compose, noop } from './compose.js';
import { isTimeoutError } from './errors.js';
import type { ExecuteOptions, Policy, PolicyContext } from './policy.js';
import { retry } from './retry.js';
import { timeout } from './timeout.js';

function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

/** A policy that logs when it is entered and left, and the options it was given. */
function recorder(name: string, log: string[], seen: ExecuteOptions[] = []): Policy {
  return {
    async execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions) {
      seen.push(options ?? {});
      log.push(`${name}>`);
      try {
        return await fn({
          signal: options?.signal ?? new AbortController().signal,
          attempt: options?.attempt ?? 1,
        });
      } finally {
        log.push(`<${name}`);
      }
    },
  };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('compose', () => {
  it('makes the first policy the outermost', async () => {
    const log: string[] = [];
    const policy = compose(recorder('a', log), recorder('b', log), recorder('c', log));
    await policy.execute(() => {
      log.push('fn');
    });
    expect(log).toEqual(['a>', 'b>', 'c>', 'fn', '<c', '<b', '<a']);
  });

  it('is noop without policies, and the policy itself with one', async () => {
    const single = timeout({ ms: 10 });
    expect(compose()).toBe(noop);
    expect(compose(single)).toBe(single);
    const signal = new AbortController().signal;
    await expect(noop.execute((context) => context, { signal, attempt: 4 })).resolves.toMatchObject({
      signal,
      attempt: 4,
    });
    await expect(
      noop.execute(() => {
        throw new Error('sync');
      }),
    ).rejects.toThrow('sync');
  });

  it('refuses what is not a policy when composing, not at every execution', () => {
    for (const [bad, message] of [
      [{}, /argument 1 is an object$/],
      [null, /argument 1 is null$/],
      [undefined, /argument 1 is undefined$/],
      [
        timeout,
        /argument 1 is a function \(a policy factory not called\? timeout\(\{ ms: 1000 \}\), not timeout\)/,
      ],
      [retry, /\(a policy factory not called\? retry\(\{ maxAttempts: 3 \}\), not retry\)/],
      [bulkhead, /\(a policy factory not called\? bulkhead\(\{ maxConcurrent: 10 \}\), not bulkhead\)/],
      [circuitBreaker, /\(a policy factory not called\? circuitBreaker\(\{\}\), not circuitBreaker\)/],
    ] as const) {
      expect(() => compose(retry(), bad as never)).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS', message: expect.stringMatching(message) }),
      );
    }
    expect(() => compose(null as never)).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    // What the hints suggest is taken as it is written.
    expect(() =>
      compose(
        timeout({ ms: 1000 }),
        retry({ maxAttempts: 3 }),
        bulkhead({ maxConcurrent: 10 }),
        circuitBreaker({}),
      ),
    ).not.toThrow();
  });

  it('timeout outside retry bounds all the attempts together', async () => {
    let attempts = 0;
    const policy = compose(timeout({ ms: 1000 }), retry({ maxAttempts: 10, backoff: constantBackoff(100) }));
    const result = track(
      policy.execute(async ({ signal }) => {
        attempts++;
        await sleep(300, signal);
        throw new Error('down');
      }),
    );
    // attempts at 0, 400 and 800 ms; the timeout cuts the third at 1000 ms
    await vi.advanceTimersByTimeAsync(999);
    expect(result.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(isTimeoutError(result.error)).toBe(true);
    expect(attempts).toBe(3);
    await vi.runAllTimersAsync();
    expect(attempts).toBe(3); // the retry stopped with the signal
  });

  it("gives retry the timeout's deadline: no wait is started that the timeout would cut", async () => {
    let attempts = 0;
    const last = new Error('down');
    const policy = compose(timeout({ ms: 1000 }), retry({ maxAttempts: 10, backoff: constantBackoff(400) }));
    const result = track(
      policy.execute(async () => {
        attempts++;
        throw last;
      }),
    );
    await vi.advanceTimersByTimeAsync(800);
    // attempts at 0, 400, 800; a wait until 1200 would outlive the timeout: the real error now
    expect(attempts).toBe(3);
    expect(result.error).toBe(last);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('retry outside timeout gives each attempt its own timeout and signal', async () => {
    const signals: AbortSignal[] = [];
    const policy = compose(retry({ maxAttempts: 3, backoff: constantBackoff(10) }), timeout({ ms: 100 }));
    const result = track(
      policy.execute(({ signal }) => {
        signals.push(signal);
        return new Promise(() => undefined);
      }),
    );
    await vi.advanceTimersByTimeAsync(319);
    expect(result.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1); // 100 + 10 + 100 + 10 + 100
    expect(isTimeoutError(result.error)).toBe(true);
    expect(signals).toHaveLength(3);
    expect(new Set(signals).size).toBe(3);
    expect(signals.every((signal) => isTimeoutError(signal.reason))).toBe(true);
  });

  it('hands fn the attempt number set by retry, through a breaker and a bulkhead', async () => {
    const attempts: number[] = [];
    const policy = compose(
      retry({ maxAttempts: 3, backoff: constantBackoff(1) }),
      circuitBreaker(),
      bulkhead({ maxConcurrent: 1 }),
    );
    const result = track(
      policy.execute(({ attempt }) => {
        attempts.push(attempt);
        if (attempt < 3) throw new Error('again');
        return 'third time';
      }),
    );
    await vi.runAllTimersAsync();
    expect(result.value).toBe('third time');
    expect(attempts).toEqual([1, 2, 3]);
  });

  it('hands fn the innermost signal, which follows the caller signal', async () => {
    const controller = new AbortController();
    let inner: AbortSignal | undefined;
    const policy = compose(retry(), timeout({ ms: 5000 }), circuitBreaker());
    const result = track(
      policy.execute(
        ({ signal }) => {
          inner = signal;
          return new Promise(() => undefined);
        },
        { signal: controller.signal },
      ),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(inner).toBeDefined();
    expect(inner).not.toBe(controller.signal); // the timeout's own signal
    const reason = new Error('caller cancelled');
    controller.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(inner?.aborted).toBe(true);
    expect(inner?.reason).toBe(reason);
    expect(result.error).toBe(reason);
  });

  it("passes the caller's deadline to every inner policy", async () => {
    const log: string[] = [];
    const seen: ExecuteOptions[] = [];
    const deadline = Date.now() + 5000;
    const policy = compose(recorder('outer', log), retry(), recorder('inner', log, seen));
    await policy.execute(() => 'ok', { deadline });
    expect(seen).toEqual([expect.objectContaining({ deadline, attempt: 1 })]);
  });

  it('lets a timeout inside tighten the deadline seen by the policies within it', async () => {
    const seen: ExecuteOptions[] = [];
    const start = Date.now();
    const policy = compose(timeout({ ms: 200 }), recorder('inner', [], seen));
    await policy.execute(() => 'ok', { deadline: start + 5000 });
    expect(seen[0]?.deadline).toBe(start + 200);
  });
});
