import { isInvalidOptionsError } from 'ferry';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RESTART_BACKOFF, restartBackoff } from './restart-backoff.js';

describe('restartBackoff', () => {
  it('defaults to 250 ms doubling up to 10 s, reset after 30 s up', () => {
    const backoff = restartBackoff({ random: () => 0 });
    expect([1, 2, 3, 4, 5, 6, 7, 8, 20].map((crash) => backoff.delayMs(crash))).toEqual([
      250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000,
    ]);
    expect(backoff.resetAfterMs).toBe(30_000);
    expect(DEFAULT_RESTART_BACKOFF).toMatchObject({ initialDelayMs: 250, maxDelayMs: 10_000, jitter: 0.2 });
  });

  it('takes up to `jitter` of each delay off at random, never more than the cap', () => {
    const lowest = restartBackoff({ random: () => 0.999_999 });
    const highest = restartBackoff({ random: () => 0 });
    expect(lowest.delayMs(1)).toBe(200);
    expect(lowest.delayMs(10)).toBe(8000);
    expect(highest.delayMs(10)).toBe(10_000);
    const spread = new Set(Array.from({ length: 50 }, () => restartBackoff().delayMs(3)));
    expect(spread.size).toBeGreaterThan(1);
    for (const delay of spread) expect(delay >= 800 && delay <= 1000).toBe(true);
  });

  it('refuses a jitter outside [0, 1], a negative reset and what Ferry’s exponential backoff refuses', () => {
    const refused = (options: Parameters<typeof restartBackoff>[0]): boolean => {
      try {
        restartBackoff(options);
        return false;
      } catch (error) {
        return isInvalidOptionsError(error);
      }
    };
    expect(refused({ jitter: -0.1 })).toBe(true);
    expect(refused({ jitter: 1.5 })).toBe(true);
    expect(refused({ resetAfterMs: -1 })).toBe(true);
    expect(refused({ initialDelayMs: 20_000 })).toBe(true);
    expect(refused({ factor: 0.5 })).toBe(true);
    expect(refused({ jitter: 1, initialDelayMs: 0, maxDelayMs: 0 })).toBe(false);
  });
});
