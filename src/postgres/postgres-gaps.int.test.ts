import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import type { PreparedEvent, RecordedEvent } from '../eventstore/types.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

async function openStore(
  schema: string,
  extra: { idlePollMs?: number } = {},
): Promise<{
  store: EventStore;
  backend: PostgresEventStoreBackend;
}> {
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 4,
    logger: silentLogger,
  });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  cleanups.push(() => store.close());
  void extra;
  return { store, backend };
}

function freshSchema(): string {
  const schema = testSchemaName('gaps');
  schemas.push(schema);
  return schema;
}

function event(type: string, data: unknown): PreparedEvent {
  return { id: uuidv7(), type, data, metadata: {} };
}

async function pool(): Promise<pg.Pool> {
  const p = new pg.Pool({ connectionString: postgresTestUrl(), max: 25 });
  cleanups.push(() => p.end());
  return p;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('PostgreSQL global order under concurrent transactions', () => {
  it('does not skip an event committed late at an earlier position', async () => {
    // Must not be lost: event A, whose transaction began first and commits after B was already read.
    const schema = freshSchema();
    const { store, backend } = await openStore(schema);
    const db = await pool();
    const seen: RecordedEvent[] = [];
    const sub = store.subscribe({ name: 'late', idlePollMs: 50 }, (e) => void seen.push(e));
    await sub.caughtUp();

    const slow = await db.connect();
    cleanups.push(async () => slow.release());
    await slow.query('BEGIN');
    const a = await backend.appendInTransaction(slow, 'stream-a', [event('A', 1)], 'any');
    const b = await store.append('stream-b', [{ type: 'B', data: 2 }]);
    // A has the earlier position (its transaction id is older), B is committed first.
    expect(a.position < b.position).toBe(true);
    await sleep(200);
    expect(seen.map((e) => e.type)).toEqual([]);
    // A naive reader (position > checkpoint, no horizon) has already moved past A's position here.
    const naive = await db.query(
      `SELECT position FROM "${schema}".events WHERE position > 0 ORDER BY position`,
    );
    expect(naive.rows.map((r) => BigInt(r.position))).toEqual([b.position]);
    await slow.query('COMMIT');
    await waitFor(() => seen.length === 2, 'both events');
    expect(seen.map((e) => e.type)).toEqual(['A', 'B']);
  });

  it('delivers every committed event exactly once, in position order, across many concurrent transactions with rollbacks', async () => {
    // Must not be lost: any event of a committed transaction. Must not appear: any of a rolled-back one.
    const schema = freshSchema();
    const { store, backend } = await openStore(schema);
    const db = await pool();
    const seen: RecordedEvent[] = [];
    const sub = store.subscribe(
      { name: 'gap-safety', batchSize: 50, idlePollMs: 100 },
      (e) => void seen.push(e),
    );

    const committed = new Set<string>();
    const rolledBack = new Set<string>();
    let rng = 42;
    const random = () => {
      rng = (rng * 1_103_515_245 + 12_345) % 2 ** 31;
      return rng / 2 ** 31;
    };
    const writers = Array.from({ length: 16 }, async (_, w) => {
      for (let t = 0; t < 25; t++) {
        const client = await db.connect();
        try {
          await client.query('BEGIN');
          const events = Array.from({ length: 1 + Math.floor(random() * 3) }, (_, i) =>
            event('Tick', { w, t, i }),
          );
          await backend.appendInTransaction(client, `writer-${w}`, events, 'any');
          // Transactions of varied length, so commits land out of position order.
          await sleep(Math.floor(random() * 40));
          if (random() < 0.2) {
            await client.query('ROLLBACK');
            for (const e of events) rolledBack.add(e.id);
          } else {
            await client.query('COMMIT');
            for (const e of events) committed.add(e.id);
          }
        } finally {
          client.release();
        }
      }
    });
    await Promise.all(writers);
    expect(committed.size).toBeGreaterThan(300);
    expect(rolledBack.size).toBeGreaterThan(0);
    await waitFor(
      () => seen.length >= committed.size,
      () => `all committed events (${seen.length}/${committed.size})`,
      30_000,
    );
    await sub.caughtUp();

    const ids = seen.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids)).toEqual(committed);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.position > seen[i - 1]!.position).toBe(true);
    // The same order readAll gives.
    const all: bigint[] = [];
    for await (const e of store.readAll()) all.push(e.position);
    expect(all).toEqual(seen.map((e) => e.position));
  }, 60_000);

  it('wakes a subscription in another process through NOTIFY, without polling', async () => {
    const schema = freshSchema();
    const { store: writer } = await openStore(schema);
    const { store: reader } = await openStore(schema);
    const seen: string[] = [];
    // A poll interval far longer than the test: only a notification can deliver in time.
    const sub = reader.subscribe({ name: 'notified', idlePollMs: 600_000 }, (e) => void seen.push(e.type));
    await sub.caughtUp();
    await sleep(100);
    await writer.append('n', [{ type: 'Hello', data: {} }]);
    await waitFor(() => seen.length === 1, 'the notified event', 5000);
    await writer.append('n', [{ type: 'Again', data: {} }]);
    await waitFor(() => seen.length === 2, 'the second notified event', 5000);
    expect(seen).toEqual(['Hello', 'Again']);
  });
});

describe('PostgreSQL append forms', () => {
  it('appends short batches, long batches and batches inside a transaction with the same results', async () => {
    const schema = freshSchema();
    const { store, backend } = await openStore(schema);
    const db = await pool();
    await store.append(
      'forms',
      Array.from({ length: 32 }, (_, i) => ({ type: 'Short', data: i })),
    );
    await store.append(
      'forms',
      Array.from({ length: 33 }, (_, i) => ({ type: 'Long', data: i })),
      {
        expectedVersion: 31,
      },
    );
    const client = await db.connect();
    try {
      await client.query('BEGIN');
      await backend.appendInTransaction(client, 'forms', [event('Tx', 0), event('Tx', 1)], 64);
      await backend.appendInTransaction(client, 'other', [event('Tx', 2)], 'no_stream');
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const events = await store.readStream('forms');
    expect(events.map((e) => e.version)).toEqual(Array.from({ length: 67 }, (_, i) => i));
    expect(events.map((e) => e.type)).toEqual([
      ...Array<string>(32).fill('Short'),
      ...Array<string>(33).fill('Long'),
      'Tx',
      'Tx',
    ]);
    const all: RecordedEvent[] = [];
    for await (const e of store.readAll()) all.push(e);
    expect(all).toHaveLength(68);
    for (let i = 1; i < all.length; i++) expect(all[i]!.position > all[i - 1]!.position).toBe(true);
    const conflict = await store
      .append('forms', [{ type: 'Late', data: 0 }], { expectedVersion: 3 })
      .catch((e: unknown) => e);
    expect(conflict).toMatchObject({ code: 'CONCURRENCY_CONFLICT', expected: 3, actual: 66 });
  });
});
