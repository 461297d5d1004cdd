import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isEventStoreClosedError } from '../eventstore/errors.js';
import { prepareAppend } from '../eventstore/prepare-append.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { isUnitOfWorkUnsupportedError } from '../outbox/errors.js';
import { createOutbox } from '../outbox/outbox.js';
import { isOutboxCapable, type OutboxInsert, type StorageTransaction } from '../outbox/storage.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { waitFor } from '../testing/wait.js';
import { holdWriteLock } from './fixtures/write-lock-holder.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';
import { isStoreBusyError } from './store-busy.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-outbox-'));
let files = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

const T0 = Date.UTC(2026, 0, 1);

async function openBackend(
  path = join(dir, `outbox-${++files}.db`),
  busyTimeoutMs = 5000,
): Promise<{ backend: SqliteEventStoreBackend; store: EventStore; path: string }> {
  const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs });
  await backend.open();
  const store = new EventStore(backend);
  cleanups.push(() => store.close());
  return { backend, store, path };
}

function events(...types: string[]) {
  return prepareAppend(
    'ignored',
    types.map((type) => ({ type, data: { type } })),
    undefined,
  ).events;
}

function message(id: string, key = id): OutboxInsert {
  return { id, key, envelope: JSON.stringify({ id }), dueAt: T0, createdAt: T0 };
}

/** Resolves once `open` is called, and `release` lets the unit of work go on. */
function gate(): { open: Promise<void>; opened: () => void; release: () => void; released: Promise<void> } {
  let opened!: () => void;
  let release!: () => void;
  const open = new Promise<void>((resolve) => {
    opened = resolve;
  });
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { open, opened, release, released };
}

