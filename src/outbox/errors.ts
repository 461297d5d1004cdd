import { errorGuard, FerryError, type FerryErrorOptions } from '../errors/ferry-error.js';

/**
 * A saga instance was written by someone else since it was loaded (another message for the same
 * instance, handled at the same time, maybe on another instance of the service). Nothing of the
 * transition was kept: load the instance again and handle the message again.
 */
export class SagaConcurrencyError extends FerryError {
  readonly saga: string;
  readonly id: string;
  /** The version the writer expected (0: a new instance). */
  readonly expected: number;
  constructor(saga: string, id: string, expected: number) {
    super(
      'SAGA_CONCURRENCY_CONFLICT',
      expected === 0
        ? `saga "${saga}" instance "${id}" already exists`
        : `saga "${saga}" instance "${id}" is no longer at version ${expected}: another message changed it`,
    );
    this.saga = saga;
    this.id = id;
    this.expected = expected;
  }
}
export const isSagaConcurrencyError = errorGuard<SagaConcurrencyError>('SAGA_CONCURRENCY_CONFLICT');

/**
 * What {@link Outbox.healthCheck} fails with: messages set aside as failed beyond `maxFailed`, or the
 * oldest message due waiting longer than `maxAgeMs` (the relay is stuck or the broker unreachable).
 */
export class OutboxUnhealthyError extends FerryError {
  readonly failed: number;
  readonly pending: number;
  readonly oldestAgeMs: number;
  constructor(message: string, backlog: { failed: number; pending: number; oldestAgeMs: number }) {
    super('OUTBOX_UNHEALTHY', message);
    this.failed = backlog.failed;
    this.pending = backlog.pending;
    this.oldestAgeMs = backlog.oldestAgeMs;
  }
}
export const isOutboxUnhealthyError = errorGuard<OutboxUnhealthyError>('OUTBOX_UNHEALTHY');

// Defined beside the event store, which refuses `store.append` inside a unit of work with it.
export { isUnitOfWorkUnsupportedError, UnitOfWorkUnsupportedError } from '../eventstore/errors.js';

/**
 * The database rolled the unit of work back at commit: one of its statements failed and the work
 * caught that error and went on (PostgreSQL then answers COMMIT with ROLLBACK). Nothing of it was kept.
 */
export class UnitOfWorkRolledBackError extends FerryError {
  constructor(
    options: FerryErrorOptions = {},
    message = 'the unit of work was rolled back: one of its statements failed (and its error was caught), so nothing of it was kept',
  ) {
    super('UNIT_OF_WORK_ROLLED_BACK', message, options);
  }
}
export const isUnitOfWorkRolledBackError = errorGuard<UnitOfWorkRolledBackError>('UNIT_OF_WORK_ROLLED_BACK');

/**
 * A message id already in the outbox: the same explicit `id` given twice in a unit of work (or an
 * `outbox.append`), or given while the row of an earlier message with that id is still there (not
 * yet published, waiting for a retry, scheduled or set aside as failed). Nothing of the unit of work
 * or the append was kept. Once the earlier message was published and its row deleted, the id is
 * accepted again (consumers' inboxes would then drop the new message as a duplicate).
 */
export class DuplicateMessageIdError extends FerryError {
  readonly id: string;
  constructor(id: string, options: FerryErrorOptions = {}) {
    super(
      'DUPLICATE_MESSAGE_ID',
      `the outbox already holds a message with id ${JSON.stringify(id.slice(0, 255))}: give each message its own id`,
      options,
    );
    this.id = id;
  }
}
export const isDuplicateMessageIdError = errorGuard<DuplicateMessageIdError>('DUPLICATE_MESSAGE_ID');

/** The outbox was closed: no more units of work, appends or redrives through it. */
export class OutboxClosedError extends FerryError {
  constructor() {
    super('OUTBOX_CLOSED', 'the outbox is closed');
  }
}
export const isOutboxClosedError = errorGuard<OutboxClosedError>('OUTBOX_CLOSED');

/**
 * A unit of work whose outcome is not known, so it is not run again for you: find out (a
 * transactional inbox's mark tells on the redelivery), or write it again idempotently.
 * - `batch` (SQLite): it ended well, but another unit of work of the same batch (they share one
 *   transaction, each in a savepoint) ended that transaction before the commit: its SQL ran COMMIT or
 *   ROLLBACK, or SQLite rolled it back after an error. `cause` is that unit's error.
 * - `own-sql` (SQLite, PostgreSQL): its own SQL (`work.query`) ended the transaction (or SQLite
 *   rolled it back after an error): a COMMIT kept what it wrote before (with the units of its batch
 *   on SQLite), a ROLLBACK did not. Nothing of it after that statement is written, and none of its
 *   later calls runs: each rejects with this error.
 */
export class UnitOfWorkOutcomeUnknownError extends FerryError {
  readonly reason: 'batch' | 'own-sql';
  constructor(cause: unknown, reason: 'batch' | 'own-sql' = 'batch') {
    super(
      'UNIT_OF_WORK_OUTCOME_UNKNOWN',
      reason === 'batch'
        ? 'another unit of work of the same batch ended the shared transaction before the commit (its SQL ran COMMIT or ROLLBACK, or SQLite rolled it back after an error): what this one wrote may or may not have been kept'
        : "the unit of work's transaction ended before its commit, by its own SQL (COMMIT or ROLLBACK) or by SQLite after an error: what it wrote before that was kept by a COMMIT, not otherwise, and nothing after it is written",
      cause === undefined ? {} : { cause },
    );
    this.reason = reason;
  }
}

/** True when `error` is a {@link UnitOfWorkOutcomeUnknownError}. */
export const isUnitOfWorkOutcomeUnknownError = errorGuard<UnitOfWorkOutcomeUnknownError>(
  'UNIT_OF_WORK_OUTCOME_UNKNOWN',
);
