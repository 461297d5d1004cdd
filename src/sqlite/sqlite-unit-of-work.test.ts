import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isConcurrencyError, isEventStoreClosedError } from '../eventstore/errors.js';
import { prepareAppend } from '../eventstore/prepare-append.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { isUnitOfWorkOutcomeUnknownError } from '../outbox/errors.js';
import { createOutbox } from '../outbox/outbox.js';
import type { OutboxInsert } from '../outbox/storage.js';
import { type SqliteBackendOptions, SqliteEventStoreBackend } from './sqlite-backend.js';
import { DEFAULT_SQLITE_UNIT_OF_WORK_BATCH as DEFAULT_BATCH } from './sqlite-unit-of-work.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-units-'));
let files = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

/** Batches bounded by count only (or the queue running dry), never by how long they stay open. */
const UNTIMED = { maxOpenMs: 600_000 };

async function openBackend(
  options: Partial<SqliteBackendOptions> = {},
  path = join(dir, `units-${++files}.db`),
): Promise<{ backend: SqliteEventStoreBackend; path: string }> {
  const backend = new SqliteEventStoreBackend({ path, unitOfWorkBatch: UNTIMED, ...options });
  await backend.open();
  cleanups.push(() => backend.close());
  return { backend, path };
}

const events = (data: unknown = {}) => prepareAppend('ignored', [{ type: 'Tick', data }], undefined).events;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const message = (id: string): OutboxInsert => ({
  id,
  key: id,
  envelope: JSON.stringify({ id }),
  createdAt: Date.now(),
  dueAt: Date.now(),
});

/** What was committed, read through a connection of the test's own. */
function committedStreams(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare<[], string>('SELECT stream_id FROM ferry_events ORDER BY position').pluck().all();
  } finally {
    db.close();
  }
}

function reason(settled: PromiseSettledResult<unknown> | undefined): unknown {
  if (settled?.status !== 'rejected') throw new Error(`expected a rejection, got ${JSON.stringify(settled)}`);
  return settled.reason;
}

