import { StoreUnavailableError } from '../eventstore/errors.js';

/** Connection-level failures: the statement may or may not have run, and the connection is gone. */
const CONNECTION_FAILURE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  '57P01',
  '57P02',
  '57P03',
  // The server ended a session left idle: in a transaction (idle_in_transaction_session_timeout), or not.
  '25P03',
  '57P05',
  '08000',
  '08003',
  '08006',
]);

/** The connection broke (rather than the statement failing): an idempotent statement may be retried. */
export function isConnectionFailure(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  // pg reports a dropped socket as a plain Error without a code.
  return (
    CONNECTION_FAILURE_CODES.has(code ?? '') ||
    /^Connection terminated|^Client has encountered a connection error/.test(message ?? '')
  );
}

/**
 * `error` as callers meet it once no attempt is left: a connection failure as `StoreUnavailableError`
 * (`STORE_UNAVAILABLE`, the driver's error as `cause`), saying what it interrupted, whose outcome
 * is unknown; any other error as it is. `write`: the statement changes what a second run would
 * change again, so its outcome is unknown (`outcomeUnknown`) unless the server refused the
 * connection (nothing was sent).
 */
export function unavailableIfConnectionFailed(error: unknown, what: string, write = false): unknown {
  if (!isConnectionFailure(error)) return error;
  const { code } = error as { code?: unknown };
  return new StoreUnavailableError(
    'postgres',
    `the database connection failed ${what}: whether it took effect is unknown (${(error as Error).message})`,
    { cause: error, outcomeUnknown: write && code !== 'ECONNREFUSED' },
  );
}
