import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * A state could not be stored as a snapshot: it does not survive the JSON round trip backends store
 * it with (a `Map`, a `Date`, a class instance, a `bigint`, an `undefined` property…), or the
 * configured `serialize`/`deserialize` pair does not give it back. Passed to `onSnapshotError`; the
 * snapshot is not saved, and loads keep folding the events.
 */
export class SnapshotNotSerializableError extends FerryError {
  readonly streamId: string;
  readonly version: number;
  constructor(streamId: string, version: number, reason: string, cause?: unknown) {
    super(
      'SNAPSHOT_NOT_SERIALIZABLE',
      `the state of stream "${streamId}" at version ${version} cannot be stored as a snapshot: ${reason}`,
      cause === undefined ? {} : { cause },
    );
    this.streamId = streamId;
    this.version = version;
  }
}
export const isSnapshotNotSerializableError =
  errorGuard<SnapshotNotSerializableError>('SNAPSHOT_NOT_SERIALIZABLE');
