import type { Pool, PoolClient } from 'pg';
import { StoreUnavailableError } from '../eventstore/errors.js';

/** pg-pool's error when no connection became free within `connectionTimeoutMillis`. */
const WAIT_TIMED_OUT = 'timeout exceeded when trying to connect';

type ConnectCallback = (
  error: Error | undefined,
  client: PoolClient | undefined,
  release: () => void,
) => void;

/**
 * Makes `pool` reject a wait for a connection that ran out of time (every connection busy, or the
 * server not answering the connect) with `StoreUnavailableError` (`STORE_UNAVAILABLE`) rather than
 * pg's plain, code-less Error: the statement was never sent. Covers `pool.query` too, which takes its
 * connection through `pool.connect`.
 */
export function typedPoolWait(pool: Pool, poolSize: number, timeoutMs: number): Pool {
  const connect = pool.connect.bind(pool) as (callback?: ConnectCallback) => Promise<PoolClient> | undefined;
  const typed = (error: unknown): unknown =>
    error instanceof Error && error.message === WAIT_TIMED_OUT
      ? new StoreUnavailableError(
          'postgres',
          `no PostgreSQL connection within ${timeoutMs} ms (all ${poolSize} of the pool's connections in use, or the server did not answer): the statement was not sent`,
          { cause: error },
        )
      : error;
  const patched = (callback?: ConnectCallback) => {
    if (typeof callback !== 'function') {
      return (connect() as Promise<PoolClient>).catch((error: unknown) => {
        throw typed(error);
      });
    }
    return connect((error, client, release) => callback(error && (typed(error) as Error), client, release));
  };
  pool.connect = patched as Pool['connect'];
  return pool;
}
