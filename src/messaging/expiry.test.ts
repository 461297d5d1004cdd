import { describe, expect, it } from 'vitest';
import { isExpired } from './expiry.js';

describe('isExpired', () => {
  // The README: a subscriber that gets the message at its expiresat or later does not handle it.
  it('takes a message as expired from its expiresat on, not before', () => {
    const at = Date.UTC(2026, 0, 1, 12, 0, 0);
    const expiresat = new Date(at).toISOString();
    expect(isExpired(expiresat, at - 1)).toBe(false);
    expect(isExpired(expiresat, at)).toBe(true);
    expect(isExpired(expiresat, at + 1)).toBe(true);
  });

  it('never expires a message whose expiresat cannot be read (a foreign producer’s)', () => {
    expect(isExpired('tomorrow', Date.UTC(2100, 0, 1))).toBe(false);
  });
});
