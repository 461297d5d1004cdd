import type { Pool, QueryResult, QueryResultRow } from 'pg';
import { EventStoreClosedError } from '../eventstore/errors.js';
import { isConnectionFailure, unavailableIfConnectionFailed } from './connection-failure.js';

/** How a statement on the pool is run and described when its connection fails. */
export interface StoreQueryOptions {
  /** What the statement is, for the error: "an inbox statement", "a read". */
  readonly what: string;
  /**
   * Attempts on a fresh connection when the connection fails (1: none again). More than one only for
   * a statement that may run twice: a read, or a write that is a no-op the second time.
   */
  readonly attempts?: number;
}

/**
 * One statement on the backend's pool, as the store's callers meet it: `EventStoreClosedError` once
 * the backend has ended the pool (before the call, or while it ran: pg's own "Cannot use a pool
 * after calling end on the pool" has no code); a connection that fails under it goes again up to
 * `attempts` times (100 ms, 200 ms … apart), then rejects `STORE_UNAVAILABLE` (pg's error as
 * `cause`); any other error as pg raised it.
 */
export async function storeQuery<R extends QueryResultRow = QueryResultRow>(
  pool: Pool,
  ended: () => boolean,
  text: string,
  values: readonly unknown[],
  options: StoreQueryOptions,
): Promise<QueryResult<R>> {
  const attempts = options.attempts ?? 1;
  for (let attempt = 1; ; attempt++) {
    if (ended()) throw new EventStoreClosedError();
    try {
      return await pool.query<R>(text, values as unknown[]);
    } catch (error) {
      if (ended()) throw new EventStoreClosedError();
      if (!isConnectionFailure(error)) throw error;
      if (attempt >= attempts) {
        // A statement allowed more than one attempt may run twice; one allowed a single attempt may not.
        throw unavailableIfConnectionFailed(
          error,
          attempts > 1 ? `on each of ${attempts} attempts of ${options.what}` : `under ${options.what}`,
          attempts === 1,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
}
