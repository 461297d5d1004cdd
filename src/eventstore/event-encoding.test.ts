import { describe, expect, it } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import { isInvalidEventError } from './errors.js';
import { EVENT_LIMITS, encodeJson, JsonEncodingProblem } from './event-encoding.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';

describe('strings over PostgreSQL’s jsonb limit', () => {
  // '€' is 3 bytes of UTF-8 in one UTF-16 unit: 268,435,458 bytes in a string of about 180 MB of
  // memory, the cheapest way past the limit. One such string for the whole test.
  const units = Math.floor(EVENT_LIMITS.jsonStringBytes / 3) + 1;

  it('refuses a string or key of more than 268,435,455 bytes in UTF-8, on every backend alike, and takes one of that many', {
    timeout: 120_000,
  }, async () => {
    expect(EVENT_LIMITS.jsonStringBytes).toBe(2 ** 28 - 1);
    const over = '€'.repeat(units);
    expect(Buffer.byteLength(over)).toBe(EVENT_LIMITS.jsonStringBytes + 3);

    // Stored on memory and SQLite before, a raw pg error 54000 on PostgreSQL.
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
    for (const [field, event] of [
      ['data', { type: 'Big', data: { note: over } }],
      ['metadata', { type: 'Big', data: 1, metadata: { note: over } }],
    ] as const) {
      const error = await store.append('s', [event]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isInvalidEventError(error), field).toBe(true);
      expect((error as Error).message).toMatch(
        new RegExp(`${field}: value at note is 268435458 bytes long in UTF-8, more than the 268435455`),
      );
    }
    expect(await store.readStream('s')).toEqual([]);
    await store.close();

    const key = encodeJson({ [over]: 1 });
    expect(key).toBeInstanceOf(JsonEncodingProblem);
    expect((key as JsonEncodingProblem).message).toMatch(/has a key that is 268435458 bytes long/);

    // Exactly at the limit (a slice, no copy of the string): kept.
    const atLimit = over.slice(1);
    expect(Buffer.byteLength(atLimit)).toBe(EVENT_LIMITS.jsonStringBytes);
    expect(encodeJson(atLimit) === atLimit).toBe(true);
  });
});
