import type Database from 'better-sqlite3';
import type { ReadStreamOptions, RecordedEvent } from '../eventstore/types.js';
import { boundLimit } from './bound-limit.js';

/** A row of `ferry_events`, integers as bigint (`defaultSafeIntegers`). */
export interface EventRow {
  position: bigint;
  stream_id: string;
  version: bigint;
  id: string;
  type: string;
  data: string;
  metadata: string;
  time: string;
}

export const EVENT_COLUMNS = 'position, stream_id, version, id, type, data, metadata, time';

/** The statements reading one stream, prepared on a connection (the store's, or a unit of work's). */
export interface ReadStreamStatements {
  readonly readForward: Database.Statement<[string, number, number], EventRow>;
  readonly readBackward: Database.Statement<[string, number, number], EventRow>;
}

export function prepareReadStream(db: Database.Database): ReadStreamStatements {
  return {
    readForward: db.prepare<[string, number, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM ferry_events WHERE stream_id = ? AND version >= ? ORDER BY version ${boundLimit()}`,
    ),
    readBackward: db.prepare<[string, number, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM ferry_events WHERE stream_id = ? AND version <= ? ORDER BY version DESC ${boundLimit()}`,
    ),
  };
}

/** The events of a stream, as `readStream` options select them, on the statements' connection. */
export function readStreamWith(
  s: ReadStreamStatements,
  streamId: string,
  options: ReadStreamOptions,
): RecordedEvent[] {
  const limit = options.limit ?? -1; // LIMIT -1: no limit
  const rows =
    options.direction === 'backward'
      ? s.readBackward.all(streamId, options.fromVersion ?? Number.MAX_SAFE_INTEGER, limit)
      : s.readForward.all(streamId, options.fromVersion ?? 0, limit);
  return rows.map(toRecordedEvent);
}

export function toRecordedEvent(row: EventRow): RecordedEvent {
  return {
    streamId: row.stream_id,
    version: Number(row.version),
    position: row.position,
    id: row.id,
    type: row.type,
    data: JSON.parse(row.data),
    metadata: JSON.parse(row.metadata),
    time: row.time,
  };
}
