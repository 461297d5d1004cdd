import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createEventStore } from '../connect/create-event-store.js';
import { EventStore } from '../eventstore/store.js';
import type { RecordedEvent } from '../eventstore/types.js';
import { silentLogger } from '../logging/logger.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { testEventStore } from '../testing/event-store-contract.js';
import { waitFor } from '../testing/wait.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-'));
let files = 0;
const freshPath = () => join(dir, `events-${++files}.db`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function openStore(path: string): Promise<EventStore> {
  const backend = new SqliteEventStoreBackend({ path });
  await backend.open();
  return new EventStore(backend, { logger: silentLogger });
}

testEventStore('sqlite', { createStore: () => openStore(freshPath()) });

async function readAll(store: EventStore): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for await (const event of store.readAll()) out.push(event);
  return out;
}

const fixture = fileURLToPath(new URL('./fixtures/append-process.ts', import.meta.url));

/** Starts the appending process on `path`; `onAppend` gets each append it reports as resolved. */
function spawnAppender(path: string, onAppend: (streamId: string, nextExpectedVersion: number) => void) {
  const child = spawnFixture(fixture, { FERRY_SQLITE_PATH: path });
  const exited = once(child, 'exit');
  onLines(child, (line) => {
    const match = /^appended (\S+) (\d+)$/.exec(line);
    if (match !== null) onAppend(match[1]!, Number(match[2]));
  });
  return {
    async kill(): Promise<void> {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('SQLite event store backend', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
  });
  async function tracked(store: Promise<EventStore>): Promise<EventStore> {
    const opened = await store;
    cleanups.push(() => opened.close());
    return opened;
  }

  it('keeps every append that resolved before its process was SIGKILLed, and no part of any other', async () => {
    // Must not be lost: every append the child printed, which it did only after the append resolved.
    // Must not appear: part of a batch (each append is 10 events, so every stream holds a multiple of 10).
    const path = freshPath();
    const printed = new Map<string, number>();
    let count = 0;
    const child = spawnAppender(path, (streamId, version) => {
      printed.set(streamId, Math.max(version, printed.get(streamId) ?? -1));
      count++;
    });
    try {
      await waitFor(
        () => count >= 200,
        () => `200 appends from the child (${count} so far)`,
        30_000,
      );
    } finally {
      await child.kill();
    }

    const store = await tracked(openStore(path));
    const all = await readAll(store);
    for (let i = 1; i < all.length; i++) expect(all[i]!.position > all[i - 1]!.position).toBe(true);
    const streams = new Map<string, number[]>();
    for (const event of all)
      streams.set(event.streamId, [...(streams.get(event.streamId) ?? []), event.version]);
    for (const versions of streams.values()) {
      expect(versions.length % 10).toBe(0);
      expect(versions).toEqual(versions.map((_, i) => i));
    }
    for (const [streamId, version] of printed)
      expect(streams.get(streamId)?.length ?? 0).toBeGreaterThan(version);
  }, 60_000);

  it('lets two processes create and write the same new file at once', async () => {
    const path = freshPath();
    const counts = [0, 0];
    const children = counts.map((_, i) => spawnAppender(path, () => void counts[i]!++));
    try {
      await waitFor(
        () => counts.every((n) => n >= 20),
        () => `20 appends from each child (${counts.join(', ')})`,
        30_000,
      );
    } finally {
      await Promise.all(children.map((child) => child.kill()));
    }
    const store = await tracked(openStore(path));
    const all = await readAll(store);
    expect(all.length).toBeGreaterThanOrEqual(400);
    expect(all.length % 10).toBe(0);
  }, 60_000);

  it('wakes a subscription on another connection to the same file when events are appended', async () => {
    const path = freshPath();
    const writer = await tracked(openStore(path));
    const reader = await tracked(openStore(path));
    const seen: string[] = [];
    // With an idle poll this long, only the data_version poller can deliver the event in time.
    const sub = reader.subscribe({ name: 'mirror', idlePollMs: 60_000 }, (e) => void seen.push(e.type));
    await sub.caughtUp();
    await writer.append('x', [{ type: 'FromWriter', data: 1 }]);
    await waitFor(() => seen.length === 1, 'the event appended through the other connection', 5000);
    expect(seen).toEqual(['FromWriter']);
  });

  it('resumes a subscription from the checkpoint another store saved in the same file', async () => {
    const path = freshPath();
    const first = await openStore(path);
    const other = await tracked(openStore(path));
    await first.append('s', [
      { type: 'A', data: 1 },
      { type: 'B', data: 2 },
    ]);
    const before: string[] = [];
    first.subscribe({ name: 'projector' }, (e) => void before.push(e.type));
    await waitFor(() => before.length === 2, 'the first run');
    await first.close();
    await other.append('s', [{ type: 'C', data: 3 }]);

    const reopened = await tracked(openStore(path));
    const after: string[] = [];
    const sub = reopened.subscribe({ name: 'projector' }, (e) => void after.push(e.type));
    await waitFor(() => after.length === 1, 'the resumed run');
    await sub.caughtUp();
    expect(after).toEqual(['C']);
  });

  it('opens through createEventStore with a sqlite: URL, creating missing directories', async () => {
    const path = join(dir, 'nested', 'deeper', 'events.db');
    const store = await tracked(createEventStore({ url: `sqlite:${path}`, logger: silentLogger }));
    expect(store.backend.name).toBe('sqlite');
    await store.append('u', [{ type: 'Created', data: {} }]);
    expect(existsSync(path)).toBe(true);
    expect((await store.readStream('u')).map((e) => e.type)).toEqual(['Created']);
  });

  it('reopens a file without migrating it again, and works in memory', async () => {
    const path = freshPath();
    const first = await openStore(path);
    await first.append('k', [{ type: 'Kept', data: 1 }]);
    await first.close();
    await first.close();
    const again = await tracked(openStore(path));
    expect((await again.readStream('k')).map((e) => e.type)).toEqual(['Kept']);

    const memory = await tracked(openStore(':memory:'));
    await memory.append('m', [{ type: 'M', data: 1 }]);
    expect(await memory.backend.horizon()).toBe(1n);
  });
});
