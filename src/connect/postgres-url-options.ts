/**
 * Options of the PostgreSQL backend that {@link CreateEventStoreOptions.postgres} passes on when
 * `url` selects it. Plain types, not the adapter's own: the adapter's declarations name pg, and a
 * service that uses another backend must type-check without pg installed. The adapter's
 * `PostgresBackendOptions` minus `url` and `logger` must stay exactly this type;
 * `src/connect/adapter-options.test.ts` checks it.
 */
export interface PostgresUrlOptions {
  /** Schema holding the store's tables, created and migrated on open. @default 'ferry' */
  readonly schema?: string;
  /** Connections in the pool. @default 10 */
  readonly poolSize?: number;
  /** Least time between two NOTIFYs that wake subscribers in other processes, from 0 to 2147483647. @default 2 */
  readonly notifyIntervalMs?: number;
  /**
   * Longest wait for transactions open elsewhere in the cluster when finding the end of the global
   * order; past it, `horizon()` rejects with `ReadHeldBackError`. @default 5000
   */
  readonly horizonWaitMs?: number;
  /** A transaction open longer than this that holds reads in global order back is logged. @default 10000 */
  readonly longTransactionWarnMs?: number;
  /**
   * Longest a statement may run, waiting for a lock included, before PostgreSQL cancels it (error
   * code `57014`); migrations at open have no limit. `0` for none. @default 30000
   */
  readonly statementTimeoutMs?: number;
}
