import { describe, expect, it } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import { isInvalidEventError } from './errors.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';

// The checks run above the backends (prepareAppend, saveSnapshot): what holds on memory holds on each.

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('metadata whose toJSON or getter throws', () => {
  const thrown = new Error('no JSON for you');
  const cases: [string, () => object][] = [
    [
      'toJSON',
      () => ({
        toJSON: () => {
          throw thrown;
        },
      }),
    ],
    [
      'a getter',
      () => ({
        get user(): string {
          throw thrown;
        },
      }),
    ],
  ];
  it.each(cases)(
    '%s: refused with INVALID_EVENT naming metadata, the error as cause, as data is',
    async (_what, make) => {
      const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
      for (const field of ['data', 'metadata'] as const) {
        const event = { type: 'A', data: 1, [field]: make() };
        const error = await rejection(store.append('s', [event]));
        // Before: metadata's own error came through as it was, untyped.
        expect(isInvalidEventError(error), field).toBe(true);
        expect((error as Error).message).toContain(`${field}: cannot be encoded as JSON: no JSON for you`);
        expect((error as Error).cause).toBe(thrown);
      }
      expect(await store.readStream('s')).toEqual([]);
      await store.close();
    },
  );

  it('snapshot state whose toJSON throws: INVALID_EVENT with the error as cause', async () => {
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
    const state = {
      toJSON: () => {
        throw thrown;
      },
    };
    const error = await rejection(store.saveSnapshot({ streamId: 's', version: 0, schemaVersion: 1, state }));
    expect(isInvalidEventError(error)).toBe(true);
    expect((error as Error).message).toMatch(/snapshot state .*no JSON for you/);
    expect((error as Error).cause).toBe(thrown);
    await store.close();
  });
});
