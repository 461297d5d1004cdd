import { isConcurrencyError, isStoreUnavailableError } from '../eventstore/errors.js';
import {
  isSagaConcurrencyError,
  isUnitOfWorkOutcomeUnknownError,
  isUnitOfWorkRolledBackError,
  UnitOfWorkRolledBackError,
} from './errors.js';
import type { StorageTransaction } from './storage.js';

/**
 * `tx`, reporting the first call that rejects to `failed` (the rejection still reaches the caller).
 * Once a call failed the unit of work is doomed, so every later call rejects at once with
 * `UnitOfWorkRolledBackError` naming that first failure as its cause, on every backend (PostgreSQL
 * would otherwise answer "current transaction is aborted", SQLite would go on).
 */
export function guarded(tx: StorageTransaction, failed: (error: unknown) => void): StorageTransaction {
  let first: { readonly error: unknown } | undefined;
  const watch = <T>(call: () => Promise<T>): Promise<T> => {
    if (first !== undefined) return Promise.reject(doomedBy(first.error));
    return call().catch((error: unknown) => {
      if (first === undefined) {
        first = { error };
        failed(error);
      }
      throw error;
    });
  };
  return {
    get client() {
      return tx.client;
    },
    append: (streamId, events, expected) => watch(() => tx.append(streamId, events, expected)),
    readStream: (streamId, options) => watch(() => tx.readStream(streamId, options)),
    query: (sql, params) => watch(() => tx.query(sql, params)),
    lock: (keys) => watch(() => tx.lock(keys)),
    enqueue: (messages) => watch(() => tx.enqueue(messages)),
    cancel: (ids, now) => watch(() => tx.cancel(ids, now)),
    markHandled: (consumer, messageId, now) => watch(() => tx.markHandled(consumer, messageId, now)),
    loadSaga: (saga, id) => watch(() => tx.loadSaga(saga, id)),
    saveSaga: (row, expected) => watch(() => tx.saveSaga(row, expected)),
  };
}

/** Errors a unit of work rejects with as they are, whatever its work did with them. */
export const passedOn = (error: unknown): error is Error =>
  // Its own SQL's COMMIT kept what came before; or the store failed (a lost connection): the caller
  // and the bus tell an outage by this error, not by a rollback that names it as its cause.
  isUnitOfWorkOutcomeUnknownError(error) || isStoreUnavailableError(error);

/**
 * What a unit of work whose call failed with `error` rejects with, and its later calls: rolled back,
 * unless its transaction ended before the commit (its own SQL's COMMIT kept what came before), or
 * the store failed under it (`STORE_UNAVAILABLE`, as it is).
 */
export function doomedBy(error: unknown): Error {
  return passedOn(error) ? error : new UnitOfWorkRolledBackError({ cause: error });
}

/**
 * The error a unit of work rejects with when one of its calls failed and its callback resolved all
 * the same (the call caught, chained, or not awaited; see `UnitOfWork.untilCallsSettled`): rolled
 * back, as if the callback had thrown it.
 */
export function callFailed(error: unknown): Error {
  return passedOn(error)
    ? error
    : new UnitOfWorkRolledBackError(
        { cause: error },
        'the unit of work was rolled back: one of its calls failed (caught, chained or not awaited), so nothing of it was kept',
      );
}

/** A unit of work that lost a race to another writer (even if the work caught the error). */
export function lostRace(error: unknown): boolean {
  const race = (e: unknown) => isConcurrencyError(e) || isSagaConcurrencyError(e);
  return race(error) || (isUnitOfWorkRolledBackError(error) && race(error.cause));
}
