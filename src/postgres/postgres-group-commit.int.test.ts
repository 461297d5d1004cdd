import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isConcurrencyError, isDuplicateEventIdError } from '../eventstore/errors.js';
import { EventStore } from '../eventstore/store.js';
import type { AppendResult, ExpectedVersion, PreparedEvent, RecordedEvent } from '../eventstore/types.js';
import { silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { otherSession } from './fixtures/other-session.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of cleanup.splice(0).reverse()) await close();
});
afterAll(() => dropSchemas(schemas));

async function openBackend(): Promise<PostgresEventStoreBackend> {
  const schema = testSchemaName('group');
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({ url: postgresTestUrl(), schema, logger: silentLogger });
  await backend.open();
  cleanup.push(() => backend.close());
  return backend;
}

const client = () => otherSession(cleanup);

const event = (data: unknown = {}, id: string = randomUUID()): PreparedEvent => ({
  id,
  type: 'Tick',
  data,
  metadata: {},
});

/** The transactions that wrote the schema's events: a position is the transaction id shifted left by 16. */
async function transactions(c: pg.Client, schema: string): Promise<number> {
  const { rows } = await c.query(`SELECT count(DISTINCT position >> 16)::int AS n FROM "${schema}".events`);
  return rows[0].n;
}

async function storedIds(c: pg.Client, schema: string): Promise<Set<string>> {
  const { rows } = await c.query(`SELECT id FROM "${schema}".events`);
  return new Set(rows.map((r) => r.id as string));
}

