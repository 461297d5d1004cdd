import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';

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
    text: `
      WITH a AS MATERIALIZED (
        SELECT a.ord, a.stream_id, cur.v
        FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS a(stream_id, kind, exact, ord)
        CROSS JOIN LATERAL (SELECT COALESCE(max(version), -1) AS v FROM ${s}.events WHERE stream_id = a.stream_id) cur
        WHERE CASE a.kind
          WHEN 'any' THEN true
          WHEN 'no_stream' THEN cur.v = -1
          WHEN 'stream_exists' THEN cur.v >= 0
          ELSE cur.v = a.exact
        END
      )
      INSERT INTO ${s}.events (position, stream_id, version, id, type, data, metadata)
      SELECT (txid_current() << 16) + row_number() OVER (ORDER BY e.ord) - 1, a.stream_id, a.v + e.idx,
             e.id, e.type, e.data::jsonb, e.metadata::jsonb
      FROM unnest($4::int4[], $5::int4[], $6::uuid[], $7::text[], $8::text[], $9::text[])
             WITH ORDINALITY AS e(app, idx, id, type, data, metadata, ord)
      JOIN a ON a.ord = e.app
      RETURNING position, stream_id, version`,
  };
}
