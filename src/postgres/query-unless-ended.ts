import type { Pool, QueryResult, QueryResultRow } from 'pg';
import { EventStoreClosedError } from '../eventstore/errors.js';

/**
 * `pool.query`, said as `EventStoreClosedError` when the backend has ended the pool (before the
 * call, or while it ran): pg's own "Cannot use a pool after calling end on the pool" has no code.
 */
export async function queryUnlessEnded<R extends QueryResultRow = QueryResultRow>(
  pool: Pool,
  ended: () => boolean,
  text: string,
  values: readonly unknown[],
): Promise<QueryResult<R>> {
  if (ended()) throw new EventStoreClosedError();
  try {
    return await pool.query<R>(text, values as unknown[]);
  } catch (error) {
    if (ended()) throw new EventStoreClosedError();
    throw error;
  }
}
