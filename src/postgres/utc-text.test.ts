import { describe, expect, it } from 'vitest';
import { utcTextToIso } from './postgres-backend.js';

describe('utcTextToIso', () => {
  it('turns PostgreSQL UTC timestamps into RFC 3339 with milliseconds', () => {
    expect(utcTextToIso('2026-11-30 10:12:13.123456+00')).toBe('2026-11-30T10:12:13.123Z');
    expect(utcTextToIso('2026-11-30 10:12:13.1+00')).toBe('2026-11-30T10:12:13.100Z');
    expect(utcTextToIso('2026-11-30 10:12:13+00')).toBe('2026-11-30T10:12:13.000Z');
  });

  it('keeps microseconds when asked for six digits, and at least three digits', () => {
    expect(utcTextToIso('2026-11-30 10:12:13.123456+00', 6)).toBe('2026-11-30T10:12:13.123456Z');
    expect(utcTextToIso('2026-11-30 10:12:13.1+00', 6)).toBe('2026-11-30T10:12:13.100Z');
    expect(utcTextToIso('2026-11-30 10:12:13.1234+00', 6)).toBe('2026-11-30T10:12:13.1234Z');
  });

  it('gives infinity as it is, BC dates and years past 9999 as ISO expanded years, and never throws', () => {
    expect(utcTextToIso('infinity')).toBe('infinity');
    expect(utcTextToIso('-infinity')).toBe('-infinity');
    expect(utcTextToIso('0001-01-01 00:00:00+00 BC')).toBe('0000-01-01T00:00:00.000Z');
    expect(utcTextToIso('4713-01-01 00:00:00+00 BC')).toBe('-004712-01-01T00:00:00.000Z');
    expect(utcTextToIso('294276-12-31 23:59:59.999999+00')).toBe('+294276-12-31T23:59:59.999Z');
    expect(utcTextToIso('not a time')).toBe('not a time');
  });

  it('takes any offset off, seconds included, keeping the digits asked for', () => {
    expect(utcTextToIso('2024-01-02 08:34:05.678912+05:30', 6)).toBe('2024-01-02T03:04:05.678912Z');
    expect(utcTextToIso('1900-01-01 00:19:32+00:19:32')).toBe('1900-01-01T00:00:00.000Z');
    expect(utcTextToIso('2024-01-01 22:00:00-03', 6)).toBe('2024-01-02T01:00:00.000Z');
    expect(utcTextToIso('0044-03-15 12:00:00+05:41:16 BC')).toBe('-000043-03-15T06:18:44.000Z');
  });

  it('gives text of another DateStyle as it is, never as another date', () => {
    expect(utcTextToIso('02/01/2024 03:04:05.678912 UTC')).toBe('02/01/2024 03:04:05.678912 UTC');
    expect(utcTextToIso('Tue 02 Jan 03:04:05.678912 2024 UTC')).toBe('Tue 02 Jan 03:04:05.678912 2024 UTC');
  });

  it('falls back to Date parsing for anything else', () => {
    expect(utcTextToIso('2026-11-30 11:12:13.5+01')).toBe('2026-11-30T10:12:13.500Z');
  });
});
