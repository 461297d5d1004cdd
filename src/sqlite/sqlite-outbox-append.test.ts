import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isConcurrencyError } from '../eventstore/errors.js';
import { EventStore } from '../eventstore/store.js';
import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import type { OutboxInsert } from '../outbox/storage.js';
import { OUTBOX_T0, outboxTestRow, preparedTestEvents } from '../testing/outbox-rows.js';
import { sleep } from '../testing/wait.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';
import { isStoreBusyError } from './store-busy.js';

/*
 * `appendWithMessages` on SQLite (the storage side of `outbox.append`): it joins the store's group
 * commit, each append and its outbox rows in one SAVEPOINT of the batch's transaction.
 */

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-outbox-append-'));
let files = 0;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of cleanups.splice(0).reverse()) await close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function open(path = join(dir, `outbox-${++files}.db`), busyTimeoutMs?: number) {
  const backend = new SqliteEventStoreBackend(
    busyTimeoutMs === undefined ? { path } : { path, busyTimeoutMs },
  );
  await backend.open();
  cleanups.push(() => backend.close());
  return { backend, storage: backend.outboxStorage(), path };
}

/** A plain connection to the file, for reading what was committed. */
function reader(path: string): Database.Database {
  const db = new Database(path, { readonly: true });
  db.defaultSafeIntegers(true);
  cleanups.push(() => db.close());
  return db;
}

const _T0 = OUTBOX_T0;

const message = (key?: string, id?: string): OutboxInsert => outboxTestRow(key, OUTBOX_T0, id);

const events = preparedTestEvents;

interface Call {
  readonly stream: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ExpectedVersion;
  readonly messages: readonly OutboxInsert[];
}

/** Calls made in one tick: they commit together at its end. */
function together(storage: ReturnType<SqliteEventStoreBackend['outboxStorage']>, calls: readonly Call[]) {
  return Promise.allSettled(
    calls.map((c) => storage.appendWithMessages(c.stream, c.events, c.expected, c.messages)),
  );
}

const resolved = (s: PromiseSettledResult<AppendResult>) => {
  if (s.status !== 'fulfilled') throw s.reason;
  return s.value;
};

const outboxIds = (db: Database.Database, key?: string): string[] =>
  db
    .prepare<[{ key: string | null }], string>(
      'SELECT id FROM ferry_outbox WHERE @key IS NULL OR key = @key ORDER BY seq',
    )
    .pluck()
    .all({ key: key ?? null });

