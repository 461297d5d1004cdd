import { describe, expect, it } from 'vitest';
import { InvalidOptionsError, isInvalidOptionsError } from '../errors/ferry-error.js';
import { DEFAULT_EXPONENTIAL_BACKOFF, exponentialDelays } from './backoff.js';

describe('exponentialDelays', () => {
  it('doubles from 1s with the defaults', () => {
    expect(exponentialDelays({}, 4)).toEqual([1000, 2000, 4000, 8000]);
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
