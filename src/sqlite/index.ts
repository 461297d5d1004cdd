// Where `ferry/sqlite` has always exported it from; `ferry` exports it too (PostgreSQL raises it as well).
export { isUnitOfWorkOutcomeUnknownError, UnitOfWorkOutcomeUnknownError } from '../outbox/errors.js';
export {
  DEFAULT_SQLITE_BACKEND_OPTIONS,
  type SqliteBackendOptions,
  SqliteEventStoreBackend,
} from './sqlite-backend.js';
export { SqliteIdempotencyStore } from './sqlite-idempotency-store.js';
export { SqliteInbox } from './sqlite-inbox.js';
export { SqliteOutboxStorage } from './sqlite-outbox.js';
export {
  DEFAULT_SQLITE_UNIT_OF_WORK_BATCH,
  type SqliteUnitOfWorkBatchOptions,
} from './sqlite-unit-of-work.js';
export { isStoreBusyError, StoreBusyError } from './store-busy.js';
