import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The unit of work the caller runs in, if any (the outbox's `unitOfWork` runs its callback in a frame, and
 * closes it when the callback settles): a unit of work opened inside another on the same storage is
 * refused rather than deadlocked (SQLite, memory) or committed apart (PostgreSQL), and so is the
 * store's own append (`store.append`), which would commit apart from the unit of work (or, on SQLite,
 * wait for its write lock).
 */
export const openUnits = new AsyncLocalStorage<{
  /** The outbox storage the unit of work runs on. */
  readonly storage: object;
  /** The event store backend the unit of work writes to. */
  readonly backend: object;
  open: boolean;
}>();

/** Whether the caller runs inside a unit of work still open on `storage`. */
export function insideUnitOf(storage: object | undefined): boolean {
  const outer = openUnits.getStore();
  return storage !== undefined && outer?.open === true && outer.storage === storage;
}

/** Whether the caller runs inside a unit of work still open on the store of `backend`. */
export function insideUnitOnBackend(backend: object): boolean {
  const outer = openUnits.getStore();
  return outer?.open === true && outer.backend === backend;
}