describe('SQLite outbox storage', () => {
  it('is the backend outbox, one instance', async () => {
    const { backend } = await openBackend();
    expect(isOutboxCapable(backend)).toBe(true);
    expect(backend.outboxStorage()).toBe(backend.outboxStorage());
  });

  it("commits the caller's SQL with appended events and outbox rows, and rolls all of it back together", async () => {
    const { backend, store } = await openBackend();
    const storage = backend.outboxStorage();
    await storage.transaction(async (tx) => {
      await tx.query('CREATE TABLE read_orders (id TEXT PRIMARY KEY, total INTEGER NOT NULL)');
    });
    const rows = await storage.transaction(async (tx) => {
      await tx.append('order-1', events('OrderPlaced'), 'no_stream');
      expect(await tx.query('INSERT INTO read_orders (id, total) VALUES (?, ?)', ['order-1', 42])).toEqual(
        [],
      );
      await tx.enqueue([message('m-1')]);
      // A statement that returns rows resolves them, integers as numbers (as PostgreSQL's integer
      // columns: the same handler code on both), a bigint only past what a number holds exactly.
      await tx.query('INSERT INTO read_orders (id, total) VALUES (?, ?)', ['huge', 2n ** 60n]);
      return tx.query('SELECT id, total, total * 2 AS twice FROM read_orders ORDER BY id');
    });
    expect(rows).toEqual([
      { id: 'huge', total: 2n ** 60n, twice: 2n ** 61n },
      { id: 'order-1', total: 42, twice: 84 },
    ]);
    await storage.transaction((tx) => tx.query("DELETE FROM read_orders WHERE id = 'huge'"));

    const boom = new Error('boom');
    const thrown = await storage
      .transaction(async (tx) => {
        await tx.append('order-2', events('OrderPlaced'), 'no_stream');
        await tx.query('INSERT INTO read_orders (id, total) VALUES (?, ?)', ['order-2', 7]);
        await tx.query('UPDATE read_orders SET total = total + 1');
        await tx.enqueue([message('m-2')]);
        throw boom;
      })
      .catch((error: unknown) => error);
    expect(thrown).toBe(boom);

    expect(await store.readStream('order-2')).toEqual([]);
    expect((await store.readStream('order-1')).map((e) => e.type)).toEqual(['OrderPlaced']);
    const after = await storage.transaction((tx) =>
      tx.query('SELECT id, total FROM read_orders ORDER BY id'),
    );
    expect(after).toEqual([{ id: 'order-1', total: 42 }]);
    expect((await storage.claim('relay', T0, 10, 30_000)).map((r) => r.id)).toEqual(['m-1']);
  });

  it('keeps a unit of work usable after a call that failed: the failed call leaves nothing of itself, the rest commits', async () => {
    const { backend, store } = await openBackend();
    const storage = backend.outboxStorage();
    await storage.transaction(async (tx) => {
      await tx.query('CREATE TABLE seen (id TEXT PRIMARY KEY)');
      await tx.enqueue([message('taken')]);
      await tx.saveSaga(
        { saga: 'order', id: 's', state: '{}', version: 1, status: 'active', updatedAt: T0 },
        0,
      );
      await tx.append('s', events('A'), 'no_stream');
    });
    await storage.transaction(async (tx) => {
      await tx.query('INSERT INTO seen (id) VALUES (?)', ['a']);
      await expect(tx.query('INSERT INTO seen (id) VALUES (?), (?)', ['b', 'a'])).rejects.toThrow(/UNIQUE/);
      // A batch with one id the outbox holds: none of the batch is kept, not even the rows before it.
      await expect(tx.enqueue([message('fresh'), message('taken')])).rejects.toMatchObject({
        code: 'DUPLICATE_MESSAGE_ID',
        id: 'taken',
      });
      await expect(tx.append('s', events('B', 'C'), 'no_stream')).rejects.toThrow();
      await expect(
        tx.saveSaga({ saga: 'order', id: 's', state: '{}', version: 1, status: 'active', updatedAt: T0 }, 0),
      ).rejects.toThrow();
      await tx.enqueue([message('after')]);
      await tx.append('s', events('D'), 0);
    });
    expect(await storage.transaction((tx) => tx.query('SELECT id FROM seen'))).toEqual([{ id: 'a' }]);
    expect((await storage.claim('relay', T0, 10, 30_000)).map((r) => r.id)).toEqual(['taken', 'after']);
    expect((await store.readStream('s')).map((e) => e.type)).toEqual(['A', 'D']);
  });

  it('gives the unit of work its own better-sqlite3 connection as client, unusable once the work ended', async () => {
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    let kept!: StorageTransaction;
    const count = await storage.transaction(async (tx) => {
      kept = tx;
      const db = tx.client as import('better-sqlite3').Database;
      expect(db.inTransaction).toBe(true);
      return db.prepare('SELECT count(*) AS n FROM ferry_events').get();
    });
    expect(count).toEqual({ n: 0n });
    const late = await kept.enqueue([message('late')]).catch((error: unknown) => error);
    expect(isUnitOfWorkUnsupportedError(late)).toBe(true);
    expect(await storage.backlog(T0)).toMatchObject({ pending: 0 });
  });

  it('keeps a unit of work open across awaits apart from the same store: its appends and reads neither see it nor join it', async () => {
    const { backend, store } = await openBackend();
    const storage = backend.outboxStorage();
    await store.append('before', [{ type: 'Seeded', data: {} }]);

    // A unit of work that commits, while the store appends and reads beside it.
    const g = gate();
    const work = storage.transaction(async (tx) => {
      await tx.append('inside', events('Inside'), 'no_stream');
      await tx.enqueue([message('m-inside')]);
      g.opened();
      await g.released;
    });
    await g.open;
    const outside = store.append('outside', [{ type: 'Outside', data: {} }]);
    // No dirty reads while it is open.
    expect(await store.readStream('inside')).toEqual([]);
    expect((await store.readStream('before')).map((e) => e.type)).toEqual(['Seeded']);
    expect(await storage.backlog(T0)).toMatchObject({ pending: 0 });
    expect(await storage.claim('relay', T0, 10, 30_000)).toEqual([]);
    g.release();
    await work;
    await outside;
    expect((await store.readStream('inside')).map((e) => e.type)).toEqual(['Inside']);
    expect((await store.readStream('outside')).map((e) => e.type)).toEqual(['Outside']);

    // A unit of work that rolls back: the store's append made meanwhile stays.
    const h = gate();
    const failing = storage.transaction(async (tx) => {
      await tx.append('inside-2', events('Inside'), 'no_stream');
      h.opened();
      await h.released;
      throw new Error('rolled back');
    });
    await h.open;
    const beside = store.append('outside-2', [{ type: 'Outside', data: {} }]);
    h.release();
    await expect(failing).rejects.toThrow('rolled back');
    await beside;
    expect(await store.readStream('inside-2')).toEqual([]);
    expect((await store.readStream('outside-2')).map((e) => e.type)).toEqual(['Outside']);
    // Positions follow commit order: the unit of work's event came first.
    const all = (await backend.readAfter(0n, 100, undefined)).events.map((e) => e.streamId);
    expect(all).toEqual(['before', 'inside', 'outside', 'outside-2']);
  });

  it("wakes the store's watchers as soon as a unit of work that appended commits", async () => {
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    let wakes = 0;
    const stop = backend.watch(() => {
      wakes++;
    });
    cleanups.push(async () => stop());
    await storage.transaction((tx) => tx.append('s', events('A'), 'no_stream'));
    // No timer can run between the commit and this microtask: the data_version poll did not wake it.
    await new Promise<void>((resolve) => queueMicrotask(resolve));
    expect(wakes).toBe(1);
  });

  it('wakes watch() listeners when another connection commits outbox rows', async () => {
    const { backend, path } = await openBackend();
    const { backend: other } = await openBackend(path);
    let wakes = 0;
    const stop = backend.outboxStorage().watch(() => {
      wakes++;
    });
    cleanups.push(async () => stop());
    await other.outboxStorage().transaction((tx) => tx.enqueue([message('from-other')]));
    await waitFor(() => wakes > 0, 'a wake-up after the other connection committed');
  });

  it('never hands the same row to relays of several processes claiming at once', async () => {
    const { backend, path } = await openBackend(undefined, 10_000);
    const storage = backend.outboxStorage();
    const ids = Array.from({ length: 300 }, (_, i) => `m-${i}`);
    await storage.transaction((tx) => tx.enqueue(ids.map((id, i) => message(id, `key-${i % 60}`))));
    const startAt = String(Date.now() + 1500);
    const fixture = fileURLToPath(new URL('./fixtures/outbox-claimer.ts', import.meta.url));
    const claimed: string[] = [];
    const done: string[] = [];
    const children = ['child-a', 'child-b'].map((owner) => {
      const child = spawnFixture(fixture, {
        FERRY_SQLITE_PATH: path,
        FERRY_OWNER: owner,
        FERRY_START_AT: startAt,
      });
      const exited = once(child, 'exit');
      cleanups.push(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
      });
      onLines(child, (line) => {
        if (line === 'done') done.push(owner);
        else claimed.push(line.slice('claimed '.length));
      });
      return exited;
    });
    // This process claims too, from the same start.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Number(startAt) - Date.now())));
    for (let rounds = 0; rounds < 10_000; rounds++) {
      const rows = await storage.claim('parent', Date.now(), 3, 60_000);
      if (rows.length === 0) {
        if ((await storage.backlog(Date.now())).pending === 0) break;
        await new Promise(setImmediate);
        continue;
      }
      claimed.push(...rows.map((r) => r.id));
      await storage.delivered(
        'parent',
        rows.map((r) => r.seq),
      );
    }
    await Promise.all(children);
    expect(done.sort()).toEqual(['child-a', 'child-b']);
    expect(claimed.sort()).toEqual([...ids].sort());
  }, 30_000);

  it('fails a unit of work with STORE_BUSY while another process holds the write lock, the loop running meanwhile', async () => {
    const { backend, path } = await openBackend(undefined, 400);
    const storage = backend.outboxStorage();
    await storage.transaction((tx) => tx.enqueue([message('waiting')]));
    await holdWriteLock(path, 8000, cleanups);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    let ran = false;
    const started = Date.now();
    const error = await storage
      .transaction(async () => {
        ran = true;
      })
      .catch((e: unknown) => e);
    const waited = Date.now() - started;
    // A claim with a row to hand out needs the lock too.
    const claimError = await storage.claim('relay', T0, 10, 30_000).catch((e: unknown) => e);
    clearInterval(timer);
    expect(isStoreBusyError(error), String(error)).toBe(true);
    expect(ran).toBe(false);
    expect(waited).toBeGreaterThanOrEqual(390);
    expect(ticks).toBeGreaterThan(20);
    expect(isStoreBusyError(claimError), String(claimError)).toBe(true);
  }, 30_000);

  it('waits for the lock of another process, then commits', async () => {
    const { backend, store, path } = await openBackend();
    const storage = backend.outboxStorage();
    const holder = await holdWriteLock(path, 1000, cleanups);
    const started = Date.now();
    let lockedAt = 0;
    await storage.transaction(async (tx) => {
      lockedAt = Date.now();
      await tx.append('s', events('A'), 'no_stream');
    });
    // The work ran only once the other process let the lock go (it held it for a second).
    expect(lockedAt - started).toBeGreaterThan(500);
    expect(await store.readStream('s')).toHaveLength(1);
    await waitFor(holder.released, 'the other process to report its commit');
  }, 20_000);

  it('refuses store.append inside a unit of work on the same store at once, instead of waiting for its own lock', async () => {
    // Must not be lost: the unit of work itself, which goes on and commits what it wrote through work.
    const { store } = await openBackend(undefined, 5000);
    const bus = await createBus({
      url: `memory://sqlite-nested-${++files}`,
      service: 's',
      logger: silentLogger,
    });
    cleanups.push(() => bus.close());
    const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: false });
    cleanups.push(() => outbox.close());
    await outbox.unitOfWork(async (work) => {
      // Not STORE_BUSY after busyTimeoutMs (5 s), waiting for the lock this very unit holds.
      const error = await store.append('nested', [{ type: 'Inside', data: {} }]).catch((e: unknown) => e);
      expect(isUnitOfWorkUnsupportedError(error)).toBe(true);
      expect((error as Error).message).toMatch(/work\.append/);
      await work.append('nested', [{ type: 'ThroughWork', data: {} }]);
    });
    expect((await store.readStream('nested')).map((e) => e.type)).toEqual(['ThroughWork']);
    // Outside a unit of work (and after one ended) the store appends as ever.
    await store.append('nested', [{ type: 'Outside', data: {} }]);
    expect(await store.readStream('nested')).toHaveLength(2);
  });

  it("has no outbox on ':memory:' (one connection only): UNIT_OF_WORK_UNSUPPORTED at once", async () => {
    const backend = new SqliteEventStoreBackend({ path: ':memory:' });
    await backend.open();
    cleanups.push(() => backend.close());
    expect(() => backend.outboxStorage()).toThrow(
      expect.objectContaining({ code: 'UNIT_OF_WORK_UNSUPPORTED' }),
    );
    const bus = await createBus({
      url: `memory://sqlite-mem-${Date.now()}`,
      service: 'svc',
      logger: silentLogger,
    });
    cleanups.push(() => bus.close());
    await expect(
      createOutbox({ store: new EventStore(backend), bus, logger: silentLogger }),
    ).rejects.toMatchObject({
      code: 'UNIT_OF_WORK_UNSUPPORTED',
    });
  });

  it('rejects units of work before open() and after close() with EVENT_STORE_CLOSED', async () => {
    const path = join(dir, `outbox-${++files}.db`);
    const backend = new SqliteEventStoreBackend({ path });
    const storage = backend.outboxStorage();
    expect(isEventStoreClosedError(await storage.transaction(async () => 1).catch((e: unknown) => e))).toBe(
      true,
    );
    await backend.open();
    expect(await storage.transaction(async () => 1)).toBe(1);
    await backend.close();
    expect(isEventStoreClosedError(await storage.transaction(async () => 1).catch((e: unknown) => e))).toBe(
      true,
    );
    expect(isEventStoreClosedError(await storage.claim('r', T0, 1, 1000).catch((e: unknown) => e))).toBe(
      true,
    );
  });
});
