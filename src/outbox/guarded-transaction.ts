import { isConcurrencyError } from '../eventstore/errors.js';
import { isSagaConcurrencyError, isUnitOfWorkRolledBackError } from './errors.js';
import type { StorageTransaction } from './storage.js';

/** `tx`, reporting every call that rejects to `failed` (the rejection still reaches the caller). */
export function guarded(tx: StorageTransaction, failed: (error: unknown) => void): StorageTransaction {
  const watch = <T>(promise: Promise<T>): Promise<T> =>
    promise.catch((error: unknown) => {
      failed(error);
      throw error;
    });
  return {
    get client() {
      return tx.client;
    },
    append: (streamId, events, expected) => watch(tx.append(streamId, events, expected)),
    query: (sql, params) => watch(tx.query(sql, params)),
    enqueue: (messages) => watch(tx.enqueue(messages)),
    cancel: (ids, now) => watch(tx.cancel(ids, now)),
    markHandled: (consumer, messageId, now) => watch(tx.markHandled(consumer, messageId, now)),
    loadSaga: (saga, id) => watch(tx.loadSaga(saga, id)),
    saveSaga: (row, expected) => watch(tx.saveSaga(row, expected)),
  };
}

/** A unit of work that lost a race to another writer (even if the work caught the error). */
export function lostRace(error: unknown): boolean {
  const race = (e: unknown) => isConcurrencyError(e) || isSagaConcurrencyError(e);
  return race(error) || (isUnitOfWorkRolledBackError(error) && race(error.cause));
}
