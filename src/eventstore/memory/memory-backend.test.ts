import { describe, expect, it } from 'vitest';
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
