import { describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { DEFAULT_RETRY_BUDGET, RetryBudget } from './budget.js';

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let time = start;
  return { now: () => time, advance: (ms) => (time += ms) };
}

function grant(budget: RetryBudget, tries: number): number {
  let granted = 0;
  for (let i = 0; i < tries; i++) if (budget.tryRetry()) granted++;
  return granted;
}

describe('RetryBudget', () => {
  it('lets retries add at most `ratio` of the requests once traffic is above the floor', () => {
    const { now } = clock();
    const budget = new RetryBudget({ ratio: 0.2, minRetriesPerSecond: 1, windowMs: 10_000, now });
    for (let i = 0; i < 1000; i++) budget.recordRequest();
    expect(grant(budget, 500)).toBe(200);
    expect(budget.stats()).toEqual({ requests: 1000, retries: 200, limit: 200, available: 0 });
  });

  it('keeps a floor of minRetriesPerSecond as a rate, so that low traffic can still retry', () => {
    const { now, advance } = clock();
    const budget = new RetryBudget({ minRetriesPerSecond: 2, windowMs: 5000, now });
    budget.recordRequest();
    expect(grant(budget, 50)).toBe(2); // 20% of 1 request is 0.2: the floor's 2 at once
    advance(500);
    expect(grant(budget, 50)).toBe(1);
    advance(1000);
    expect(grant(budget, 50)).toBe(2);
    advance(60_000); // refilled up to one second's worth, never a whole window's
    expect(grant(budget, 50)).toBe(2);
  });

  it('does not spend a window of floor at once: a burst of failures gets the ratio, not 100 retries', () => {
    const { now } = clock();
    const budget = new RetryBudget({ now }); // 20%, 10/s, 10 s
    for (let i = 0; i < 200; i++) budget.recordRequest();
    expect(grant(budget, 200)).toBe(40);
    for (let i = 0; i < 5; i++) budget.recordRequest();
    expect(grant(budget, 100)).toBe(1); // 20% of 205 is 41; the floor's tokens went to the first 10
  });

  it('grows the allowance as requests are recorded', () => {
    const { now } = clock();
    const budget = new RetryBudget({ ratio: 0.5, minRetriesPerSecond: 0, now });
    expect(budget.tryRetry()).toBe(false);
    budget.recordRequest();
    budget.recordRequest();
    expect(budget.tryRetry()).toBe(true);
    expect(budget.tryRetry()).toBe(false);
  });

  it('forgets requests and retries that slid out of the window', () => {
    const { now, advance } = clock();
    const budget = new RetryBudget({ ratio: 0.1, minRetriesPerSecond: 0, windowMs: 10_000, now });
    for (let i = 0; i < 100; i++) budget.recordRequest();
    expect(grant(budget, 20)).toBe(10);
    advance(5000);
    for (let i = 0; i < 100; i++) budget.recordRequest();
    expect(grant(budget, 20)).toBe(10); // 200 requests, 10 retries already in the window
    advance(5500); // the first 100 requests and their 10 retries are out
    expect(budget.stats()).toMatchObject({ requests: 100, retries: 10, available: 0 });
    advance(5000); // everything is out
    expect(budget.stats()).toMatchObject({ requests: 0, retries: 0 });
  });

  it('recovers the floor after a long idle period at once (no timer involved)', () => {
    const { now, advance } = clock();
    const budget = new RetryBudget({ minRetriesPerSecond: 1, windowMs: 3000, now });
    expect(grant(budget, 10)).toBe(1);
    advance(60 * 60 * 1000);
    expect(grant(budget, 10)).toBe(1);
  });

  it('uses about one-second buckets: a retry stays counted for between 9 and 10 s of a 10 s window', () => {
    const { now, advance } = clock(0);
    const budget = new RetryBudget({ ratio: 0.1, minRetriesPerSecond: 0, windowMs: 10_000, now });
    advance(500);
    for (let i = 0; i < 10; i++) budget.recordRequest();
    expect(budget.tryRetry()).toBe(true); // the single retry 10 requests allow
    expect(budget.tryRetry()).toBe(false);
    advance(9000); // t = 9.5 s: still in the window
    expect(budget.stats()).toMatchObject({ requests: 10, retries: 1, available: 0 });
    advance(600); // t = 10.1 s: its bucket left
    expect(budget.stats()).toMatchObject({ requests: 0, retries: 0 });
  });

  it('exports frozen defaults: 20%, 10 retries/s, 10 s', () => {
    expect(DEFAULT_RETRY_BUDGET).toMatchObject({ ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000 });
    expect(Object.isFrozen(DEFAULT_RETRY_BUDGET)).toBe(true);
  });

  it.each([
    ['a negative ratio', { ratio: -0.1 }],
    ['a NaN minRetriesPerSecond', { minRetriesPerSecond: Number.NaN }],
    ['a zero windowMs', { windowMs: 0 }],
    ['an infinite windowMs', { windowMs: Number.POSITIVE_INFINITY }],
    ['a now that is no function', { now: 0 as unknown as () => number }],
  ])('rejects %s with INVALID_OPTIONS', (_, options) => {
    expect(() => new RetryBudget(options)).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    let error: unknown;
    try {
      new RetryBudget(options);
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error)).toBe(true);
  });
});
