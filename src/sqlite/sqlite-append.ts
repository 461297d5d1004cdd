import type Database from 'better-sqlite3';
import { ConcurrencyError, DuplicateEventIdError } from '../eventstore/errors.js';
import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';
import { expectedVersionHolds } from '../eventstore/versions.js';
import { isUniqueViolation } from './unique-violation.js';

export interface AppendStatements {
  readonly findIds: Database.Statement<[string, string], { id: string; version: bigint; position: bigint }>;
  readonly currentVersion: Database.Statement<[string], bigint>;
  readonly insert: Database.Statement<[string, number, string, string, string, string, string]>;
}

/**
 * The statements an append needs, prepared on one connection: the store's own, or the one its units
 * of work run on (`SqliteOutboxStorage`).
 */
export function prepareAppendStatements(db: Database.Database): AppendStatements {
  return {
    findIds: db.prepare<[string, string], { id: string; version: bigint; position: bigint }>(
      'SELECT id, version, position FROM ferry_events WHERE stream_id = ? AND id IN (SELECT value FROM json_each(?))',
    ),
    currentVersion: db
      .prepare<[string], bigint>('SELECT coalesce(max(version), -1) FROM ferry_events WHERE stream_id = ?')
      .pluck(),
    insert: db.prepare<[string, number, string, string, string, string, string]>(
      'INSERT INTO ferry_events (stream_id, version, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
  };
}

/** An append's result, and whether it wrote (false: every event id was already in the stream). */
export type AppendOutcome = AppendResult & { readonly written: boolean };

/**
 * The body of an append's transaction: idempotency check, version check, inserts. The caller runs it
 * in a transaction holding the write lock (BEGIN IMMEDIATE), so nothing slips in between.
 *
 * One event whose expected version holds is inserted at once: an id already in the stream fails that
 * insert alone (`UNIQUE (stream_id, id)`, nothing of it written), and only then are the ids looked up,
 * as for every other append. The append that writes, nearly every one, so reads no ids first.
 */
export function appendRows(
  s: AppendStatements,
  streamId: string,
  events: readonly PreparedEvent[],
  expected: ExpectedVersion,
): AppendOutcome {
  if (events.length === 1) {
    const current = Number(s.currentVersion.get(streamId)!);
    if (expectedVersionHolds(expected, current)) {
      try {
        return insertRows(s, streamId, events, current);
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
      }
    }
  }
  const found = new Map(
    s.findIds.all(streamId, JSON.stringify(events.map((e) => e.id))).map((r) => [r.id, r]),
  );
  const duplicates = events.filter((e) => found.has(e.id)).map((e) => e.id);
  if (duplicates.length === events.length) {
    // The latest of them: what their append returned, in whatever order they come again.
    let last = found.get(events[0]!.id)!;
    for (const row of found.values()) if (Number(row.version) > Number(last.version)) last = row;
    return { nextExpectedVersion: Number(last.version), position: last.position, written: false };
  }
  if (duplicates.length > 0) throw new DuplicateEventIdError(streamId, duplicates);
  const current = Number(s.currentVersion.get(streamId)!);
  if (!expectedVersionHolds(expected, current)) throw new ConcurrencyError(streamId, expected, current);
  return insertRows(s, streamId, events, current);
}

/** Inserts `events` after version `current` of the stream. */
function insertRows(
  s: AppendStatements,
  streamId: string,
  events: readonly PreparedEvent[],
  current: number,
): AppendOutcome {
  const time = new Date().toISOString();
  let position = 0n;
  for (const [i, e] of events.entries()) {
    const data = JSON.stringify(e.data ?? null);
    const info = s.insert.run(
      streamId,
      current + 1 + i,
      e.id,
      e.type,
      data,
      JSON.stringify(e.metadata),
      time,
    );
    position = BigInt(info.lastInsertRowid);
  }
  return { nextExpectedVersion: current + events.length, position, written: true };
}
