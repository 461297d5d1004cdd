import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';
import type { OutboxInsert } from '../outbox/storage.js';

/*
 * The PostgreSQL backend's group commit: appends to distinct streams in one statement. The queue that
 * forms batches lives in the backend (postgres-backend.ts), beside the single-append path it falls
 * back to.
 */

/** The exact version an append expects, `no_stream` being -1; null for `any` and `stream_exists`. */
export function exactVersion(expected: ExpectedVersion): number | null {
  return typeof expected === 'number' ? expected : expected === 'no_stream' ? -1 : null;
}

/** An append waiting for its batch. */
export interface QueuedAppend {
  readonly streamId: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ExpectedVersion;
  /** Outbox rows to insert in the same commit when (and only when) the append writes. */
  readonly messages?: readonly OutboxInsert[];
  readonly resolve: (result: AppendResult) => void;
  readonly reject: (error: unknown) => void;
}

/** The parameters of the batch statement: one array per column, of appends and of their events. */
export function batchParameters(batch: readonly QueuedAppend[]): unknown[] {
  const app: number[] = [];
  const index: number[] = [];
  const ids: string[] = [];
  const types: string[] = [];
  const data: (string | undefined)[] = [];
  const metadata: string[] = [];
  for (const [a, append] of batch.entries()) {
    for (const [i, e] of append.events.entries()) {
      app.push(a + 1);
      index.push(i + 1);
      ids.push(e.id);
      types.push(e.type);
      data.push(JSON.stringify(e.data));
      metadata.push(JSON.stringify(e.metadata));
    }
  }
  return [
    batch.map((a) => a.streamId),
    batch.map((a) => (typeof a.expected === 'number' ? 'exact' : a.expected)),
    batch.map((a) => (typeof a.expected === 'number' ? a.expected : null)),
    app,
    index,
    ids,
    types,
    data,
    metadata,
  ];
}

/**
 * Appends to distinct streams in one statement: each append's current version and expected-version
 * check on its own row, then the events of the appends that passed. Positions follow call order
 * from the transaction's base, as in a single append.
 */
export function batchAppendStatement(s: string): { readonly name: string; readonly text: string } {
  return {
    name: `ferry-append-batch-${s}`,
    text: `WITH ${CHECKED(s)}, ins AS (${INSERT_EVENTS(s)})
      SELECT position, stream_id, version FROM ins`,
  };
}

/**
 * The parameters of {@link batchOutboxStatement}: the batch's, then its outbox rows (one array per
 * column, each row naming its append), then the prefix of the advisory lock of a key.
 */
export function batchOutboxParameters(batch: readonly QueuedAppend[], lockPrefix: string): unknown[] {
  const app: number[] = [];
  const ids: string[] = [];
  const keys: string[] = [];
  const envelopes: string[] = [];
  const createdAt: number[] = [];
  const dueAt: number[] = [];
  for (const [a, append] of batch.entries()) {
    for (const m of append.messages ?? []) {
      app.push(a + 1);
      ids.push(m.id);
      keys.push(m.key);
      envelopes.push(m.envelope);
      createdAt.push(Math.floor(m.createdAt));
      dueAt.push(Math.floor(m.dueAt));
    }
  }
  return [...batchParameters(batch), app, ids, keys, envelopes, createdAt, dueAt, lockPrefix];
}

/**
 * {@link batchAppendStatement} that also inserts the outbox rows of the appends it writes, so that
 * events and messages share one statement, one transaction and one commit. Within a statement that
 * succeeds, the appends that passed their check (`a`) are exactly those written: an insert that
 * fails fails the statement. The steps run in the order of a unit of work: events, then the
 * advisory locks of the explicit keys (sorted, as `lockKeys` takes them, so that two transactions
 * never wait on each other's keys), then the rows, whose seq is drawn under those locks: per key,
 * seq order is commit order across processes (see `PostgresStorageTransaction.enqueue`). A
 * one-time filter on the previous step (an InitPlan, evaluated before its node reads a row) orders
 * each step after the one before.
 */
export function batchOutboxStatement(s: string): { readonly name: string; readonly text: string } {
  return {
    name: `ferry-append-batch-outbox-${s}`,
    text: `WITH ${CHECKED(s)}, ins AS (${INSERT_EVENTS(s)}),
      m AS MATERIALIZED (
        SELECT m.id, m.key, m.envelope, m.created_at, m.due_at, m.ord
        FROM unnest($10::int4[], $11::text[], $12::text[], $13::text[], $14::int8[], $15::int8[])
               WITH ORDINALITY AS m(app, id, key, envelope, created_at, due_at, ord)
        JOIN a ON a.ord = m.app
      ),
      locks AS MATERIALIZED (
        SELECT count(pg_advisory_xact_lock(hashtextextended($16::text || k.key, 0))) AS n
        FROM (
          SELECT DISTINCT key FROM m WHERE key <> id AND (SELECT count(*) FROM ins) >= 0 ORDER BY key
        ) k
      ),
      outbox AS (
        INSERT INTO ${s}.outbox (id, key, envelope, created_at, due_at)
        SELECT m.id, m.key, m.envelope, m.created_at, m.due_at
        FROM m WHERE (SELECT n FROM locks) >= 0
        ORDER BY m.ord
        RETURNING 1
      )
      SELECT position, stream_id, version, (SELECT count(*) FROM outbox)::int4 AS enqueued FROM ins`,
  };
}

/** The appends whose expected version holds (`a`), with their stream's current version. */
const CHECKED = (s: string) => `a AS MATERIALIZED (
        SELECT a.ord, a.stream_id, cur.v
        FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS a(stream_id, kind, exact, ord)
        CROSS JOIN LATERAL (SELECT COALESCE(max(version), -1) AS v FROM ${s}.events WHERE stream_id = a.stream_id) cur
        WHERE CASE a.kind
          WHEN 'any' THEN true
          WHEN 'no_stream' THEN cur.v = -1
          WHEN 'stream_exists' THEN cur.v >= 0
          ELSE cur.v = a.exact
        END
      )`;

/** The events of the appends in `a`. */
const INSERT_EVENTS = (s: string) => `
      INSERT INTO ${s}.events (position, stream_id, version, id, type, data, metadata)
      SELECT (txid_current() << 16) + row_number() OVER (ORDER BY e.ord) - 1, a.stream_id, a.v + e.idx,
             e.id, e.type, e.data::jsonb, e.metadata::jsonb
      FROM unnest($4::int4[], $5::int4[], $6::uuid[], $7::text[], $8::text[], $9::text[])
             WITH ORDINALITY AS e(app, idx, id, type, data, metadata, ord)
      JOIN a ON a.ord = e.app
      RETURNING position, stream_id, version`;
