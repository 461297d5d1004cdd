import { describe, expect, it } from 'vitest';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';

/**
 * A backend whose end is read late, as PostgreSQL's is: from a snapshot the server takes a round trip
 * after subscribe(), when an append sent right after it may have committed already.
 */
function lateEnd(): MemoryEventStoreBackend {
  const backend = new MemoryEventStoreBackend();
  const horizon = backend.horizon.bind(backend);
  backend.horizon = async () => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return horizon();
  };
  return backend;
}

describe("a from: 'end' subscription whose end is read late", () => {
  it('starts below the events appended through its store after subscribe(), and hands them out', async () => {
    const store = new EventStore(lateEnd());
    await store.append('s', [{ type: 'T', data: 'before' }]);
    const got: unknown[] = [];
    const sub = store.subscribe({ name: 'late', from: 'end' }, (e) => {
      got.push(e.data);
    });
    await store.append('s', [
      { type: 'T', data: 'after 1' },
      { type: 'T', data: 'after 2' },
    ]);
    await store.append('other', [{ type: 'T', data: 'after 3' }]);
    expect(await sub.lag()).toEqual({ position: 1n, behind: 3 });
    await sub.caughtUp();
    await sub.close();
    await store.close();
    expect(got).toEqual(['after 1', 'after 2', 'after 3']);
  });

  it('takes the end as read when the appends since subscribe() failed, or came after it was read', async () => {
    const store = new EventStore(lateEnd());
    await store.append('s', [{ type: 'T', data: 'before' }]);
    const got: unknown[] = [];
    const sub = store.subscribe({ name: 'late', from: 'end' }, (e) => {
      got.push(e.data);
    });
    await expect(
      store.append('s', [{ type: 'T', data: 'refused' }], { expectedVersion: 5 }),
    ).rejects.toThrow();
    expect(await sub.lag()).toEqual({ position: 1n, behind: 0 });
    await store.append('s', [{ type: 'T', data: 'later' }]);
    await sub.caughtUp();
    await sub.close();
    await store.close();
    expect(got).toEqual(['later']);
  });
});