/** Resolves once `opened` is called; `release` lets the unit of work go on. */
function gate() {
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

/** Lets every pending promise callback run (no timer: nothing of SQLite's waits is a timer here). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('SQLite units of work: group commit', () => {
  it('commits units of work called together in one transaction, each seeing those called before it', async () => {
    const { backend, path } = await openBackend();
    const storage = backend.outboxStorage();
    const before = backend.unitOfWorkCommits;
    const results = await Promise.all(
      range(40).map((i) =>
        storage.transaction(async (tx) => {
          const [row] = await tx.query('SELECT count(*) AS n FROM ferry_events');
          const appended = await tx.append(`s-${i}`, events({ i }), 'no_stream');
          await tx.enqueue([message(`m-${i}`)]);
          return { seen: Number(row!.n), position: appended.position };
        }),
      ),
    );
    expect(results.map((r) => r.seen)).toEqual(range(40));
    expect(results.map((r) => r.position)).toEqual(range(40).map((i) => BigInt(i + 1)));
    expect(backend.unitOfWorkCommits).toBe(before + 1);
    expect(committedStreams(path)).toEqual(range(40).map((i) => `s-${i}`));
    expect(await storage.backlog(Date.now())).toMatchObject({ pending: 40 });
  });

  it('commits units of work called in separate callbacks of one event-loop turn together', async () => {
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    // As messages handed to handlers in one turn: before, the first began its transaction at once and
    // committed alone when nothing else was queued by its end.
    await Promise.all(
      range(6).map(
        (i) =>
          new Promise<unknown>((resolve, reject) =>
            setImmediate(() =>
              storage
                .transaction((tx) => tx.append(`u-${i}`, events({ i }), 'no_stream'))
                .then(resolve, reject),
            ),
          ),
      ),
    );
    expect(backend.unitOfWorkCommits).toBe(1);
  });

  it('resolves a unit of work only with the commit of its batch; until then nobody sees its writes', async () => {
    const { backend, path } = await openBackend();
    const storage = backend.outboxStorage();
    const g = gate();
    let firstResolved = false;
    const first = storage.transaction((tx) => tx.append('first', events(), 'no_stream'));
    void first.then(() => {
      firstResolved = true;
    });
    const second = storage.transaction(async (tx) => {
      g.opened();
      await g.released;
      await tx.append('second', events(), 'no_stream');
    });
    await g.open;
    await settle();
    expect(firstResolved).toBe(false);
    expect(await backend.readStream('first', {})).toEqual([]);
    expect(committedStreams(path)).toEqual([]);
    g.release();
    await Promise.all([first, second]);
    expect(committedStreams(path)).toEqual(['first', 'second']);
    expect(backend.unitOfWorkCommits).toBe(1);
  });

  it.each([
    { batch: { maxUnits: 64, maxOpenMs: 600_000 }, units: 100, commits: 2 },
    { batch: { maxUnits: 1, maxOpenMs: 600_000 }, units: 10, commits: 10 },
    { batch: { maxUnits: 64, maxOpenMs: 0 }, units: 10, commits: 10 },
  ])(
    'bounds a batch by unitOfWorkBatch $batch: $units units, $commits commits',
    async ({ batch, units, commits }) => {
      const { backend, path } = await openBackend({ unitOfWorkBatch: batch });
      const storage = backend.outboxStorage();
      await Promise.all(
        range(units).map((i) => storage.transaction((tx) => tx.append(`s-${i}`, events(), 'any'))),
      );
      expect(backend.unitOfWorkCommits).toBe(commits);
      expect(committedStreams(path)).toHaveLength(units);
    },
  );

  it('rolls back a unit of work that fails alone: the others of its batch commit, later ones not seeing it', async () => {
    const { backend, path } = await openBackend();
    const storage = backend.outboxStorage();
    await storage.transaction((tx) => tx.query('CREATE TABLE notes (i INTEGER)'));
    const before = backend.unitOfWorkCommits;
    const settled = await Promise.allSettled(
      range(6).map((i) =>
        storage.transaction(async (tx) => {
          const [row] = await tx.query('SELECT count(*) AS n FROM notes');
          await tx.query('INSERT INTO notes (i) VALUES (?)', [i]);
          await tx.append(`s-${i}`, events(), 'no_stream');
          if (i === 2) throw new Error('unit 2 fails');
          // A version conflict: thrown by the append, not caught.
          if (i === 4) await tx.append('s-0', events(), 'no_stream');
          return Number(row!.n);
        }),
      ),
    );
    expect(reason(settled[2])).toMatchObject({ message: 'unit 2 fails' });
    expect(isConcurrencyError(reason(settled[4]))).toBe(true);
    expect(settled.filter((_, i) => i !== 2 && i !== 4)).toEqual(
      [0, 1, 2, 3].map((value) => ({ status: 'fulfilled', value })),
    );
    expect(backend.unitOfWorkCommits).toBe(before + 1);
    expect(committedStreams(path)).toEqual(['s-0', 's-1', 's-3', 's-5']);
    const db = new Database(path, { readonly: true });
    expect(db.prepare('SELECT i FROM notes ORDER BY i').pluck().all()).toEqual([0, 1, 3, 5]);
    db.close();
  });

  it.each(['ROLLBACK', 'COMMIT'])(
    "ends the batch when a unit's SQL runs %s: it and those before it fail UNIT_OF_WORK_OUTCOME_UNKNOWN, those after it commit in the next",
    async (sql) => {
      const { backend, path } = await openBackend();
      const storage = backend.outboxStorage();
      const settled = await Promise.allSettled([
        storage.transaction((tx) => tx.append('a', events(), 'no_stream')),
        // Fails on what the first wrote, which the ROLLBACK then takes away: it fails as the first
        // does (it rejected with its conflict, on a stream that was never kept).
        storage.transaction((tx) => tx.append('a', events(), 'no_stream')),
        storage.transaction(async (tx) => {
          await tx.append('b', events(), 'no_stream');
          await tx.query(sql);
        }),
        storage.transaction((tx) => tx.append('c', events(), 'no_stream')),
      ]);
      const unknown = reason(settled[0]);
      expect(isUnitOfWorkOutcomeUnknownError(unknown), String(unknown)).toBe(true);
      expect(reason(settled[1])).toBe(unknown);
      // Its own SQL ended the transaction: a COMMIT kept what it wrote, so it was not rolled back.
      expect(reason(settled[2])).toMatchObject({ code: 'UNIT_OF_WORK_OUTCOME_UNKNOWN', reason: 'own-sql' });
      expect((unknown as Error).cause).toBe(reason(settled[2]));
      expect(settled[3]).toMatchObject({ status: 'fulfilled' });
      // Whatever its SQL did to the units before it, none was reported committed.
      expect(committedStreams(path)).toEqual(sql === 'COMMIT' ? ['a', 'b', 'c'] : ['c']);
      expect(backend.unitOfWorkCommits).toBe(1);
    },
  );

  it.each(['ROLLBACK', 'COMMIT'])(
    'writes nothing more for a unit whose SQL ran %s: its later calls reject, its messages are not enqueued',
    async (sql) => {
      const { backend, path } = await openBackend();
      const storage = backend.outboxStorage();
      const later: unknown[] = [];
      const settled = await Promise.allSettled([
        storage.transaction(async (tx) => {
          later.push(await tx.query(sql).catch((error: unknown) => error));
          // Each caught: before, each ran outside any transaction and was kept, a message sent.
          for (const call of [
            () => tx.append('after', events(), 'no_stream'),
            () => tx.enqueue([message('m-after')]),
            () => tx.query('CREATE TABLE after_end (x)'),
            () => tx.markHandled('consumer', 'message-after', Date.now()),
          ]) {
            later.push(await call().catch((error: unknown) => error));
          }
        }),
      ]);
      expect(reason(settled[0])).toMatchObject({ code: 'UNIT_OF_WORK_OUTCOME_UNKNOWN', reason: 'own-sql' });
      expect(later.map((outcome) => isUnitOfWorkOutcomeUnknownError(outcome))).toEqual([
        true,
        true,
        true,
        true,
        true,
      ]);
      expect(committedStreams(path)).toEqual([]);
      expect(await storage.backlog(Date.now())).toMatchObject({ pending: 0 });
      const db = new Database(path, { readonly: true });
      try {
        expect(db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'after_end'").pluck().get()).toBe(
          0,
        );
      } finally {
        db.close();
      }
    },
  );

  it('rejects a unit that failed on the writes of those before it in its batch only once they are committed', async () => {
    // Before, it rejected at once: its caller, reading what the unit had found (a user registered
    // under the same key), found nothing yet, and answered 500.
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    const store = new EventStore(backend);
    const seen: number[] = [];
    const settled = await Promise.allSettled([
      storage.transaction((tx) => tx.append('user-1', events(), 'no_stream')),
      storage
        .transaction((tx) => tx.append('user-1', events(), 'no_stream'))
        .catch(async (error: unknown) => {
          seen.push((await store.readStream('user-1')).length);
          throw error;
        }),
      // Keeps the batch open a while after the failure.
      storage.transaction(async (tx) => {
        await new Promise((resolve) => setTimeout(resolve, 50));
        await tx.append('user-2', events(), 'no_stream');
      }),
    ]);
    expect(settled[0]).toMatchObject({ status: 'fulfilled' });
    expect(isConcurrencyError(reason(settled[1]))).toBe(true);
    expect(seen).toEqual([1]);
  });

  it('rejects every unit of the batch with the error of a COMMIT the disk refused, and keeps none of them', async () => {
    const path = join(dir, `units-${++files}.db`);
    const fixture = fileURLToPath(new URL('./fixtures/commit-on-full-disk.ts', import.meta.url));
    // stderr piped too: a file size limit would also refuse writes to a log file it was sent to.
    const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
      env: { ...process.env, FERRY_SQLITE_PATH: path, FERRY_UNITS: '8' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
    });
    const [code] = await once(child, 'exit');
    expect(code, err).toBe(0);
    const report = JSON.parse(out) as {
      outcomes: { ok?: number; code?: string }[];
      sameError: boolean;
      commits: number;
    };
    expect(report.outcomes).toEqual(
      range(8).map(() => ({ code: expect.stringMatching(/^SQLITE_(IOERR|FULL)/) })),
    );
    expect(report.sameError).toBe(true);
    // The unit of work before the limit committed; the batch after it did not.
    expect(report.commits).toBe(1);
    expect(committedStreams(path)).toEqual(['before']);
  }, 30_000);

  it('waits for the units of a batch open at close(), which commit; refuses later ones; lets the file go once closed', async () => {
    // Before, close() rolled back the batch open (its units rejected with EVENT_STORE_CLOSED, nothing
    // kept) while PostgreSQL's let them end: they now end as they would have on both.
    const { backend, path } = await openBackend();
    const storage = backend.outboxStorage();
    const g = gate();
    const first = storage.transaction((tx) => tx.append('first', events(), 'no_stream'));
    const second = storage.transaction(async (tx) => {
      await tx.append('second', events(), 'no_stream');
      g.opened();
      await g.released;
    });
    await g.open;
    let closed = false;
    const closing = backend.close().then(() => {
      closed = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closed, 'close() resolved with a unit of work still running').toBe(false);
    expect(isEventStoreClosedError(await storage.transaction(async () => 1).catch((e: unknown) => e))).toBe(
      true,
    );
    expect(
      isEventStoreClosedError(await backend.append('late', events(), 'no_stream').catch((e: unknown) => e)),
    ).toBe(true);
    g.release();
    await Promise.all([first, second, closing]);
    // Another store on the file writes at once: the closed one holds no lock.
    const { backend: other } = await openBackend({ busyTimeoutMs: 0 }, path);
    await other.append('after', events(), 'no_stream');
    expect(committedStreams(path).sort()).toEqual(['after', 'first', 'second']);
  });
});

describe('SQLite units of work through the outbox', () => {
  async function openOutbox() {
    const { backend, path } = await openBackend();
    const bus = await createBus({
      url: `memory://sqlite-units-${files}`,
      service: 'svc',
      logger: silentLogger,
    });
    const store = new EventStore(backend);
    const outbox = await createOutbox({ store, bus, logger: silentLogger });
    cleanups.push(async () => {
      await outbox.close();
      await bus.close();
    });
    return { backend, path, outbox, store };
  }

  it('runs a unit of work that lost a race again, in a later batch', async () => {
    const { backend, outbox, store } = await openOutbox();
    let attempts = 0;
    const results = await Promise.all([
      outbox.unitOfWork(async (work) => {
        await work.append('order', [{ type: 'A', data: {} }], { expectedVersion: 'no_stream' });
        return 'a';
      }),
      outbox.unitOfWork(async (work) => {
        attempts++;
        // The first attempt decides from a stale read (the other unit was called first): it loses.
        const stored = attempts === 1 ? [] : await work.readStream('order');
        const expectedVersion = stored.length === 0 ? 'no_stream' : stored.at(-1)!.version;
        await work.append('order', [{ type: 'B', data: {} }], { expectedVersion });
        return 'b';
      }),
    ]);
    expect(results).toEqual(['a', 'b']);
    expect(attempts).toBe(2);
    expect((await store.readStream('order')).map((e) => e.type)).toEqual(['A', 'B']);
    expect(backend.unitOfWorkCommits).toBe(2);
  });

  it('does not run again a unit of work whose outcome is unknown', async () => {
    const { path, outbox } = await openOutbox();
    let attempts = 0;
    const settled = await Promise.allSettled([
      outbox.unitOfWork(async (work) => {
        attempts++;
        await work.append('a', [{ type: 'A', data: {} }]);
      }),
      outbox.unitOfWork(async (work) => {
        await work.append('b', [{ type: 'B', data: {} }]);
        await work.tx.query('ROLLBACK');
      }),
    ]);
    expect(isUnitOfWorkOutcomeUnknownError(reason(settled[0]))).toBe(true);
    expect(attempts).toBe(1);
    expect(committedStreams(path)).toEqual([]);
  });
});

describe("SQLite units of work and the store's writes: turns at the file", () => {
  it("gives the store's writes, and another store's on the same file, their turn within a stream of units of work", async () => {
    const { backend, path } = await openBackend({ unitOfWorkBatch: { maxUnits: 8, maxOpenMs: 600_000 } });
    const { backend: other } = await openBackend({}, path);
    const storage = backend.outboxStorage();
    const inbox = backend.inbox();
    const idempotency = backend.idempotencyStore();
    const CAP = 2000;
    let units = 0;
    let writes: Promise<unknown[]> | undefined;
    let unitsWhenWritten: number | undefined;
    // Started from inside a unit of work, while its batch holds the file: each waits for its turn.
    const start = () =>
      Promise.all([
        backend.append('own', events(), 'no_stream'),
        other.append('other', events(), 'no_stream'),
        storage.claim('relay', Date.now(), 10, 30_000),
        inbox.begin('inbox-key'),
        idempotency.begin('idem-key', 'fingerprint'),
        backend.saveCheckpoint('subscription', 1n),
        backend.saveSnapshot({ streamId: 'loop-0', version: 0, schemaVersion: 1, state: {}, time: 'now' }),
      ]).then((done) => {
        unitsWhenWritten = units;
        return done;
      });
    // 16 writers doing units of work back to back until the writes are in (or CAP units).
    await Promise.all(
      range(16).map(async (l) => {
        for (let i = 0; unitsWhenWritten === undefined && units < CAP; i++) {
          await storage.transaction(async (tx) => {
            await tx.append(`loop-${l}`, events(), i === 0 ? 'no_stream' : i - 1);
            await tx.enqueue([message(`m-${l}-${i}`)]);
            if (units >= 50) writes ??= start();
          });
          units++;
        }
      }),
    );
    const [own, fromOther, claimed, inboxClaim, idem] = (await writes!) as [
      { position: bigint },
      { position: bigint },
      unknown[],
      unknown,
      { state: string },
    ];
    expect(own.position).toBeGreaterThan(0n);
    expect(fromOther.position).toBeGreaterThan(0n);
    expect(claimed.length).toBeGreaterThan(0);
    expect(inboxClaim).not.toBeNull();
    expect(idem.state).toBe('new');
    // Their turn came after the batch under way and the next few: never after the stream ended.
    expect(unitsWhenWritten!).toBeLessThanOrEqual(50 + 4 * 8);
  }, 60_000);

  it('commits the appends called while a batch holds the file together, in one transaction after it', async () => {
    const { backend, path } = await openBackend();
    const storage = backend.outboxStorage();
    const g = gate();
    const unit = storage.transaction(async (tx) => {
      await tx.append('unit', events(), 'no_stream');
      g.opened();
      await g.released;
    });
    await g.open;
    const appends = range(10).map((i) => backend.append(`s-${i}`, events(), 'no_stream'));
    // What is committed when the first append resolves: all ten, its transaction's.
    const seenByFirst = appends[0]!.then(() => committedStreams(path));
    await settle();
    expect(committedStreams(path)).toEqual([]);
    g.release();
    await unit;
    const results = await Promise.all(appends);
    expect(results.map((r) => r.position)).toEqual(range(10).map((i) => BigInt(i + 2)));
    expect(await seenByFirst).toEqual(['unit', ...range(10).map((i) => `s-${i}`)]);
    expect(backend.groupCommits).toBe(1);
  });

  it('gives units of work their turn within a stream of appends', async () => {
    const { backend } = await openBackend();
    const storage = backend.outboxStorage();
    const CAP = 4000;
    let appends = 0;
    let unit: Promise<unknown> | undefined;
    let appendsWhenCommitted: number | undefined;
    await Promise.all(
      range(16).map(async (l) => {
        for (let i = 0; appendsWhenCommitted === undefined && appends < CAP; i++) {
          await backend.append(`loop-${l}`, events(), i === 0 ? 'no_stream' : i - 1);
          appends++;
          if (appends >= 50) {
            unit ??= storage
              .transaction((tx) => tx.append('unit', events(), 'no_stream'))
              .then(() => {
                appendsWhenCommitted = appends;
              });
          }
        }
      }),
    );
    await unit;
    expect(appendsWhenCommitted!).toBeLessThanOrEqual(50 + 4 * 64);
  }, 60_000);

  it('runs 2,000 units of work and 2,000 appends of two stores on one file at once: all of them commit', async () => {
    const { backend, path } = await openBackend({ unitOfWorkBatch: DEFAULT_BATCH, busyTimeoutMs: 2000 });
    const { backend: other } = await openBackend(
      { unitOfWorkBatch: DEFAULT_BATCH, busyTimeoutMs: 2000 },
      path,
    );
    const storage = backend.outboxStorage();
    const otherStorage = other.outboxStorage();
    const settled = await Promise.allSettled([
      ...range(2000).map((i) =>
        (i % 2 === 0 ? storage : otherStorage).transaction(async (tx) => {
          await tx.append(`unit-${i}`, events({ i }), 'no_stream');
          await tx.enqueue([message(`m-${i}`)]);
        }),
      ),
      ...range(2000).map((i) =>
        (i % 2 === 0 ? backend : other).append(`append-${i}`, events({ i }), 'no_stream'),
      ),
    ]);
    const failed = settled.filter((s) => s.status === 'rejected');
    expect(failed.slice(0, 3)).toEqual([]);
    expect(committedStreams(path)).toHaveLength(4000);
    expect(await storage.backlog(Date.now())).toMatchObject({ pending: 2000 });
    // Units of work shared commits.
    expect(backend.unitOfWorkCommits + other.unitOfWorkCommits).toBeLessThan(1000);
  }, 60_000);
});
