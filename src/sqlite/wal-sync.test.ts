/**
 * A SQLite store's commits wait for the disk off the event loop: COMMIT writes the WAL
 * (`synchronous = NORMAL`), and what must survive a power cut resolves only once an fdatasync of the
 * WAL begun after its commit ended; what leaves the file (a relay's claim, a stream read) waits for
 * the syncs of what it read. The syncs here are held until the test lets them go, so each promise
 * is seen before and after its sync.
 */
import { randomUUID } from 'node:crypto';
import fs, { mkdtempSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import type { PreparedEvent } from '../eventstore/types.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';
import { WalSync } from './wal-sync.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-wal-sync-'));
let files = 0;
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function openBackend(path = join(dir, `store-${++files}.db`)) {
  const backend = new SqliteEventStoreBackend({ path });
  await backend.open();
  cleanups.push(() => backend.close());
  return { backend, path };
}

const event = (data: unknown = {}): PreparedEvent => ({ id: randomUUID(), type: 'Tick', data, metadata: {} });

interface HeldSync {
  readonly path: string;
  /** Runs the real fdatasync, then calls back. */
  readonly release: () => void;
  /** Calls back with an I/O error, syncing nothing. */
  readonly fail: () => void;
}

/** Every fdatasync of the process waits for the test: `syncs` lists them in call order. */
function holdSyncs() {
  const fdatasync = fs.fdatasync;
  const syncs: HeldSync[] = [];
  vi.spyOn(fs, 'fdatasync').mockImplementation(((fd: number, callback: (error: Error | null) => void) => {
    syncs.push({
      path: readlinkSync(`/proc/self/fd/${fd}`),
      release: () => fdatasync(fd, callback),
      fail: () => callback(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })),
    });
  }) as typeof fs.fdatasync);
  return {
    syncs,
    /** Lets every held sync (and every later one) go. */
    releaseAll() {
      vi.mocked(fs.fdatasync).mockRestore();
      for (const sync of syncs) sync.release();
    },
  };
}

/** Whether `promise` settled within a few turns of the event loop (while the syncs are held). */
async function settles(promise: Promise<unknown>, ms = 50): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((resolve) => setTimeout(resolve, ms));
  return settled;
}

/** The events of `stream` as another connection (another process) sees the file. */
function committed(path: string, stream: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return (
      db.prepare('SELECT count(*) AS n FROM ferry_events WHERE stream_id = ?').get(stream) as { n: number }
    ).n;
  } finally {
    db.close();
  }
}

