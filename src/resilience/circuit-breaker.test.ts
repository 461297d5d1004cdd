import { afterEach, describe, expect, it, vi } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import {
  CircuitBreaker,
  type CircuitBreakerOptions,
  type CircuitStateChange,
  circuitBreaker,
  DEFAULT_CIRCUIT_BREAKER,
} from './circuit-breaker.js';
import { isCircuitOpenError } from './errors.js';

const T0 = 1_700_000_000_000;

/** A breaker on a hand-driven clock, and helpers to feed it outcomes. */
function setup(options: CircuitBreakerOptions = {}) {
  let time = T0;
  const now = () => time;
  const breaker = new CircuitBreaker({ now, resetTimeoutMs: 1000, minimumVolume: 4, ...options });
  const changes: CircuitStateChange[] = [];
  breaker.onStateChange((change) => changes.push(change));
  const succeed = () => breaker.execute(async () => 'ok');
  const fail = (error: unknown = new Error('down')) =>
    breaker.execute(async () => {
      throw error;
    });
  /** Runs the outcomes in order ('s' success, 'f' failure), ignoring the results. */
  const script = async (outcomes: string) => {
    for (const outcome of outcomes) await (outcome === 's' ? succeed() : fail()).catch(() => undefined);
  };
  return {
    breaker,
    changes,
    succeed,
    fail,
    script,
    advance: (ms: number) => {
      time += ms;
    },
    now,
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

afterEach(() => {
  vi.useRealTimers();
});

describe('CircuitBreaker', () => {
  it('passes results, errors and a context through while closed', async () => {
    const { breaker } = setup();
    await expect(breaker.execute(({ attempt }) => attempt * 2, { attempt: 3 })).resolves.toBe(6);
    const signal = new AbortController().signal;
    await expect(breaker.execute(async (context) => context.signal, { signal })).resolves.toBe(signal);
    await expect(
      breaker.execute(() => {
        throw new Error('sync');
      }),
    ).rejects.toThrow('sync');
    expect(breaker.stats()).toMatchObject({ state: 'closed', calls: 3, successes: 2, failures: 1 });
  });

  it('opens at the failure threshold only once the window holds minimumVolume calls', async () => {
    const { breaker, script } = setup({ minimumVolume: 6, errorThresholdPercentage: 50 });
    await script('fffff'); // 100% failures, but only 5 calls
    expect(breaker.state).toBe('closed');
    await script('sssss'); // 5 of 10: 50%, but successes never open it
    expect(breaker.state).toBe('closed');
    await script('s'); // 5 of 11
    await script('f'); // 6 of 12 = 50%
    expect(breaker.state).toBe('open');
  });

  it('stays closed below the threshold', async () => {
    const { breaker, script } = setup({ errorThresholdPercentage: 50 });
    await script('sssfsfsf'); // 3 of 8 failed
    expect(breaker.stats()).toMatchObject({
      state: 'closed',
      failures: 3,
      calls: 8,
      failurePercentage: 37.5,
    });
  });

  it('while open, refuses calls at once with CircuitOpenError carrying retryAt, without running fn', async () => {
    const { breaker, script } = setup({ name: 'payments' });
    await script('ffff');
    const fn = vi.fn(async () => 'ok');
    const error = await rejection(breaker.execute(fn));
    expect(isCircuitOpenError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'CIRCUIT_OPEN', breaker: 'payments', retryAt: T0 + 1000 });
    expect(fn).not.toHaveBeenCalled();
  });

  it('goes half-open after resetTimeoutMs, and closes with a cleared window when the probe succeeds', async () => {
    const { breaker, script, advance, changes, succeed } = setup();
    await script('ssff'); // opens on the 2nd failure: 2 of 4 calls = 50%
    advance(999);
    expect(breaker.state).toBe('open');
    await expect(succeed()).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    advance(1);
    expect(breaker.state).toBe('half-open');
    await expect(succeed()).resolves.toBe('ok');
    expect(breaker.stats()).toMatchObject({ state: 'closed', calls: 0, failures: 0 });
    expect(changes.map(({ from, to }) => `${from}>${to}`)).toEqual([
      'closed>open',
      'open>half-open',
      'half-open>closed',
    ]);
    expect(changes.map(({ at }) => at)).toEqual([T0, T0 + 1000, T0 + 1000]);
  });

  it('opens again when a probe fails, for another resetTimeoutMs', async () => {
    const { breaker, script, advance, changes, fail } = setup();
    await script('ffff');
    advance(1000);
    await expect(fail()).rejects.toThrow('down');
    expect(breaker.stats()).toMatchObject({ state: 'open', retryAt: T0 + 2000 });
    advance(1000);
    await script('s');
    expect(breaker.state).toBe('closed');
    expect(changes.map(({ to }) => to)).toEqual(['open', 'half-open', 'open', 'half-open', 'closed']);
  });

  it('lets only halfOpenMaxCalls probes through, and needs all of them to succeed', async () => {
    const { breaker, script, advance } = setup({ halfOpenMaxCalls: 2 });
    await script('ffff');
    advance(1000);
    const releases: Array<() => void> = [];
    const probe = () =>
      breaker.execute(
        () =>
          new Promise<string>((resolve) => {
            releases.push(() => resolve('ok'));
          }),
      );
    const first = probe();
    const second = probe();
    await expect(breaker.execute(async () => 'third')).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    releases[0]!();
    await first;
    expect(breaker.state).toBe('half-open');
    releases[1]!();
    await second;
    expect(breaker.state).toBe('closed');
  });

  it('starts a new probe round when a probe has not answered within resetTimeoutMs, ignoring its late result', async () => {
    const { breaker, script, advance } = setup();
    await script('ffff');
    advance(1000);
    let hang!: (error: Error) => void;
    const stuck = breaker.execute(
      () =>
        new Promise((_, reject) => {
          hang = reject;
        }),
    );
    await expect(breaker.execute(async () => 'x')).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    advance(1000);
    await expect(breaker.execute(async () => 'second probe')).resolves.toBe('second probe');
    expect(breaker.state).toBe('closed');
    hang(new Error('late'));
    await expect(stuck).rejects.toThrow('late');
    expect(breaker.stats()).toMatchObject({ state: 'closed', failures: 0 }); // the late probe is not counted
  });

  it('counts only errors isFailure accepts; others count as successes', async () => {
    const httpError = (status: number) => Object.assign(new Error(`HTTP ${status}`), { status });
    const { breaker, fail } = setup({
      isFailure: (error) => ((error as { status?: number }).status ?? 500) >= 500,
    });
    for (let i = 0; i < 10; i++) await fail(httpError(404)).catch(() => undefined);
    expect(breaker.stats()).toMatchObject({ state: 'closed', successes: 10, failures: 0 });
    for (let i = 0; i < 10; i++) await fail(httpError(503)).catch(() => undefined);
    expect(breaker.state).toBe('open');
  });

  it('opens on the slow-call percentage; a slow success counts as slow, not as failed', async () => {
    const { breaker, advance } = setup({
      slowCallThresholdPercentage: 50,
      slowCallDurationMs: 100,
      minimumVolume: 4,
    });
    const call = (ms: number) =>
      breaker.execute(async () => {
        advance(ms);
        return 'ok';
      });
    await call(10);
    await call(100); // not slower than 100 ms
    await call(150);
    expect(breaker.stats()).toMatchObject({ state: 'closed', calls: 3, slowCalls: 1, failures: 0 });
    await call(101); // 2 slow of 4
    expect(breaker.stats()).toMatchObject({ state: 'open', successes: 4, failures: 0, slowCalls: 2 });
  });

  it('does not time calls while slow-call detection is off (the default)', async () => {
    const { breaker, advance } = setup();
    for (let i = 0; i < 10; i++) {
      await breaker.execute(async () => {
        advance(60_000);
      });
    }
    expect(breaker.stats()).toMatchObject({ state: 'closed', slowCalls: 0 });
  });

  it('forgets outcomes that slid out of the rolling window', async () => {
    const { breaker, script, advance } = setup({ windowMs: 10_000, buckets: 10 });
    await script('fff');
    advance(10_000);
    await script('sf');
    expect(breaker.stats()).toMatchObject({ state: 'closed', calls: 2, failures: 1 });
    await script('sf'); // 2 of 4: the three old failures no longer count
    expect(breaker.state).toBe('open');
  });

  it('isolate() holds it open until reset(), which closes it with a cleared window', async () => {
    const { breaker, script, advance, changes } = setup();
    await script('sff');
    breaker.isolate();
    const fn = vi.fn();
    await expect(breaker.execute(fn)).rejects.toMatchObject({ code: 'CIRCUIT_OPEN', retryAt: undefined });
    advance(60_000);
    expect(breaker.state).toBe('isolated');
    breaker.reset();
    expect(breaker.stats()).toMatchObject({ state: 'closed', calls: 0 });
    await expect(breaker.execute(fn)).resolves.toBeUndefined();
    expect(fn).toHaveBeenCalledTimes(1);
    expect(changes.map(({ to }) => to)).toEqual(['isolated', 'closed']);
  });

  it('fires each state change once, and stops after unsubscribing', async () => {
    const { breaker, script, advance, changes } = setup();
    const second: string[] = [];
    const unsubscribe = breaker.onStateChange(({ to }) => second.push(to));
    await script('ffffffff'); // extra failures while open change nothing
    expect(breaker.state).toBe('open');
    expect(breaker.state).toBe('open');
    advance(1000);
    expect(breaker.state).toBe('half-open');
    expect(breaker.state).toBe('half-open');
    unsubscribe();
    breaker.reset();
    breaker.reset();
    expect(changes.map(({ to }) => to)).toEqual(['open', 'half-open', 'closed']);
    expect(second).toEqual(['open', 'half-open']);
  });

  it('round-trips its state through toJSON and restore (e.g. across a restart)', async () => {
    const first = setup();
    await first.script('ffff');
    const saved = JSON.parse(JSON.stringify(first.breaker)) as ReturnType<CircuitBreaker['toJSON']>;
    expect(saved).toMatchObject({ version: 1, state: 'open', retryAt: T0 + 1000 });

    const restored = CircuitBreaker.restore(saved, {
      now: first.now,
      resetTimeoutMs: 1000,
      minimumVolume: 4,
    });
    expect(restored.stats()).toMatchObject({ state: 'open', failures: 4, retryAt: T0 + 1000 });
    await expect(restored.execute(async () => 'x')).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    first.advance(1000);
    await expect(restored.execute(async () => 'x')).resolves.toBe('x');
    expect(restored.state).toBe('closed');
  });

  it('restores a closed window through the initialState option, so counting goes on', async () => {
    const first = setup();
    await first.script('sff');
    const next = new CircuitBreaker({
      now: first.now,
      minimumVolume: 4,
      initialState: first.breaker.toJSON(),
    });
    expect(next.stats()).toMatchObject({ state: 'closed', calls: 3, failures: 2 });
    await next.execute(async () => Promise.reject(new Error('x'))).catch(() => undefined);
    expect(next.state).toBe('open');
  });

  it('rejects a snapshot that is not one', () => {
    let error: unknown;
    try {
      CircuitBreaker.restore({ version: 2, state: 'closed' } as never);
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error)).toBe(true);
  });

  it('refuses an open snapshot whose retryAt is not a finite number (NaN or Infinity: open for ever)', () => {
    for (const retryAt of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, null, '1']) {
      const snapshot = { version: 1, state: 'open', retryAt } as never;
      expect(() => CircuitBreaker.restore(snapshot)).toThrow(/finite numeric retryAt/);
      expect(() => circuitBreaker({ initialState: snapshot })).toThrow(/finite numeric retryAt/);
    }
  });

  it('waits at most resetTimeoutMs from a restore for an open snapshot whose retryAt lies further ahead', async () => {
    let time = T0;
    const restored = CircuitBreaker.restore({ version: 1, state: 'open', retryAt: 1e308 } as never, {
      now: () => time,
      resetTimeoutMs: 1000,
    });
    expect(restored.stats()).toMatchObject({ state: 'open', retryAt: T0 + 1000 });
    time += 1000;
    await expect(restored.execute(async () => 'x')).resolves.toBe('x');
  });

  it('creates no timer at all, whatever the calls and transitions', async () => {
    vi.useFakeTimers();
    const breaker = circuitBreaker({
      minimumVolume: 5,
      resetTimeoutMs: 100,
      slowCallThresholdPercentage: 80,
    });
    for (let i = 0; i < 1000; i++) {
      await breaker
        .execute(async () => {
          if (i % 3 === 0) throw new Error('x');
          return i;
        })
        .catch(() => undefined);
      if (i % 50 === 0) await vi.advanceTimersByTimeAsync(100);
    }
    breaker.isolate();
    breaker.reset();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('follows fake timers with its default clock', async () => {
    vi.useFakeTimers();
    const breaker = circuitBreaker({ minimumVolume: 1, resetTimeoutMs: 5000 });
    await breaker.execute(async () => Promise.reject(new Error('x'))).catch(() => undefined);
    expect(breaker.state).toBe('open');
    await vi.advanceTimersByTimeAsync(5000);
    expect(breaker.state).toBe('half-open');
  });

  it('exports frozen defaults', () => {
    expect(DEFAULT_CIRCUIT_BREAKER).toMatchObject({
      windowMs: 10_000,
      buckets: 10,
      minimumVolume: 20,
      errorThresholdPercentage: 50,
      slowCallThresholdPercentage: 100,
      slowCallDurationMs: 5000,
      resetTimeoutMs: 30_000,
      halfOpenMaxCalls: 1,
    });
    expect(Object.isFrozen(DEFAULT_CIRCUIT_BREAKER)).toBe(true);
  });

  it.each([
    ['an errorThresholdPercentage of 0', { errorThresholdPercentage: 0 }],
    ['an errorThresholdPercentage above 100', { errorThresholdPercentage: 101 }],
    ['a minimumVolume of 0', { minimumVolume: 0 }],
    ['fractional buckets', { buckets: 2.5 }],
    ['a negative resetTimeoutMs', { resetTimeoutMs: -1 }],
    ['zero halfOpenMaxCalls', { halfOpenMaxCalls: 0 }],
    ['an empty name', { name: '' }],
    ['a name that is no string', { name: 5 as unknown as string }],
    ['an errorThresholdPercentage of 150', { errorThresholdPercentage: 150 }],
    [
      'an errorThresholdPercentage given as a string',
      { errorThresholdPercentage: '50' as unknown as number },
    ],
    ['a negative minimumVolume', { minimumVolume: -1 }],
    ['a NaN resetTimeoutMs', { resetTimeoutMs: Number.NaN }],
    ['a slowCallDurationMs given as a string', { slowCallDurationMs: '5' as unknown as number }],
    ['an isIgnored that is no function', { isIgnored: true as unknown as () => boolean }],
  ])('rejects %s with INVALID_OPTIONS', (_, options) => {
    let error: unknown;
    try {
      circuitBreaker(options);
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error)).toBe(true);
  });
});