describe('SQLite outbox.append (appendWithMessages) in the group commit', () => {
  it('commits a batch together: the rows of the appends that wrote, none of the one refused', async () => {
    const { backend, storage, path } = await open();
    await storage.appendWithMessages('taken', events('First'), 'no_stream', []);
    const calls: Call[] = Array.from({ length: 8 }, (_, i) => ({
      stream: i === 4 ? 'taken' : `order-${i}`,
      events: events('OrderPlaced'),
      expected: 'no_stream',
      messages: i % 3 === 2 ? [] : [message(), message(`customer-${i % 2}`)],
    }));
    const before = backend.groupCommits;
    const settled = await together(storage, calls);

    const refused = settled[4]!;
    expect(refused.status === 'rejected' && isConcurrencyError(refused.reason)).toBe(true);
    const results = settled.filter((_, i) => i !== 4).map(resolved);
    expect(results.map((r) => r.nextExpectedVersion)).toEqual(results.map(() => 0));
    expect(backend.groupCommits).toBe(before + 1);
    expect(outboxIds(reader(path))).toEqual(
      calls.filter((_, i) => i !== 4).flatMap((call) => call.messages.map((m) => m.id)),
    );
  });

  it('enqueues nothing for a re-append of stored events inside a batch, and resolves its first result', async () => {
    const { backend, storage, path } = await open();
    const stored = events('OrderPlaced');
    const first = await storage.appendWithMessages('order-r', stored, 'no_stream', [message()]);
    const db = reader(path);
    const original = outboxIds(db);
    const calls: Call[] = [
      { stream: 'order-x', events: events('A'), expected: 'no_stream', messages: [message()] },
      { stream: 'order-r', events: stored, expected: 'no_stream', messages: [message()] },
      { stream: 'order-y', events: events('A'), expected: 'no_stream', messages: [message()] },
      { stream: 'order-r', events: stored, expected: 'any', messages: [message()] },
    ];
    const before = backend.groupCommits;
    const settled = await together(storage, calls);
    expect(resolved(settled[1]!)).toEqual(first);
    expect(resolved(settled[3]!)).toEqual(first);
    expect(backend.groupCommits).toBe(before + 1);
    expect(outboxIds(db)).toEqual([...original, calls[0]!.messages[0]!.id, calls[2]!.messages[0]!.id]);
  });

  it('gives an explicit key seq order = commit order: call order in a batch, and across two processes on one file', async () => {
    const a = await open();
    const b = await open(a.path);
    const streamOf = new Map<string, string>();
    const writer = (storage: typeof a.storage, name: string) =>
      Promise.all(
        Array.from({ length: 8 }, async (_, p) => {
          for (let i = 0; i < 10; i++) {
            const m = message('customer-1');
            const result = await storage.appendWithMessages(
              `${name}-${p}`,
              events('E'),
              i === 0 ? 'no_stream' : i - 1,
              [m],
            );
            streamOf.set(m.id, String(result.position));
          }
        }),
      );
    await Promise.all([writer(a.storage, 'a'), writer(b.storage, 'b')]);
    expect(a.backend.groupCommits).toBeGreaterThan(0);
    // Positions follow commit order (one writer at a time): seq order must be the same order.
    const bySeq = outboxIds(reader(a.path), 'customer-1').map((id) => BigInt(streamOf.get(id)!));
    expect(bySeq).toHaveLength(160);
    expect(bySeq).toEqual([...bySeq].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
  });

  it('wakes the storage watchers after a commit that enqueued, not after one that enqueued nothing', async () => {
    const { storage } = await open();
    let woken = 0;
    const stop = storage.watch(() => woken++);
    cleanups.push(stop);
    const stored = events('OrderPlaced');
    await storage.appendWithMessages('order-1', stored, 'no_stream', [message()]);
    await sleep(0);
    expect(woken).toBe(1);
    await storage.appendWithMessages('order-1', stored, 'no_stream', [message()]);
    await storage.appendWithMessages('order-2', events('A'), 'no_stream', []);
    await sleep(250);
    expect(woken).toBe(1);
  });

  it('rejects every call of a batch that cannot commit (the write lock stays taken) and enqueues nothing', async () => {
    const { backend, storage, path } = await open(undefined, 200);
    const other = new Database(path);
    cleanups.push(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    const calls: Call[] = Array.from({ length: 5 }, (_, i) => ({
      stream: `order-${i}`,
      events: events('OrderPlaced'),
      expected: 'no_stream',
      messages: [message('customer-1')],
    }));
    const before = backend.groupCommits;
    const settled = await together(storage, calls);
    other.exec('ROLLBACK');
    for (const s of settled) expect(s.status === 'rejected' && isStoreBusyError(s.reason)).toBe(true);
    expect(backend.groupCommits).toBe(before);
    const db = reader(path);
    expect(outboxIds(db)).toEqual([]);
    expect(db.prepare('SELECT count(*) FROM ferry_events').pluck().get()).toBe(0n);
    // Once the lock is free, the next call commits with its row.
    await storage.appendWithMessages('order-9', events('A'), 'no_stream', [message('customer-1')]);
    expect(outboxIds(db)).toHaveLength(1);
  });
});

describe('outbox.append as the store closes', () => {
  it('commits an outbox.append called just before store.close(), its message with it', async () => {
    const { backend, path } = await open();
    const store = new EventStore(backend, { logger: silentLogger });
    const bus = await createBus({
      url: `memory://outbox-close-${++files}`,
      service: 'orders',
      logger: silentLogger,
    });
    cleanups.push(() => bus.close());
    const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: false });
    // Its messages are prepared before it reaches the store: before, close() had closed it by then
    // and the append rejected with EVENT_STORE_CLOSED, nothing written.
    const appended = outbox.append('order-1', [{ type: 'OrderPlaced', data: {} }], {
      messages: [{ type: 'order.created', data: { id: 1 } }],
    });
    await store.close();
    await expect(appended).resolves.toMatchObject({ nextExpectedVersion: 0 });
    const db = reader(path);
    expect(db.prepare('SELECT count(*) FROM ferry_events').pluck().get()).toBe(1n);
    expect(outboxIds(db)).toEqual((await appended).messageIds);
    await outbox.close();
  });
});
