import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createEventStore } from '../../connect/create-event-store.js';
import { silentLogger } from '../../logging/logger.js';
import { testEventStore } from '../../testing/event-store-contract.js';
import { waitFor } from '../../testing/wait.js';
import { EventStore } from '../store.js';
import { MemoryEventStoreBackend } from './memory-backend.js';

testEventStore('memory', {
  createStore: async () => new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger }),
});

describe('a memory store opened twice on one name', () => {
  it('still wakes the other store’s subscriptions at once after one of them closes', async () => {
    const name = `twice-${Date.now()}-${Math.random()}`;
    const a = new EventStore(MemoryEventStoreBackend.named(name), { logger: silentLogger });
    const c = new EventStore(MemoryEventStoreBackend.named(name), { logger: silentLogger });
    const seen: unknown[] = [];
    // Its safety poll is far off: only a wake-up delivers within the wait below.
    const sub = c.subscribe({ name: 'w', idlePollMs: 60_000 }, (e) => void seen.push(e.data));
    try {
      await sub.caughtUp();
      await a.append('s', [{ type: 'E', data: 'via a' }]);
      await waitFor(() => seen.length === 1, 'the wake-up from the append via a', 2000);
      await a.close();
      await c.append('s', [{ type: 'E', data: 'via c after a closed' }]);
      await waitFor(() => seen.length === 2, 'the wake-up after a closed', 2000);
      expect(seen).toEqual(['via a', 'via c after a closed']);
    } finally {
      await sub.close();
      await c.close();
    }
  });
});

describe('an append not yet resolved, on the embedded backends', () => {
  it('is not seen by reads called in the turn it was called in, on memory as on SQLite', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-unresolved-'));
    const stores = [
      await createEventStore({ url: 'memory://', logger: silentLogger }),
      await createEventStore({ url: `sqlite:${join(dir, 'events.db')}`, logger: silentLogger }),
    ];
    try {
      const seen: number[][] = [];
      for (const store of stores) {
        const appended = store.append('s', [{ type: 'E', data: {} }]);
        const [stream, all] = await Promise.all([store.readStream('s'), collect(store.readAll())]);
        await appended;
        seen.push([stream.length, all.length, (await store.readStream('s')).length]);
      }
      // Seen once the append resolved; not before (memory wrote it at the call: a test on it passed
      // code that reads before its write has resolved, which fails on SQLite and PostgreSQL).
      expect(seen).toEqual([
        [0, 0, 1],
        [0, 0, 1],
      ]);
    } finally {
      for (const store of stores) await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}
