import { errorGuard, FerryError, type FerryErrorOptions } from '../errors/ferry-error.js';
import type { ExpectedVersion } from './types.js';

/**
 * The stream was not at the version the writer expected: someone else appended first (or the stream
 * does / does not exist). Reload, decide again, retry.
 */
export class ConcurrencyError extends FerryError {
  readonly streamId: string;
  readonly expected: ExpectedVersion;
  /** Version of the stream's last event when the append was refused; -1 when the stream does not exist. */
  readonly actual: number;
  /** `detail`: what else the caller must know, added to the message. */
  constructor(
    streamId: string,
    expected: ExpectedVersion,
    actual: number,
    options: { readonly detail?: string; readonly cause?: unknown } = {},
  ) {
    super(
      'CONCURRENCY_CONFLICT',
      `stream "${streamId}" is at version ${actual === -1 ? 'none (no stream)' : actual}, the append expected ${typeof expected === 'number' ? `version ${expected}` : expected}${options.detail === undefined ? '' : `: ${options.detail}`}`,
      { cause: options.cause },
    );
    this.streamId = streamId;
    this.expected = expected;
    this.actual = actual;
  }
}
export const isConcurrencyError = errorGuard<ConcurrencyError>('CONCURRENCY_CONFLICT');

/** Some, but not all, of the event ids of an append are already in the stream: neither a retry nor new events. */
export class DuplicateEventIdError extends FerryError {
  readonly streamId: string;
  readonly ids: readonly string[];
  /** `detail`: what else the caller must know, added to the message. */
  constructor(
    streamId: string,
    ids: readonly string[],
    options: { readonly detail?: string; readonly cause?: unknown } = {},
  ) {
    super(
      'DUPLICATE_EVENT_ID',
      `stream "${streamId}" already holds event ids ${ids.join(', ')} of this append, but not all of them${options.detail === undefined ? '' : `: ${options.detail}`}`,
      { cause: options.cause },
    );
    this.streamId = streamId;
    this.ids = ids;
  }
}
export const isDuplicateEventIdError = errorGuard<DuplicateEventIdError>('DUPLICATE_EVENT_ID');

/** An append or read with invalid arguments (empty stream id, bad UUID, non-JSON data…). Nothing was written. */
export class InvalidEventError extends FerryError {
  constructor(message: string, options: FerryErrorOptions = {}) {
    super('INVALID_EVENT', message, options);
  }
}
export const isInvalidEventError = errorGuard<InvalidEventError>('INVALID_EVENT');

/** The event store was closed (or, from `caughtUp()`, the subscription). */
export class EventStoreClosedError extends FerryError {
  constructor(message = 'the event store is closed') {
    super('EVENT_STORE_CLOSED', message);
  }
}
export const isEventStoreClosedError = errorGuard<EventStoreClosedError>('EVENT_STORE_CLOSED');

/**
 * The event store's storage could not be opened or used (PostgreSQL unreachable or refusing the
 * login, a connection that failed on every attempt, a SQLite file that cannot be created…). `cause`
 * is the driver's error; passwords are masked in the message.
 */
export class StoreUnavailableError extends FerryError {
  /** The backend's name: `memory`, `sqlite`, `postgres`, or a custom backend's. */
  readonly backend: string;
  /**
   * Whether what failed may have been kept all the same: the connection broke while a unit of work
   * committed or a write ran, or SQLite committed but could not sync its log. `false` when nothing
   * was done (the connection was refused, never given, or broke before the commit).
   */
  readonly outcomeUnknown: boolean;
  constructor(
    backend: string,
    message: string,
    options: FerryErrorOptions & { readonly outcomeUnknown?: boolean } = {},
  ) {
    super('STORE_UNAVAILABLE', message, options);
    this.backend = backend;
    this.outcomeUnknown = options.outcomeUnknown ?? false;
  }
}
export const isStoreUnavailableError = errorGuard<StoreUnavailableError>('STORE_UNAVAILABLE');

/**
 * A unit of work on a store whose backend cannot run one (or `work.query` on the memory backend), or
 * a call a unit of work cannot take: one nested in another, `store.append` inside one.
 */
export class UnitOfWorkUnsupportedError extends FerryError {
  constructor(message: string, options: FerryErrorOptions = {}) {
    super('UNIT_OF_WORK_UNSUPPORTED', message, options);
  }
}
export const isUnitOfWorkUnsupportedError =
  errorGuard<UnitOfWorkUnsupportedError>('UNIT_OF_WORK_UNSUPPORTED');