describe('SQLite commits wait for a sync of the WAL off the event loop', () => {
  it('resolves an append only once an fdatasync of the WAL begun after its commit ended', async () => {
    const { backend, path } = await openBackend();
    const held = holdSyncs();
    const appended = backend.append('s-1', [event()], 'no_stream');
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    expect(held.syncs[0]!.path).toBe(`${path}-wal`);
    // Committed (another connection sees it), but not yet said to be: the disk has not answered.
    expect(committed(path, 's-1')).toBe(1);
    expect(await settles(appended)).toBe(false);
    held.releaseAll();
    await expect(appended).resolves.toMatchObject({ nextExpectedVersion: 0 });
  });

  it('keeps the event loop free while the disk syncs: appends called meanwhile commit together next', async () => {
    const { backend, path } = await openBackend();
    const held = holdSyncs();
    const first = backend.append('s-1', [event()], 'no_stream');
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    // Timers run while the sync is held: the loop is not blocked, and these queue for the next commit.
    const later = await Promise.all(
      Array.from(
        { length: 5 },
        (_, i) =>
          // In a box: a promise resolved with a promise would wait for it.
          new Promise<[Promise<unknown>]>((resolve) =>
            setTimeout(() => resolve([backend.append(`t-${i}`, [event()], 'no_stream')]), i * 5),
          ),
      ),
    ).then((boxes) => boxes.map(([appending]) => appending));
    const groupsBefore = backend.groupCommits;
    held.syncs[0]!.release();
    await first;
    await vi.waitFor(() => expect(held.syncs).toHaveLength(2));
    expect(backend.groupCommits).toBe(groupsBefore + 1);
    for (let i = 0; i < 5; i++) expect(committed(path, `t-${i}`)).toBe(1);
    expect(await settles(Promise.all(later))).toBe(false);
    held.releaseAll();
    await Promise.all(later);
  });

  it('resolves a unit of work only after the sync, and publishes its messages only after it', async () => {
    const { backend, path } = await openBackend();
    const bus = await createBus({ url: `memory://wal-sync-${++files}`, service: 's', logger: silentLogger });
    cleanups.push(() => bus.close());
    const received: string[] = [];
    await bus.subscribe('orders.placed', (message) => void received.push(message.id));
    const outbox = await createOutbox({ store: new EventStore(backend), bus, logger: silentLogger });
    cleanups.push(() => outbox.close());
    const held = holdSyncs();
    const unit = outbox.unitOfWork(async (work) => {
      await work.append('order-1', [{ type: 'Placed', data: {} }], { expectedVersion: 'no_stream' });
      await work.publish('orders.placed', {});
    });
    await vi.waitFor(() => expect(held.syncs.length).toBeGreaterThan(0));
    expect(committed(path, 'order-1')).toBe(1);
    expect(await settles(unit, 200)).toBe(false);
    // The relay was woken by the commit and looked (it polls too): the row waits for the disk.
    expect(received).toEqual([]);
    held.releaseAll();
    await unit;
    await vi.waitFor(() => expect(received).toHaveLength(1));
  });

  it('does not hand out a claim, or a stream read, before the sync of the commit it read', async () => {
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    const held = holdSyncs();
    const unit = storage.transaction(async (tx) => {
      await tx.enqueue([{ id: 'm-1', key: 'k', envelope: '{}', createdAt: Date.now(), dueAt: Date.now() }]);
      await tx.append('s-1', [event()], 'no_stream');
    });
    await vi.waitFor(() => expect(held.syncs.length).toBeGreaterThan(0));
    const claim = storage.claim('relay-a', Date.now(), 10, 30_000);
    const read = backend.readStream('s-1', {});
    expect(await settles(claim)).toBe(false);
    expect(await settles(read)).toBe(false);
    held.releaseAll();
    await unit;
    expect((await claim).map((row) => row.id)).toEqual(['m-1']);
    expect(await read).toHaveLength(1);
  });

  it('reads without a sync once everything read was synced; the relay bookkeeping waits for none', async () => {
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    await storage.transaction((tx) =>
      tx.enqueue([{ id: 'm-1', key: 'k', envelope: '{}', createdAt: Date.now(), dueAt: Date.now() }]),
    );
    await backend.append('s-1', [event()], 'no_stream');
    const held = holdSyncs();
    expect(await backend.readStream('s-1', {})).toHaveLength(1);
    const [row] = await storage.claim('relay-a', Date.now(), 10, 30_000);
    expect(row?.id).toBe('m-1');
    // Claims, holds and deletes are not waited for: losing one to a power cut only sends a message twice.
    expect(await storage.hold('relay-a', [row!.seq], Date.now() + 10_000)).toEqual([row!.seq]);
    expect(await storage.delivered('relay-a', [row!.seq])).toBe(1);
    expect(held.syncs).toEqual([]);
  });

  it('waits for a sync before reading what another process committed and has not synced yet', async () => {
    const { backend, path } = await openBackend();
    const { backend: other } = await openBackend(path);
    await backend.readStream('s-1', {});
    const held = holdSyncs();
    const appended = other.append('s-1', [event()], 'no_stream');
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    // This process's own sync (the other's is still held): the file's data version moved.
    const read = backend.readStream('s-1', {});
    await vi.waitFor(() => expect(held.syncs).toHaveLength(2));
    expect(await settles(read)).toBe(false);
    held.syncs[1]!.release();
    expect(await read).toHaveLength(1);
    held.releaseAll();
    await appended;
  });

  it('rejects an append whose sync failed with STORE_UNAVAILABLE (outcome unknown); the next one syncs again', async () => {
    const { backend } = await openBackend();
    const held = holdSyncs();
    const appended = backend.append('s-1', [event()], 'no_stream');
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    held.syncs[0]!.fail();
    const error = await appended.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(String((error as Error).message)).toMatch(/disk sync .* failed .*power cut is unknown/);
    held.releaseAll();
    // In the file: a retry of the same append is told the stream exists; a new one goes through.
    await expect(backend.append('s-1', [event()], 0)).resolves.toMatchObject({ nextExpectedVersion: 1 });
  });

  it.each([
    ['deleted', (path: string) => fs.rmSync(path)],
    [
      'replaced by another file',
      (path: string) => {
        writeFileSync(`${path}.new`, '');
        fs.renameSync(`${path}.new`, path);
      },
    ],
  ])(
    'rejects what commits once the database file was %s, and everything after: it would be lost at close',
    async (_how, move) => {
      const { backend, path } = await openBackend();
      await expect(backend.append('before', [event()], 'no_stream')).resolves.toMatchObject({
        nextExpectedVersion: 0,
      });
      move(path);
      for (const stream of ['after-1', 'after-2']) {
        const error = await backend.append(stream, [event()], 'no_stream').catch((e: unknown) => e);
        expect(error, stream).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'sqlite' });
        expect(String((error as Error).message)).toMatch(/deleted or replaced since the store opened it/);
      }
      // Nor is anything read handed out from the file that will be lost.
      await expect(backend.readStream('before', {})).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    },
  );

  it.each([
    [
      'the link it was opened through is pointed at another store file',
      () => {
        const real = join(dir, `linked-${++files}.db`);
        return { opened: join(dir, `link-to-${files}.db`), real, link: join(dir, `link-to-${files}.db`) };
      },
    ],
    [
      'a linked folder on its path is pointed at another folder (a deploy or restore switching `current`)',
      () => {
        const folder = mkdtempSync(join(dir, 'release-'));
        const link = join(dir, `current-${++files}`);
        return { opened: join(link, 'events.db'), real: folder, link };
      },
    ],
  ])('rejects what commits once %s: the path no longer names the file written to', async (_how, layout) => {
    const { opened, real, link } = layout();
    symlinkSync(real, link);
    const { backend } = await openBackend(opened);
    await expect(backend.append('before', [event()], 'no_stream')).resolves.toMatchObject({
      nextExpectedVersion: 0,
    });
    // Another store file (or a folder holding one) where the link now points, swapped in at once.
    const other = real.endsWith('.db') ? `${real}.other` : mkdtempSync(join(dir, 'release-'));
    const { backend: otherStore } = await openBackend(
      real.endsWith('.db') ? other : join(other, 'events.db'),
    );
    await otherStore.close();
    symlinkSync(other, `${link}.new`);
    fs.renameSync(`${link}.new`, link);

    const error = await backend.append('after', [event()], 'no_stream').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'sqlite' });
    expect(String((error as Error).message)).toContain(`${opened} was deleted or replaced`);
    // Whoever opens the path now finds no such stream: the store must not have said it kept it.
    const { backend: reopened } = await openBackend(opened);
    await expect(reopened.readStream('after', {})).resolves.toEqual([]);
  });

  it('syncs the WAL beside the file a symbolic link names (SQLite keeps it there), not beside the link', async () => {
    const real = join(dir, `real-${++files}.db`);
    const link = join(dir, `link-${files}.db`);
    await openBackend(real).then(({ backend }) => backend.close());
    symlinkSync(real, link);
    // A file where the link's WAL would be: it was synced instead, and the append resolved.
    writeFileSync(`${link}-wal`, '');
    const { backend } = await openBackend(link);
    const held = holdSyncs();
    const appended = backend.append('s-1', [event()], 'no_stream');
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    expect(held.syncs[0]!.path).toBe(`${real}-wal`);
    held.releaseAll();
    await expect(appended).resolves.toMatchObject({ nextExpectedVersion: 0 });
  });

  it('syncs the WAL of a relative path where it was opened, after a process.chdir()', async () => {
    const home = process.cwd();
    const elsewhere = mkdtempSync(join(dir, 'elsewhere-'));
    const name = `relative-${++files}.db`;
    process.chdir(dir);
    let backend: SqliteEventStoreBackend;
    try {
      ({ backend } = await openBackend(name));
      process.chdir(elsewhere);
      // Where the relative path now points: synced instead of the store's WAL, or ENOENT.
      writeFileSync(join(elsewhere, `${name}-wal`), '');
    } catch (error) {
      process.chdir(home);
      throw error;
    }
    try {
      const held = holdSyncs();
      const appended = backend.append('s-1', [event()], 'no_stream');
      await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
      expect(held.syncs[0]!.path).toBe(join(realpathSync(dir), `${name}-wal`));
      held.releaseAll();
      await expect(appended).resolves.toMatchObject({ nextExpectedVersion: 0 });
    } finally {
      process.chdir(home);
    }
  });

  it('gives up on a disk that never answers a sync busyTimeoutMs into close(): STORE_UNAVAILABLE, and close() ends', async () => {
    const path = join(dir, `hung-${++files}.db`);
    const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs: 300 });
    await backend.open();
    const held = holdSyncs(); // Never released: a sync that hangs.
    const appended = backend.append('s-1', [event()], 'no_stream');
    const outcome = appended.catch((error: unknown) => error);
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    const started = Date.now();
    await backend.close();
    expect(Date.now() - started).toBeLessThan(3000);
    const error = await outcome;
    expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect((error as Error).message).toMatch(/power cut is unknown/);
    vi.mocked(fs.fdatasync).mockRestore();
    // It was committed: the file has it.
    expect(committed(path, 's-1')).toBe(1);
  });

  it('gives up on nothing when close() takes longer than busyTimeoutMs but every sync ends in time', async () => {
    const path = join(dir, `slow-${++files}.db`);
    const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs: 300 });
    await backend.open();
    const fdatasync = fs.fdatasync;
    // Each sync takes 150 ms; close() waits 700 ms for a unit of work called before it, and for
    // the appends called before it: longer than busyTimeoutMs in all, every sync in time.
    vi.spyOn(fs, 'fdatasync').mockImplementation(((fd: number, callback: (error: Error | null) => void) => {
      setTimeout(() => fdatasync(fd, callback), 150);
    }) as typeof fs.fdatasync);
    const appends: Promise<unknown>[] = [backend.append('s-0', [event()], 'no_stream')];
    const storage = backend.outboxStorage();
    const unit = storage.transaction(async (tx) => {
      await tx.append('unit', [event()], 'no_stream');
      await new Promise((resolve) => setTimeout(resolve, 700));
      await tx.append('unit-later', [event()], 'no_stream');
    });
    for (let i = 1; i <= 3; i++) appends.push(backend.append(`s-${i}`, [event()], 'no_stream'));
    await new Promise((resolve) => setTimeout(resolve, 10));
    const started = Date.now();
    await backend.close();
    expect(Date.now() - started).toBeGreaterThan(300);
    // None was given up on: all committed and synced.
    expect((await Promise.allSettled([...appends, unit])).map((o) => o.status)).toEqual(
      Array(5).fill('fulfilled'),
    );
  });

  it('stores an idempotent answer before resolving, and replays it only once synced', async () => {
    const { backend } = await openBackend();
    const store = backend.idempotencyStore({ namespace: 'sync' });
    const begun = await store.begin('k-1', 'f-1');
    expect(begun).toMatchObject({ state: 'new' });
    const held = holdSyncs();
    const answer = { status: 201, headers: { 'content-type': 'application/json' }, body: '{}' };
    const stored = store.complete('k-1', answer, begun.state === 'new' ? begun.claim : undefined);
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    const replay = store.begin('k-1', 'f-1');
    expect(await settles(stored)).toBe(false);
    expect(await settles(replay)).toBe(false);
    held.releaseAll();
    await stored;
    expect(await replay).toMatchObject({ state: 'replay', response: { status: 201 } });
  });

  it('marks an inbox key done, for the message to be acked, only once synced', async () => {
    const { backend } = await openBackend();
    const inbox = backend.inbox();
    const claim = await inbox.begin('m-1');
    const held = holdSyncs();
    const done = claim!.complete();
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    expect(await settles(done)).toBe(false);
    held.releaseAll();
    await done;
    expect(await inbox.begin('m-1')).toBeNull();
  });
});

