/** Kept where `ferry/sqlite` has always exported it from; it lives with the outbox's errors. */
export { isUnitOfWorkOutcomeUnknownError, UnitOfWorkOutcomeUnknownError } from '../outbox/errors.js';
