import type pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isConcurrencyError } from '../eventstore/errors.js';
import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';
import { silentLogger } from '../logging/logger.js';
import type { OutboxInsert } from '../outbox/storage.js';
import { OUTBOX_T0, outboxTestRow, preparedTestEvents } from '../testing/outbox-rows.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep } from '../testing/wait.js';
import { otherSession } from './fixtures/other-session.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

/*
 * `appendWithMessages` on PostgreSQL (the storage side of `outbox.append`): it joins the backend's
 * group commit, so a batch of appends, some with outbox rows, is one statement and one commit.
 */

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

const T0 = OUTBOX_T0;

async function open(schema?: string): Promise<PostgresEventStoreBackend> {
  if (schema === undefined) {
    schema = testSchemaName('pgapp');
    schemas.push(schema);
  }
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 6,
    logger: silentLogger,
  });
  await backend.open();
  cleanups.push(() => backend.close());
  return backend;
}

const client = () => otherSession(cleanups);

const message = (key?: string, id?: string): OutboxInsert => outboxTestRow(key, OUTBOX_T0, id);

const events = preparedTestEvents;

interface Call {
  readonly stream: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ExpectedVersion;
  readonly messages: readonly OutboxInsert[];
}

/**
 * Calls made in one tick: the first goes at once on its own, the others queue behind it and commit
 * together as one batch. Settles them all.
 */
function together(backend: PostgresEventStoreBackend, calls: readonly Call[]) {
  const storage = backend.outboxStorage();
  return Promise.allSettled(
    calls.map((c) => storage.appendWithMessages(c.stream, c.events, c.expected, c.messages)),
  );
}

interface StoredRow {
  seq: string;
  id: string;
  key: string;
  /** The transaction that inserted the row (32-bit xid). */
  xid: string;
}

async function outboxRows(c: pg.Client, schema: string): Promise<StoredRow[]> {
  const { rows } = await c.query<StoredRow>(
    `SELECT o.seq::text AS seq, o.id, o.key, o.xmin::text AS xid FROM "${schema}".outbox o ORDER BY o.seq`,
  );
  return rows;
}

/** The transaction (32-bit xid, as xmin) that appended each stream's events. */
async function eventXids(c: pg.Client, schema: string): Promise<Map<string, string>> {
  const { rows } = await c.query<{ stream_id: string; xid: string }>(
    `SELECT DISTINCT stream_id, ((position >> 16) & 4294967295)::text AS xid FROM "${schema}".events`,
  );
  return new Map(rows.map((r) => [r.stream_id, r.xid]));
}

const resolved = (s: PromiseSettledResult<AppendResult>) => {
  if (s.status !== 'fulfilled') throw s.reason;
  return s.value;
};

