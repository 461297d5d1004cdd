import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * A SQLite unit of work ended well, but another unit of work of the same batch (they share one
 * transaction, each in a savepoint) ended that transaction before the commit: its SQL ran COMMIT or
 * ROLLBACK, or SQLite rolled it back after an error. What this one wrote may or may not have been
 * kept, so it is not run again for you: find out (a transactional inbox's mark tells on the
 * redelivery), or write it again idempotently. `cause` is the error of the unit of work that ended it.
 */
export class UnitOfWorkOutcomeUnknownError extends FerryError {
  constructor(cause: unknown) {
    super(
      'UNIT_OF_WORK_OUTCOME_UNKNOWN',
      'another unit of work of the same batch ended the shared transaction before the commit (its SQL ran COMMIT or ROLLBACK, or SQLite rolled it back after an error): what this one wrote may or may not have been kept',
      { cause },
    );
  }
}

/** True when `error` is a {@link UnitOfWorkOutcomeUnknownError}. */
export const isUnitOfWorkOutcomeUnknownError = errorGuard<UnitOfWorkOutcomeUnknownError>(
  'UNIT_OF_WORK_OUTCOME_UNKNOWN',
);