describe('PostgreSQL group commit', () => {
  it("never fails an 'any' append for losing races, however many writers a stream has (two stores, 400 appends)", async () => {
    // Fresh stores each time: the first statements of a connection (not yet prepared) widen the races.
    for (let trial = 0; trial < 6; trial++) {
      const first = await openBackend();
      const second = new PostgresEventStoreBackend({
        url: postgresTestUrl(),
        schema: first.schema,
        logger: silentLogger,
      });
      await second.open();
      cleanup.push(() => second.close());
      const stream = 'hot';
      const outcomes = await Promise.allSettled(
        Array.from({ length: 400 }, (_, i) =>
          (i % 2 === 0 ? first : second).append(stream, [event({ i }), event({ i }), event({ i })], 'any'),
        ),
      );
      const refused = outcomes.filter((o) => o.status === 'rejected');
      expect(
        refused.map((o) => String((o as PromiseRejectedResult).reason)),
        `trial ${trial}`,
      ).toEqual([]);
      const stored = await first.readStream(stream, {});
      expect(stored.map((e) => e.version)).toEqual(Array.from({ length: 1200 }, (_, v) => v));
    }
  });

  it('commits 64 concurrent appends to distinct streams in a few transactions, each with its own result', async () => {
    const backend = await openBackend();
    const c = await client();
    const results = await Promise.all(
      Array.from({ length: 64 }, (_, i) => backend.append(`s-${i}`, [event({ i })], 'no_stream')),
    );
    expect(results.map((r) => r.nextExpectedVersion)).toEqual(Array.from({ length: 64 }, () => 0));
    expect(new Set(results.map((r) => r.position)).size).toBe(64);
    const { rows } = await c.query(`SELECT stream_id, position FROM "${backend.schema}".events`);
    expect(rows).toHaveLength(64);
    for (const row of rows) {
      expect(results[Number(row.stream_id.slice(2))]!.position).toBe(BigInt(row.position));
    }
    // Two go at once; the 62 called meanwhile share the next commit. One transaction per append without batching.
    expect(await transactions(c, backend.schema)).toBeLessThanOrEqual(4);
    expect(backend.groupCommits).toBeGreaterThanOrEqual(1);
  });

  it('commits the appends called before close() before it closes; later calls reject with EVENT_STORE_CLOSED', async () => {
    // Without it, 99 of 100 appends called just before close() rejected with pg's own "Cannot use a
    // pool after calling end on the pool" (no code): nothing half-written, but no typed error either.
    const schema = testSchemaName('close');
    schemas.push(schema);
    const backend = new PostgresEventStoreBackend({ url: postgresTestUrl(), schema, logger: silentLogger });
    await backend.open();
    const storage = backend.outboxStorage();
    const appended = Promise.allSettled([
      ...Array.from({ length: 90 }, (_, i) => backend.append(`c-${i}`, [event({ i })], 'no_stream')),
      ...Array.from({ length: 10 }, (_, i) => backend.append('c-same', [event({ i })], 'any')),
    ]);
    await backend.close();
    const settled = await appended;
    expect(settled.filter((r) => r.status === 'rejected')).toEqual([]);
    const c = await client();
    expect((await storedIds(c, schema)).size).toBe(100);
    await expect(backend.append('after', [event()], 'no_stream')).rejects.toMatchObject({
      code: 'EVENT_STORE_CLOSED',
    });
    await expect(storage.transaction(async () => 'never')).rejects.toMatchObject({
      code: 'EVENT_STORE_CLOSED',
    });
  });

  it('fails exactly the appends whose expected version does not hold, in call order per stream, and commits the others', async () => {
    const backend = await openBackend();
    for (let s = 0; s < 16; s++) await backend.append(`s-${s}`, [event()], 'no_stream');
    // Per stream, in call order: a right expectation (0), the same again (must lose to the first),
    // a wrong one (5); on odd streams the wrong one comes first, then the right one, then its twin.
    const calls: { stream: number; expected: ExpectedVersion; wins: boolean }[] = [];
    for (let s = 0; s < 16; s++) {
      if (s % 2 === 0) {
        calls.push({ stream: s, expected: 0, wins: true });
        calls.push({ stream: s, expected: 0, wins: false });
        calls.push({ stream: s, expected: 5, wins: false });
      } else {
        calls.push({ stream: s, expected: 5, wins: false });
        calls.push({ stream: s, expected: 'no_stream', wins: false });
        calls.push({ stream: s, expected: 0, wins: true });
        calls.push({ stream: s, expected: 0, wins: false });
      }
    }
    // Interleave the streams so that every batch holds appends of many streams.
    calls.sort(
      (a, b) =>
        calls.filter((c) => c.stream === a.stream).indexOf(a) -
        calls.filter((c) => c.stream === b.stream).indexOf(b),
    );
    const outcomes = await Promise.allSettled(
      calls.map((call) => backend.append(`s-${call.stream}`, [event(call)], call.expected)),
    );
    for (const [i, outcome] of outcomes.entries()) {
      const call = calls[i]!;
      if (call.wins) {
        expect(outcome.status, JSON.stringify(call)).toBe('fulfilled');
        expect((outcome as PromiseFulfilledResult<AppendResult>).value.nextExpectedVersion).toBe(1);
      } else {
        expect(outcome.status, JSON.stringify(call)).toBe('rejected');
        expect(isConcurrencyError((outcome as PromiseRejectedResult).reason)).toBe(true);
      }
    }
    for (let s = 0; s < 16; s++) {
      const events = await backend.readStream(`s-${s}`, {});
      expect(events.map((e) => e.version)).toEqual([0, 1]);
      expect((events[1]!.data as { expected: unknown }).expected).toBe(0);
    }
    expect(backend.groupCommits).toBeGreaterThanOrEqual(1);
  });

  it('fails only the append with a duplicate event id or data the database refuses; its batch-mates commit', async () => {
    const backend = await openBackend();
    const c = await client();
    const taken = randomUUID();
    const first = await backend.append('dup', [event({}, taken)], 'any');
    const appends = Array.from({ length: 40 }, (_, i) => ({ stream: `s-${i}`, events: [event({ i })] }));
    // Inside the batch: a duplicate id beside a new one, a repeated append (every id stored: a no-op
    // with the original result) and data PostgreSQL's jsonb refuses (NUL), which the store would catch.
    appends.splice(5, 0, { stream: 'dup', events: [event(), event({}, taken)] });
    appends.splice(10, 0, { stream: 'dup-again', events: [event({}, taken)] });
    appends.splice(15, 0, { stream: 'nul', events: [event({ text: 'a\u0000b' })] });
    const outcomes = await Promise.allSettled(appends.map((a) => backend.append(a.stream, a.events, 'any')));
    for (const [i, outcome] of outcomes.entries()) {
      const { stream } = appends[i]!;
      if (stream === 'dup') {
        expect(outcome.status).toBe('rejected');
        expect(isDuplicateEventIdError((outcome as PromiseRejectedResult).reason)).toBe(true);
      } else if (stream === 'nul') {
        expect(outcome.status).toBe('rejected');
        expect((outcome as PromiseRejectedResult).reason).toMatchObject({ code: '22P05' });
      } else {
        expect(outcome.status, stream).toBe('fulfilled');
      }
    }
    expect(await backend.readStream('dup', {})).toHaveLength(1);
    expect(await backend.readStream('nul', {})).toHaveLength(0);
    const again = outcomes[10] as PromiseFulfilledResult<AppendResult>;
    expect((await backend.readStream('dup-again', {})).map((e) => e.id)).toEqual([taken]);
    expect(again.value.nextExpectedVersion).toBe(0);
    expect(first.position).not.toBe(again.value.position);
    const ids = await storedIds(c, backend.schema);
    for (const a of appends.filter((a) => a.stream.startsWith('s-')))
      expect(ids.has(a.events[0]!.id)).toBe(true);
  });

  it('settles every append of a batch whose connection is killed: committed and visible, or rejected and absent', async () => {
    const backend = await openBackend();
    const c = await client();
    const { schema } = backend;
    await backend.append('warm', [event()], 'any');
    // Another session holds version 0 of 'held' uncommitted, so the batch that appends it waits on
    // the unique key, in the middle of its statement.
    const blocker = await client();
    await blocker.query('BEGIN');
    await blocker.query(
      `INSERT INTO "${schema}".events (position, stream_id, version, id, type, data, metadata)
       VALUES (txid_current() << 16, 'held', 0, $1, 'Tick', '{}', '{}')`,
      [randomUUID()],
    );
    const appends = Array.from({ length: 40 }, (_, i) => ({ stream: `s-${i}`, events: [event({ i })] }));
    appends.splice(10, 0, { stream: 'held', events: [event()] });
    const settled = Promise.allSettled(appends.map((a) => backend.append(a.stream, a.events, 'no_stream')));
    let pid: number | undefined;
    while (pid === undefined) {
      const { rows } = await c.query(
        `SELECT pid FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND application_name = 'ferry' AND query LIKE $1 AND query LIKE '%unnest($1::text[]%'`,
        [`%"${schema}".events%`],
      );
      pid = rows[0]?.pid;
      if (pid === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await c.query('SELECT pg_terminate_backend($1)', [pid]);
    // The appends go again; 'held' waits again until the other session commits its version 0.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await blocker.query('COMMIT');
    const outcomes = await settled;
    const ids = await storedIds(c, schema);
    let committed = 0;
    for (const [i, outcome] of outcomes.entries()) {
      const { stream, events } = appends[i]!;
      if (outcome.status === 'fulfilled') {
        committed++;
        expect(ids.has(events[0]!.id), stream).toBe(true);
        const stored = await backend.readStream(stream, {});
        expect(stored.map((e) => e.position)).toEqual([outcome.value.position]);
      } else {
        expect(ids.has(events[0]!.id), stream).toBe(false);
      }
    }
    // The lost connection is retried with the same ids: every append but the one that lost 'held' commits once.
    expect(committed).toBe(40);
    expect(isConcurrencyError((outcomes[10] as PromiseRejectedResult).reason)).toBe(true);
    const { rows } = await c.query(`SELECT count(*)::int AS n FROM "${schema}".events`);
    expect(rows[0].n).toBe(1 + 1 + 40);
  });

  it('shows readAll and a live subscription every committed event exactly once, in position order', async () => {
    const backend = await openBackend();
    const store = new EventStore(backend, { logger: silentLogger });
    const seen: RecordedEvent[] = [];
    const sub = store.subscribe({ name: 'all', idlePollMs: 50 }, (e) => {
      seen.push(e);
    });
    cleanup.push(() => sub.close());
    await sub.caughtUp();
    const committed = new Set<string>();
    await Promise.all(
      Array.from({ length: 64 }, async (_, w) => {
        for (let i = 0; i < 20; i++) {
          const id = randomUUID();
          // Every fifth append to a shared stream with 'any', the rest to the writer's own stream.
          const stream = i % 5 === 0 ? 'shared' : `w-${w}`;
          const expected = stream === 'shared' ? 'any' : i === 1 ? 'no_stream' : 'stream_exists';
          await store.append(stream, [{ id, type: 'Tick', data: { w, i } }], { expectedVersion: expected });
          committed.add(id);
        }
      }),
    );
    expect(committed.size).toBe(64 * 20);
    const all: RecordedEvent[] = [];
    for await (const e of store.readAll({ batchSize: 100 })) all.push(e);
    for (const events of [all, await waitFor(seen, committed.size)]) {
      expect(events.map((e) => e.id).sort()).toEqual([...committed].sort());
      for (let i = 1; i < events.length; i++)
        expect(events[i]!.position > events[i - 1]!.position).toBe(true);
    }
    expect(all.map((e) => e.position)).toEqual(seen.map((e) => e.position));
    expect(backend.groupCommits).toBeGreaterThanOrEqual(1);
  });
});

async function waitFor(seen: RecordedEvent[], count: number): Promise<RecordedEvent[]> {
  while (seen.length < count) await new Promise((resolve) => setTimeout(resolve, 20));
  await new Promise((resolve) => setTimeout(resolve, 100));
  return seen;
}