describe('PostgreSQL outbox.append (appendWithMessages) in the group commit', () => {
  it('commits a batch in one transaction: the rows of the appends that wrote, none of the one refused', async () => {
    const backend = await open();
    const storage = backend.outboxStorage();
    const c = await client();
    await storage.appendWithMessages('taken', events('First'), 'no_stream', []);
    const calls: Call[] = Array.from({ length: 8 }, (_, i) => ({
      stream: i === 4 ? 'taken' : `order-${i}`,
      events: events('OrderPlaced'),
      expected: 'no_stream',
      messages: i % 3 === 2 ? [] : [message(), message(`customer-${i % 2}`)],
    }));
    const before = backend.groupCommits;
    const settled = await together(backend, calls);

    const refused = settled[4]!;
    expect(refused.status === 'rejected' && isConcurrencyError(refused.reason)).toBe(true);
    for (const [i, s] of settled.entries()) if (i !== 4) expect(resolved(s).nextExpectedVersion).toBe(0);
    // Those queued behind the first (or all eight, if the previous commit was still settling) went as one batch.
    expect(backend.groupCommits).toBe(before + 1);

    const rows = await outboxRows(c, backend.schema);
    const expected = calls.filter((_, i) => i !== 4).flatMap((call) => call.messages.map((m) => m.id));
    expect(rows.map((r) => r.id)).toEqual(expected);
    // Each row was inserted by the transaction that appended its events; the batch is one transaction.
    const xids = await eventXids(c, backend.schema);
    for (const [i, call] of calls.entries()) {
      if (i === 4) continue;
      for (const m of call.messages) expect(rows.find((r) => r.id === m.id)!.xid).toBe(xids.get(call.stream));
    }
    const batched = calls.filter((_, i) => i > 0 && i !== 4).map((call) => xids.get(call.stream));
    expect(new Set(batched).size).toBe(1);
  });

  it('enqueues nothing for a re-append of stored events inside a batch, and resolves its first result', async () => {
    const backend = await open();
    const storage = backend.outboxStorage();
    const c = await client();
    const stored = events('OrderPlaced');
    const first = await storage.appendWithMessages('order-r', stored, 'no_stream', [message()]);
    const [original] = await outboxRows(c, backend.schema);

    // The same events again, once with the same expectation and once with `any`, among fresh appends.
    const calls: Call[] = [
      { stream: 'order-x', events: events('A'), expected: 'no_stream', messages: [message()] },
      { stream: 'order-r', events: stored, expected: 'no_stream', messages: [message()] },
      { stream: 'order-y', events: events('A'), expected: 'no_stream', messages: [message()] },
    ];
    const before = backend.groupCommits;
    const settled = await together(backend, calls);
    expect(resolved(settled[1]!)).toEqual(first);
    expect(backend.groupCommits).toBe(before + 1);
    const again = await storage.appendWithMessages('order-r', stored, 'any', [message()]);
    expect(again).toEqual(first);

    const rows = await outboxRows(c, backend.schema);
    expect(rows.map((r) => r.id)).toEqual([
      original!.id,
      calls[0]!.messages[0]!.id,
      calls[2]!.messages[0]!.id,
    ]);
    const { rows: count } = await c.query(`SELECT count(*)::int AS n FROM "${backend.schema}".events`);
    expect(count[0].n).toBe(3);
  });

  it('wakes the relays after a commit that enqueued, alone or in a batch, not after one that enqueued nothing', async () => {
    const backend = await open();
    const storage = backend.outboxStorage();
    let woken = 0;
    const stop = storage.watch(() => woken++);
    cleanups.push(async () => stop());
    // The LISTEN session wakes its listeners for 750 ms once it is up, and a NOTIFY comes back to it
    // as well: count only what comes after each step has settled.
    await sleep(1000);
    const stored = events('OrderPlaced');
    let mark = woken;
    await storage.appendWithMessages('order-1', stored, 'no_stream', [message()]);
    expect(woken).toBeGreaterThan(mark);
    await sleep(300);
    mark = woken;
    await storage.appendWithMessages('order-1', stored, 'no_stream', [message()]);
    await storage.appendWithMessages('order-2', events('A'), 'no_stream', []);
    await sleep(300);
    expect(woken).toBe(mark);
    await together(
      backend,
      Array.from({ length: 4 }, (_, i) => ({
        stream: `order-b${i}`,
        events: events('A'),
        expected: 'no_stream' as const,
        messages: [message()],
      })),
    );
    expect(woken).toBeGreaterThan(mark);
  });

  it('keeps per-key seq order in call order within a batch', async () => {
    const backend = await open();
    const c = await client();
    const calls: Call[] = Array.from({ length: 12 }, (_, i) => ({
      stream: `order-${i}`,
      events: events('OrderPlaced'),
      expected: 'no_stream',
      messages: [message('customer-1'), message()],
    }));
    const settled = await together(backend, calls);
    for (const s of settled) resolved(s);
    const keyed = (await outboxRows(c, backend.schema)).filter((r) => r.key === 'customer-1');
    expect(keyed.map((r) => r.id)).toEqual(calls.map((call) => call.messages[0]!.id));
  });

  it('draws the seq of an explicit key only after another transaction holding that key committed (seq order = commit order)', async () => {
    const backend = await open();
    const schema = backend.schema;
    const other = await client();
    const c = await client();
    // Another process's unit of work: it takes the key's lock, draws its seq, and commits later.
    await other.query('BEGIN');
    await other.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [
      `ferry-outbox:${schema}:customer-1`,
    ]);
    const theirs = message('customer-1');
    await other.query(
      `INSERT INTO "${schema}".outbox (id, key, envelope, created_at, due_at) VALUES ($1, $2, $3, $4, $4)`,
      [theirs.id, theirs.key, theirs.envelope, T0],
    );

    const calls: Call[] = Array.from({ length: 4 }, (_, i) => ({
      stream: `order-${i}`,
      events: events('OrderPlaced'),
      expected: 'no_stream',
      messages: [message(i % 2 === 0 ? 'customer-1' : undefined)],
    }));
    let done = 0;
    const settling = together(backend, calls).then((s) => {
      done = 1;
      return s;
    });
    await sleep(300);
    // The appends with a row of that key wait for it (and so does the batch they share).
    expect(done).toBe(0);
    expect((await outboxRows(c, schema)).map((r) => r.id)).toEqual([]);
    await other.query('COMMIT');

    for (const s of await settling) resolved(s);
    const rows = (await outboxRows(c, schema)).filter((r) => r.key === 'customer-1');
    expect(rows.map((r) => r.id)).toEqual([theirs.id, calls[0]!.messages[0]!.id, calls[2]!.messages[0]!.id]);
  });

  it('keeps seq order = commit order per key for two processes appending to one key at once', async () => {
    const a = await open();
    const b = await open(a.schema);
    const c = await client();
    // A reader that polls the key's rows: a row newly visible must come after every row seen before.
    let stop = false;
    const violations: string[] = [];
    const seen = new Set<bigint>();
    const reader = (async () => {
      let maxSeen = 0n;
      while (!stop) {
        const { rows } = await c.query<{ seq: string }>(
          `SELECT o.seq::text AS seq FROM "${a.schema}".outbox o WHERE o.key = 'customer-1' ORDER BY o.seq`,
        );
        const seqs = rows.map((r) => BigInt(r.seq));
        const fresh = seqs.filter((s) => !seen.has(s));
        for (const s of fresh) {
          if (s < maxSeen) violations.push(`${s} appeared after ${maxSeen}`);
          seen.add(s);
        }
        for (const s of seqs) if (s > maxSeen) maxSeen = s;
      }
    })();
    const writer = (backend: PostgresEventStoreBackend, name: string) =>
      Promise.all(
        Array.from({ length: 8 }, async (_, p) => {
          for (let i = 0; i < 10; i++) {
            await backend
              .outboxStorage()
              .appendWithMessages(`${name}-${p}`, events('E'), i === 0 ? 'no_stream' : i - 1, [
                message('customer-1'),
              ]);
          }
        }),
      );
    await Promise.all([writer(a, 'a'), writer(b, 'b')]);
    stop = true;
    await reader;
    expect(violations).toEqual([]);
    expect((await outboxRows(c, a.schema)).length).toBe(160);
    expect(a.groupCommits + b.groupCommits).toBeGreaterThan(0);
  });

  it('rejects every call of a batch whose connection is killed each time, and commits nothing of it', async () => {
    const backend = await open();
    const schema = backend.schema;
    const holder = await client();
    const killer = await client();
    const c = await client();
    // Holding the key's lock keeps every attempt in flight, where its connection is killed.
    await holder.query('BEGIN');
    await holder.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [
      `ferry-outbox:${schema}:customer-1`,
    ]);
    const { rows: pidRows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const holderPid = pidRows[0]!.pid;
    const calls: Call[] = Array.from({ length: 5 }, (_, i) => ({
      stream: `order-${i}`,
      events: events('OrderPlaced'),
      expected: 'no_stream',
      messages: [message('customer-1')],
    }));
    const before = backend.groupCommits;
    let finished = false;
    const settling = together(backend, calls).finally(() => {
      finished = true;
    });
    let killed = 0;
    const deadline = Date.now() + 20_000;
    while (!finished && Date.now() < deadline) {
      const { rowCount } = await killer.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
        [holderPid],
      );
      killed += rowCount ?? 0;
      await sleep(20);
    }
    const settled = await settling;
    await holder.query('ROLLBACK');
    expect(killed).toBeGreaterThanOrEqual(calls.length);
    expect(settled.map((s) => s.status)).toEqual(calls.map(() => 'rejected'));
    expect(backend.groupCommits).toBe(before);
    expect(await outboxRows(c, schema)).toEqual([]);
    const { rows } = await c.query(`SELECT count(*)::int AS n FROM "${schema}".events`);
    expect(rows[0].n).toBe(0);
    // The backend goes on: the next append with a row of that key commits.
    await backend
      .outboxStorage()
      .appendWithMessages('order-9', events('A'), 'no_stream', [message('customer-1')]);
    expect((await outboxRows(c, schema)).length).toBe(1);
  });
});
