import { describe, expect, it, vi } from 'vitest';
import { uuidv7 } from './uuidv7.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('uuidv7', () => {
  it('has the RFC 9562 layout: version 7, variant 10, and the creation time in its first 48 bits', () => {
    const before = Date.now();
    const id = uuidv7();
    const after = Date.now();
    expect(id).toMatch(UUID_V7);
    const ms = Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
  });

  it('is unique and strictly increasing, also for many ids within one millisecond', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(new Date('2026-11-30T12:00:00.000Z'));
      const ids = Array.from({ length: 50_000 }, () => uuidv7());
      vi.setSystemTime(new Date('2026-11-30T12:00:00.001Z'));
      ids.push(...Array.from({ length: 1000 }, () => uuidv7()));
      expect(new Set(ids).size).toBe(ids.length);
      for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
      expect(ids.every((id) => UUID_V7.test(id))).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });

  it('stays increasing when the clock steps back, and takes the time a caller already read', () => {
    const now = Date.now() + 60_000;
    const first = uuidv7(now);
    expect(Number.parseInt(first.replace(/-/g, '').slice(0, 12), 16)).toBe(now);
    const stepped = uuidv7(now - 5000);
    expect(stepped > first).toBe(true);
    expect(stepped.slice(0, 13)).toBe(first.slice(0, 13));
    const later = uuidv7(now + 1);
    expect(Number.parseInt(later.replace(/-/g, '').slice(0, 12), 16)).toBe(now + 1);
  });
});
