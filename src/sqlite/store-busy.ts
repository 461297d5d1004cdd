import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * Another connection held SQLite's write lock for longer than `busyTimeoutMs`: nothing was written.
 * Safe to try again; `cause` is the driver's last `SQLITE_BUSY`.
 */
export class StoreBusyError extends FerryError {
  readonly waitedMs: number;
  constructor(waitedMs: number, cause: unknown) {
    super('STORE_BUSY', `the SQLite database stayed locked by another connection for ${waitedMs} ms`, {
      cause,
    });
    this.waitedMs = waitedMs;
  }
}

/** True when `error` is a {@link StoreBusyError}. */
export const isStoreBusyError = errorGuard<StoreBusyError>('STORE_BUSY');

/** How long a write waits, in all, for another connection's lock: `busyTimeoutMs`'s default. */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * How long the driver itself waits for a lock before giving control back. It waits by sleeping in
 * the calling thread, that is the event loop, so it stays short; longer waits happen in `whileBusy`.
 */
export const DRIVER_BUSY_TIMEOUT_MS = 5;

function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code === 'SQLITE_BUSY' || code.startsWith('SQLITE_BUSY_'));
}

/**
 * Runs `operation` (a synchronous driver call, a whole transaction), trying again with backoff while
 * another connection holds the lock, for up to `totalMs` counted from `started` (a caller that
 * waited for its turn first passes when it began): the event loop runs between tries.
 * @throws StoreBusyError when the lock is still held after `totalMs`.
 */
export async function whileBusy<T>(totalMs: number, operation: () => T, started = Date.now()): Promise<T> {
  for (let round = 0; ; round++) {
    try {
      return operation();
    } catch (error) {
      if (!isBusy(error)) throw error;
      const waited = Date.now() - started;
      if (waited >= totalMs) throw new StoreBusyError(waited, error);
      // 2, 4, 8 … 50 ms, jittered so that processes waiting on one lock do not retry in step.
      const delay = Math.min(50, 2 ** (round + 1)) * (0.5 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, totalMs - waited)));
    }
  }
}
