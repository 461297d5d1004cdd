export type { OpenTransaction } from '../eventstore/held-back.js';
export { MIGRATIONS, type Migration, migrate } from './migrations.js';
export {
  DEFAULT_POSTGRES_BACKEND_OPTIONS,
  type PostgresBackendOptions,
  PostgresEventStoreBackend,
} from './postgres-backend.js';
export { PostgresIdempotencyStore } from './postgres-idempotency-store.js';
export { PostgresInbox } from './postgres-inbox.js';
export { PostgresOutboxStorage } from './postgres-outbox.js';
