import { describe, expect, it } from 'vitest';
import { InvalidOptionsError, isInvalidOptionsError } from '../errors/ferry-error.js';
import {
  constantBackoff,
  DEFAULT_DECORRELATED_JITTER,
  DEFAULT_EXPONENTIAL_BACKOFF,
  DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY,
  decorrelatedJitter,
  exponentialBackoff,
  exponentialDelays,
} from './backoff.js';

describe('exponentialDelays', () => {
  it('takes the keys options leave out from the defaults given, then from its own', () => {
    const subscription = { initialDelayMs: 100, factor: 2, maxDelayMs: 5000 };
    expect(exponentialDelays({ maxDelayMs: 5000 }, 3, subscription)).toEqual([100, 200, 400]);
    expect(exponentialDelays({ factor: 3 }, 3, subscription)).toEqual([100, 300, 900]);
    expect(exponentialDelays(undefined, 3, subscription)).toEqual([100, 200, 400]);
    expect(exponentialDelays({ maxDelayMs: 500 }, 3, { initialDelayMs: 200 })).toEqual([200, 400, 500]);
    expect(() => exponentialDelays({}, 1, { initialDelay: 5 } as never)).toThrow(/no option "initialDelay"/);
  });

  it('names the value it refuses, and says when it was not given but a default', () => {
    const refusal = (options: object | undefined, defaults?: object) => {
      try {
        exponentialDelays(options, 2, defaults);
      } catch (error) {
        return (error as Error).message;
      }
      return 'taken';
    };
    expect(refusal({ maxDelayMs: 500 })).toBe(
      'backoff maxDelayMs 500 must be a number >= initialDelayMs, here initialDelayMs 1000 (not given: the default)',
    );
    expect(refusal({ maxDelayMs: 50 }, { initialDelayMs: 100 })).toMatch(
      /initialDelayMs 100 \(not given: the default\)$/,
    );
    expect(refusal({ initialDelayMs: 1e9, factor: 10 })).toBe(
      'backoff maxDelayMs 60000 (not given: the default) must be a number >= initialDelayMs, here initialDelayMs 1000000000',
    );
    expect(refusal({ initialDelayMs: '2' } as never)).toBe(
      'backoff initialDelayMs "2" must be a number >= 0',
    );
    expect(refusal({ initialDelayMs: Number.NaN })).toBe('backoff initialDelayMs NaN must be a number >= 0');
    expect(refusal({ factor: 0.5 })).toBe('backoff factor 0.5 must be a number >= 1');
  });

  it('doubles from 1s with the defaults', () => {
    expect(exponentialDelays({}, 4)).toEqual([1000, 2000, 4000, 8000]);
    expect(exponentialDelays(undefined, 2)).toEqual([1000, 2000]);
  });

  it('caps every delay at maxDelayMs, 60s by default', () => {
    expect(exponentialDelays({}, 8)).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
    expect(exponentialDelays({ initialDelayMs: 100, factor: 3, maxDelayMs: 1000 }, 5)).toEqual([
      100, 300, 900, 1000, 1000,
    ]);
  });

  it('rounds delays to whole milliseconds', () => {
    expect(exponentialDelays({ initialDelayMs: 10, factor: 1.5 }, 4)).toEqual([10, 15, 23, 34]);
  });

  it('keeps delays constant with factor 1, and zero with initialDelayMs 0', () => {
    expect(exponentialDelays({ initialDelayMs: 250, factor: 1 }, 3)).toEqual([250, 250, 250]);
    expect(exponentialDelays({ initialDelayMs: 0 }, 3)).toEqual([0, 0, 0]);
  });

  it('gives no delays for no retries', () => {
    expect(exponentialDelays({}, 0)).toEqual([]);
  });

  it('exports its defaults', () => {
    expect(DEFAULT_EXPONENTIAL_BACKOFF).toEqual({ initialDelayMs: 1000, factor: 2, maxDelayMs: 60_000 });
  });

  it.each([
    ['a negative initialDelayMs', { initialDelayMs: -1 }],
    ['a NaN initialDelayMs', { initialDelayMs: Number.NaN }],
    ['a factor below 1', { factor: 0.5 }],
    ['a NaN factor', { factor: Number.NaN }],
    ['maxDelayMs below initialDelayMs', { initialDelayMs: 5000, maxDelayMs: 1000 }],
    ['a NaN maxDelayMs', { maxDelayMs: Number.NaN }],
    ['a factor given as a string', { factor: '2' as unknown as number }],
  ])('rejects %s with INVALID_OPTIONS', (_, options) => {
    let error: unknown;
    try {
      exponentialDelays(options, 3);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect(isInvalidOptionsError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
  });
});

/** A deterministic `random` that returns the given values in turn. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

function invalid(make: () => unknown): unknown {
  try {
    make();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('exponentialBackoff', () => {
  it('without jitter, grows from 100 ms by 2 up to 10 s', () => {
    const backoff = exponentialBackoff({ jitter: 'none' });
    expect([1, 2, 3, 4, 7, 8, 20].map((n) => backoff(n, 0))).toEqual([
      100, 200, 400, 800, 6400, 10_000, 10_000,
    ]);
  });

  it('with full jitter (the default), scales the capped delay by random in [0, 1)', () => {
    const backoff = exponentialBackoff({ random: sequence(0, 0.5, 0.999) });
    expect(backoff(1, 0)).toBe(0);
    expect(backoff(3, 0)).toBe(200);
    expect(backoff(30, 0)).toBe(9990);
  });

  it('keeps every jittered delay within [0, capped exponential]', () => {
    const backoff = exponentialBackoff({ initialDelayMs: 50, factor: 3, maxDelayMs: 2000 });
    for (let attempt = 1; attempt <= 10; attempt++) {
      const cap = Math.min(2000, 50 * 3 ** (attempt - 1));
      for (let i = 0; i < 200; i++) {
        const delay = backoff(attempt, 0);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThanOrEqual(cap);
      }
    }
  });

  it('exports its defaults, frozen', () => {
    expect(DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY).toMatchObject({
      initialDelayMs: 100,
      factor: 2,
      maxDelayMs: 10_000,
      jitter: 'full',
    });
    expect(Object.isFrozen(DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY)).toBe(true);
  });

  it.each([
    ['a negative initialDelayMs', { initialDelayMs: -1 }],
    ['a factor below 1', { factor: 0.9 }],
    ['maxDelayMs below initialDelayMs', { initialDelayMs: 500, maxDelayMs: 100 }],
    ['an infinite maxDelayMs', { maxDelayMs: Number.POSITIVE_INFINITY }],
    ['an unknown jitter', { jitter: 'equal' as 'full' }],
    ['a random that is no function', { random: 0.5 as unknown as () => number }],
    ['an initialDelayMs given as a string', { initialDelayMs: '100' as unknown as number }],
  ])('rejects %s with INVALID_OPTIONS', (_, options) => {
    expect(isInvalidOptionsError(invalid(() => exponentialBackoff(options)))).toBe(true);
  });
});

describe('decorrelatedJitter', () => {
  it('picks between initialDelayMs and 3 times the previous delay (initialDelayMs before the first)', () => {
    const backoff = decorrelatedJitter({ random: sequence(0, 0.999, 0.5) });
    expect(backoff(1, 0)).toBe(100); // random 0: the floor
    expect(backoff(2, 100)).toBe(300); // up to 3 * 100
    expect(backoff(3, 300)).toBe(500); // 100 + 0.5 * (900 - 100)
  });

  it('stays within [initialDelayMs, maxDelayMs] over a long chain', () => {
    const backoff = decorrelatedJitter({ initialDelayMs: 10, maxDelayMs: 1000 });
    let previous = 0;
    for (let attempt = 1; attempt <= 500; attempt++) {
      const delay = backoff(attempt, previous);
      expect(delay).toBeGreaterThanOrEqual(10);
      expect(delay).toBeLessThanOrEqual(Math.min(1000, Math.max(10, previous) * 3));
      previous = delay;
    }
  });

  it('caps at maxDelayMs', () => {
    expect(decorrelatedJitter({ random: () => 0.99 })(9, 9000)).toBe(10_000);
    expect(DEFAULT_DECORRELATED_JITTER).toMatchObject({ initialDelayMs: 100, maxDelayMs: 10_000 });
  });

  it('rejects maxDelayMs below initialDelayMs, and a random that is no function', () => {
    expect(
      isInvalidOptionsError(invalid(() => decorrelatedJitter({ initialDelayMs: 10, maxDelayMs: 5 }))),
    ).toBe(true);
    const random = 0.5 as unknown as () => number;
    expect(isInvalidOptionsError(invalid(() => decorrelatedJitter({ random })))).toBe(true);
    const initialDelayMs = '100' as unknown as number;
    expect(isInvalidOptionsError(invalid(() => decorrelatedJitter({ initialDelayMs })))).toBe(true);
  });
});

describe('constantBackoff', () => {
  it('waits the same delay before every retry', () => {
    const backoff = constantBackoff(250);
    expect([1, 2, 50].map((n) => backoff(n, 250))).toEqual([250, 250, 250]);
  });

  it('rejects a negative or infinite delay', () => {
    expect(isInvalidOptionsError(invalid(() => constantBackoff(-1)))).toBe(true);
    expect(isInvalidOptionsError(invalid(() => constantBackoff(Number.POSITIVE_INFINITY)))).toBe(true);
  });
});