describe('WalSync', () => {
  /** A WalSync of a new file in WAL mode (its -wal written), open until the test ends. */
  function walSyncOfNewFile(dataVersion: () => bigint): WalSync {
    const path = join(dir, `bare-${++files}.db`);
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (x)');
    cleanups.push(async () => db.close());
    const sync = new WalSync(path, dataVersion);
    cleanups.push(() => sync.close());
    return sync;
  }

  it('shares one sync among the calls made while another runs, and never resolves on one begun before', async () => {
    const sync = walSyncOfNewFile(() => 0n);
    const held = holdSyncs();
    const first = sync.afterCommit();
    await vi.waitFor(() => expect(held.syncs).toHaveLength(1));
    const later = Array.from({ length: 5 }, () => sync.afterCommit());
    held.syncs[0]!.release();
    await first;
    await vi.waitFor(() => expect(held.syncs).toHaveLength(2));
    expect(await settles(Promise.all(later))).toBe(false);
    held.syncs[1]!.release();
    await Promise.all(later);
    expect(held.syncs).toHaveLength(2);
    // Nothing committed since the last sync began: durable() has nothing to wait for.
    await sync.durable();
    expect(held.syncs).toHaveLength(2);
    held.releaseAll();
  });

  it('syncs for durable() when another connection committed (data version) since the last sync began', async () => {
    let version = 1n;
    const sync = walSyncOfNewFile(() => version);
    await sync.durable(); // The first look: nothing known to be synced yet.
    const syncs = vi.spyOn(fs, 'fdatasync');
    await sync.durable();
    expect(syncs).not.toHaveBeenCalled();
    version = 2n;
    await sync.durable();
    expect(syncs).toHaveBeenCalledTimes(1);
  });
});
