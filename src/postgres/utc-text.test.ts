import { describe, expect, it } from 'vitest';
import { utcTextToIso } from './postgres-backend.js';

describe('utcTextToIso', () => {
  it('turns PostgreSQL UTC timestamps into RFC 3339 with milliseconds', () => {
    expect(utcTextToIso('2026-11-30 10:12:13.123456+00')).toBe('2026-11-30T10:12:13.123Z');
    expect(utcTextToIso('2026-11-30 10:12:13.1+00')).toBe('2026-11-30T10:12:13.100Z');
    expect(utcTextToIso('2026-11-30 10:12:13+00')).toBe('2026-11-30T10:12:13.000Z');
  });

  it('falls back to Date parsing for anything else', () => {
    expect(utcTextToIso('2026-11-30 11:12:13.5+01')).toBe('2026-11-30T10:12:13.500Z');
  });
});
