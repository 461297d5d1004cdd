import fs, { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { testIdempotencyStore } from '../testing/idempotency-store-contract.js';
import { waitFor } from '../testing/wait.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';
import { isStoreBusyError } from './store-busy.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-idempotency-'));
let files = 0;
const backends: SqliteEventStoreBackend[] = [];
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function open(path: string, busyTimeoutMs?: number): Promise<SqliteEventStoreBackend> {
  const backend = new SqliteEventStoreBackend(
    busyTimeoutMs === undefined ? { path } : { path, busyTimeoutMs },
  );
  await backend.open();
  backends.push(backend);
  return backend;
}

const answer = { status: 201, headers: { 'content-type': 'application/json' }, body: '{}' };

testIdempotencyStore(
  'sqlite',
  {
    async create(options = {}) {
      const path = join(dir, `store-${++files}.db`);
      const backend = await open(path);
      return {
        store: backend.idempotencyStore(options),
        sibling: async (o = {}) => (await open(path)).idempotencyStore(o),
        async restart() {
          await backend.close();
          return (await open(path)).idempotencyStore(options);
        },
        close: () => backend.close(),
      };
    },
  },
  { durable: true },
);

describe('SqliteIdempotencyStore', () => {
  it('commits a claim without waiting for the disk, and resolves an answer only after a sync of the WAL', async () => {
    const store = (await open(join(dir, `sync-${++files}.db`))).idempotencyStore({ namespace: 'sync' });
    const scratch = new Database(':memory:');
    const statements = Object.getPrototypeOf(scratch.prepare('SELECT 1')) as Database.Statement;
    scratch.close();
    const run = vi.spyOn(statements, 'run');
    const syncs = vi.spyOn(fs, 'fdatasync');
    try {
      const begun = await store.begin('k-1', 'f-1');
      expect(begun).toMatchObject({ state: 'new' });
      expect(syncs).not.toHaveBeenCalled();
      await store.complete('k-1', answer, begun.state === 'new' ? begun.claim : undefined);
      const writes = run.mock.contexts
        .map((statement) => (statement as Database.Statement).source.trim())
        .map((source) =>
          source.startsWith('PRAGMA') ? source : /^(INSERT|UPDATE|BEGIN|COMMIT)\b/i.exec(source)?.[1],
        )
        .filter((source) => source !== undefined);
      // (The sweep of expired keys, a DELETE of its own, may run too.) Neither COMMIT syncs (the
      // store's connection is at synchronous = NORMAL); the answer then waits for an fdatasync.
      expect(writes).toEqual(['BEGIN', 'INSERT', 'COMMIT', 'BEGIN', 'UPDATE', 'COMMIT']);
      expect(syncs).toHaveBeenCalledTimes(1);
    } finally {
      run.mockRestore();
      syncs.mockRestore();
    }
    // Both held: a replay answers what was stored.
    expect(await store.begin('k-1', 'f-1')).toMatchObject({ state: 'replay', response: { status: 201 } });
  });

  it('stores an answer queued before its store closes, then rejects every call with EVENT_STORE_CLOSED', async () => {
    const path = join(dir, `closed-${++files}.db`);
    const backend = await open(path);
    const store = backend.idempotencyStore({ namespace: 'closed' });
    const begun = await store.begin('k', 'f');
    const queued = store.complete('k', answer, begun.state === 'new' ? begun.claim : undefined);
    await backend.close();
    // Like the appends called before close(): kept, so that a retry gets the answer.
    await expect(queued).resolves.toBeUndefined();
    const reopened = (await open(path)).idempotencyStore({ namespace: 'closed' });
    expect(await reopened.begin('k', 'f')).toMatchObject({ state: 'replay', response: answer });
    await expect(store.begin('k2', 'f')).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
    await expect(store.complete('k', answer)).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
    await expect(store.abandon('k')).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
  });

  it('stores the answers of concurrent requests in one commit, each resolving once it is kept', async () => {
    const store = (await open(join(dir, `answers-${++files}.db`))).idempotencyStore({ namespace: 'answers' });
    const keys = Array.from({ length: 20 }, (_, i) => `k-${i}`);
    const claims = await Promise.all(keys.map((key) => store.begin(key, `f-${key}`)));
    const scratch = new Database(':memory:');
    const statements = Object.getPrototypeOf(scratch.prepare('SELECT 1')) as Database.Statement;
    scratch.close();
    const run = vi.spyOn(statements, 'run');
    try {
      await Promise.all(
        keys.map((key, i) => {
          const claim = claims[i]!;
          return store.complete(
            key,
            { ...answer, body: key },
            claim.state === 'new' ? claim.claim : undefined,
          );
        }),
      );
      const commits = run.mock.contexts.filter((statement) =>
        /^COMMIT\b/i.test((statement as Database.Statement).source.trim()),
      );
      expect(commits).toHaveLength(1);
    } finally {
      run.mockRestore();
    }
    for (const key of keys) {
      expect(await store.begin(key, `f-${key}`)).toMatchObject({ state: 'replay', response: { body: key } });
    }
    // One answer whose claim was lost changes nothing and keeps no other one out.
    const late = await store.begin('k-late', 'f');
    const other = await store.begin('k-other', 'f');
    await Promise.all([
      store.complete('k-late', answer, 'not-its-claim'),
      store.complete('k-other', answer, other.state === 'new' ? other.claim : undefined),
    ]);
    expect(late).toMatchObject({ state: 'new' });
    expect(await store.begin('k-late', 'f')).toMatchObject({ state: 'in-progress' });
    expect(await store.begin('k-other', 'f')).toMatchObject({ state: 'replay' });
    // A response that cannot be stored rejects (never throws at the call) and keeps no other out.
    const bad = store.complete('k-bad', { status: 200, headers: {}, body: undefined as unknown as string });
    const good = await store.begin('k-good', 'f');
    await Promise.all([
      expect(bad).rejects.toThrow(),
      store.complete('k-good', answer, good.state === 'new' ? good.claim : undefined),
    ]);
    expect(await store.begin('k-good', 'f')).toMatchObject({ state: 'replay' });
  });

  it('keeps the keys of one namespace apart from another on the same file', async () => {
    const backend = await open(join(dir, `namespaces-${++files}.db`));
    const orders = backend.idempotencyStore({ namespace: 'orders' });
    const users = backend.idempotencyStore({ namespace: 'users' });
    const begun = await orders.begin('k', 'f');
    expect((await users.begin('k', 'g')).state).toBe('new');
    expect(await orders.begin('k', 'g')).toEqual({ state: 'mismatch' });
    await orders.complete('k', answer, begun.state === 'new' ? begun.claim : undefined);
    expect(await orders.begin('k', 'f')).toEqual({ state: 'replay', response: answer });
    expect(await users.begin('k', 'g')).toEqual({ state: 'in-progress' });
    expect(() => backend.idempotencyStore({ namespace: 'x'.repeat(101) })).toThrow(/namespace/);
  });

  it('deletes expired keys in batches, and only those', async () => {
    const path = join(dir, `cleanup-${++files}.db`);
    const backend = await open(path);
    const store = backend.idempotencyStore({ ttlMs: 60_000 });
    // A few live keys (the first begin starts the background sweep, which ends before the next
    // deleteExpired resolves), then 1,200 keys past their time, as a long-stopped service leaves them.
    for (const key of ['live-done', 'live-held']) {
      const begun = await store.begin(key, 'f');
      if (key === 'live-done')
        await store.complete(key, answer, begun.state === 'new' ? begun.claim : undefined);
    }
    await store.deleteExpired();
    const db = new Database(path);
    const insert = db.prepare(
      "INSERT INTO ferry_idempotency (namespace, key, fingerprint, status, headers, body, expires_at) VALUES ('', ?, 'f', 200, '{}', x'', ?)",
    );
    db.transaction(() => {
      for (let i = 0; i < 1200; i++) insert.run(`old-${i}`, Date.now() - 1000);
    })();
    db.close();
    expect(await store.deleteExpired()).toBe(1200);
    expect(await store.deleteExpired()).toBe(0);
    expect(await store.begin('live-done', 'f')).toEqual({ state: 'replay', response: answer });
    expect(await store.begin('live-held', 'f')).toEqual({ state: 'in-progress' });
    const rows = new Database(path, { readonly: true });
    expect(rows.prepare('SELECT count(*) AS n FROM ferry_idempotency').get()).toEqual({ n: 2 });
    rows.close();
  });

  it('sweeps expired keys in the background from begin, at most every cleanupIntervalMs', async () => {
    const path = join(dir, `sweep-${++files}.db`);
    const backend = await open(path);
    const store = backend.idempotencyStore({ ttlMs: 1, cleanupIntervalMs: 60_000 });
    const begun = await store.begin('a', 'f');
    await store.complete('a', answer, begun.state === 'new' ? begun.claim : undefined);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const keys = () => {
      const db = new Database(path, { readonly: true });
      const found = db.prepare('SELECT key FROM ferry_idempotency ORDER BY key').pluck().all();
      db.close();
      return found;
    };
    // The first begin swept (nothing to sweep then); the next sweep of this store is a minute away.
    await store.begin('b', 'f');
    expect(keys()).toEqual(['a', 'b']);
    // A store that has not swept yet does on its first begin.
    await backend.idempotencyStore({ ttlMs: 1, cleanupIntervalMs: 60_000 }).begin('c', 'f');
    await waitFor(
      () => keys().join() === 'b,c',
      () => `the expired key swept: ${keys().join()}`,
    );
  });

  it('refuses options that are not positive integers, and needs an open backend', async () => {
    const backend = await open(join(dir, `options-${++files}.db`));
    for (const value of [0, -5, 2.5, Number.NaN, '1' as unknown as number]) {
      expect(() => backend.idempotencyStore({ cleanupIntervalMs: value })).toThrow(
        expect.toSatisfy(isInvalidOptionsError),
      );
    }
    const closed = new SqliteEventStoreBackend({ path: join(dir, `never-${++files}.db`) });
    expect(() => closed.idempotencyStore()).toThrow();
  });

  it('waits while another process holds the write lock, and fails with STORE_BUSY past busyTimeoutMs', async () => {
    const path = join(dir, `busy-${++files}.db`);
    const store = (await open(path, 1000)).idempotencyStore();
    const done = await store.begin('done', 'f');
    await store.complete('done', answer, done.state === 'new' ? done.claim : undefined);
    // Another process's long write transaction.
    const other = new Database(path);
    other.prepare('BEGIN IMMEDIATE').run();
    try {
      // Replays need no lock.
      expect(await store.begin('done', 'f')).toEqual({ state: 'replay', response: answer });
      await expect(store.begin('blocked', 'f')).rejects.toSatisfy(isStoreBusyError);
      const waiting = store.begin('blocked', 'f');
      setTimeout(() => other.prepare('COMMIT').run(), 50);
      expect((await waiting).state).toBe('new');
    } finally {
      if (other.inTransaction) other.prepare('ROLLBACK').run();
      other.close();
    }
  });
});
