import { AsyncResource } from 'node:async_hooks';
import { EventStoreClosedError, isEventStoreClosedError } from '../eventstore/errors.js';
import { UnitOfWorkOutcomeUnknownError, UnitOfWorkUnsupportedError } from '../outbox/errors.js';
import { InFlight } from '../outbox/in-flight.js';
import type { StorageTransaction } from '../outbox/storage.js';
import { atEndOfTurn } from '../time/end-of-turn.js';
import {
  type Connection,
  prepareConnection,
  SqliteStorageTransaction,
  transactionEnded,
  UNIT_SAVEPOINT,
} from './sqlite-storage-transaction.js';
import { DRIVER_BUSY_TIMEOUT_MS, whileBusy } from './store-busy.js';
import type { ReleaseWriteLock, WriteLock } from './write-lock.js';

/** Why a `:memory:` SQLite store has no outbox. */
export const SQLITE_MEMORY_HAS_NO_UNITS_OF_WORK =
  "units of work need a SQLite file: a ':memory:' database has one connection only (use a file, a temporary one in tests, or the memory event store)";

/** How many units of work of one process share a transaction, and so one commit. */
export interface SqliteUnitOfWorkBatchOptions {
  /** Most units of work in one transaction; 1 gives each its own. @default 64 */
  readonly maxUnits?: number;
  /**
   * Once the transaction has been open this long, no further unit of work joins it (the one running
   * finishes first): what waits meanwhile goes in the next, after the store's writes that queued. @default 5
   */
  readonly maxOpenMs?: number;
}

export const DEFAULT_SQLITE_UNIT_OF_WORK_BATCH = Object.freeze({ maxUnits: 64, maxOpenMs: 5 });

/** What units of work need from the backend that owns them. */
export interface SqliteUnitOfWorkHost {
  readonly path: string;
  readonly busyTimeoutMs: number;
  /** This process's turn at the file's write lock, shared with the store's own writes. */
  readonly lock: WriteLock;
  readonly batch: Required<SqliteUnitOfWorkBatchOptions>;
  /** Throws `EventStoreClosedError` while the backend is not open. */
  readonly ready: () => void;
  /** After a commit that appended events: wakes the store's watchers, as an append does. */
  readonly appended: () => void;
  /** After each commit, with how many units of work it committed (for tests and benchmarks). */
  readonly committed?: (units: number) => void;
  /**
   * After a commit: resolves once a disk sync of the file's WAL begun after it ended (the connection
   * commits with `synchronous = NORMAL`); rejects when that sync failed.
   */
  readonly afterCommit: () => Promise<void>;
}

interface QueuedUnit {
  readonly work: (tx: StorageTransaction) => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * What became of one unit of work of a batch: it ended well and waits for the commit; it failed and
 * its savepoint was rolled back (the batch goes on); or the batch's transaction was no longer there
 * at its end (the batch ends).
 */
type UnitOutcome =
  | { readonly done: true; readonly result: unknown; readonly appended: boolean }
  | { readonly done: false; readonly error: unknown; readonly ended: boolean };

/**
 * Units of work of a SQLite event store, on a second connection to its file of their own: a unit of
 * work holds SQLite's write lock across the awaits of its callback, and on its own connection nothing
 * else of the store (group commit, reads, subscriptions, inboxes) can see its uncommitted writes or
 * land inside it.
 *
 * Group commit: units of work of one process run one at a time, in call order, each in a SAVEPOINT
 * of a shared transaction (BEGIN IMMEDIATE … COMMIT): those called while one runs join the
 * transaction (up to `batch.maxUnits`, while it has been open less than `batch.maxOpenMs`), and one
 * commit, one WAL sync, serves them all. Each sees the writes of those before it, as if they ran
 * alone. A unit that throws has its savepoint rolled back; the others commit. It rejects at once
 * when no unit before it in the batch ended well; otherwise its error may rest on their writes (a
 * stream it found there), so it rejects with it once they are committed, and with the batch's error
 * when they are not. A unit resolves only once the commit succeeded; a failed commit rejects every
 * unit of the batch with its error. A unit whose SQL ended the transaction (COMMIT, ROLLBACK) rejects with
 * `UNIT_OF_WORK_ROLLED_BACK`; the units of its batch that ran before it, whose writes may or may not
 * have been kept, with `UNIT_OF_WORK_OUTCOME_UNKNOWN` (never rerun as a lost race); the batch ends
 * there and the units after it go in the next.
 *
 * The store's own writes to the file from this process (appends, relay, inboxes, checkpoints…) wait
 * for their turn between batches on the file's {@link WriteLock}, in the order they asked, instead of
 * polling SQLite; writers of other processes meet SQLite's lock and wait up to `busyTimeoutMs`, then
 * fail with `STORE_BUSY`. Keep units of work short, and inside one write through its handle only: a
 * `store.append` awaited there waits for the unit of work's own lock and fails after `busyTimeoutMs`.
 * Nor may a unit of work wait for the result of another one called before it: that result comes with
 * the commit of their shared batch, which waits for the unit.
 *
 * Unlike PostgreSQL, a call that fails inside a unit of work (a version conflict, a message id the
 * outbox holds, a statement of the caller's) leaves nothing of itself and the transaction open: work
 * that catches the error and resolves commits the rest.
 */
export class SqliteUnitsOfWork {
  readonly #host: SqliteUnitOfWorkHost;
  #opening: Promise<Connection> | undefined;
  readonly #queue: QueuedUnit[] = [];
  #draining = false;
  /** The lock of the batch under way, let go by `close()` whatever its units still do. */
  #release: ReleaseWriteLock | undefined;
  #closed = false;
  /** Set by {@link drain}: units of work called from then on are refused. */
  #refusing = false;
  /** Units of work called and not yet settled; what {@link drain} waits for. */
  readonly #inFlight = new InFlight();

  constructor(host: SqliteUnitOfWorkHost) {
    this.#host = host;
  }

  run<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    if (this.#refusing || this.#closed) return Promise.reject(new EventStoreClosedError());
    const settled = this.#inFlight.enter();
    // Run in the caller's async context, not the one that drains the queue (the first caller's):
    // the message a handler's unit of work belongs to, its signal and deadline, and any
    // AsyncLocalStorage of the application's (a trace) stay its own in a shared transaction.
    // (Not `AsyncResource.bind`: it makes two deprecation wrappers per call, 0.8 % of the shop's time.)
    const caller = new AsyncResource('FerrySqliteUnitOfWork');
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({
        work: (tx) => caller.runInAsyncScope(work, undefined, tx),
        resolve: (value) => {
          settled();
          resolve(value as T);
        },
        reject: (error) => {
          settled();
          reject(error);
        },
      });
      if (this.#draining) return;
      this.#draining = true;
      // At the end of this turn of the event loop: units of work called in the same turn (messages
      // delivered together) share the transaction, and one disk sync.
      atEndOfTurn(() => void this.#drain());
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) await this.#batch();
    } catch (error) {
      for (const unit of this.#queue.splice(0)) unit.reject(error);
    } finally {
      this.#draining = false;
    }
  }

  /** One transaction: the units waiting when it begins, and those that queue while it runs. */
  async #batch(): Promise<void> {
    const waiting = this.#queue.length;
    let c: Connection;
    let release: ReleaseWriteLock;
    try {
      ({ c, release } = await this.#begin());
    } catch (error) {
      // Nothing ran: those who waited for this transaction fail with what kept it from beginning.
      for (const unit of this.#queue.splice(0, waiting)) unit.reject(error);
      return;
    }
    this.#release = release;
    const { maxUnits, maxOpenMs } = this.#host.batch;
    const openedAt = performance.now();
    const done: { readonly unit: QueuedUnit; readonly result: unknown }[] = [];
    // Units that failed after others of the batch ended well: what they saw (a stream there, a row
    // taken) may be those units' writes, which are not yet committed, and may never be. They reject
    // with their error once those writes are (a caller reading then sees what its unit saw), or with
    // the batch's error when they are not.
    const failedAfter: { readonly unit: QueuedUnit; readonly error: unknown }[] = [];
    /** The batch did not commit: every unit that ran in it, but the one that ended it, fails with `error`. */
    const fail = (error: unknown) => {
      for (const d of done) d.unit.reject(error);
      for (const f of failedAfter) f.unit.reject(error);
    };
    let appended = false;
    let ran = 0;
    /** Why the batch's transaction is no longer there, once a unit found it gone. */
    let ended: { readonly error: unknown } | undefined;
    try {
      while (
        ended === undefined &&
        this.#queue.length > 0 &&
        ran < maxUnits &&
        (ran === 0 || performance.now() - openedAt < maxOpenMs)
      ) {
        const unit = this.#queue.shift()!;
        ran++;
        const outcome = await this.#runUnit(c, unit);
        if (outcome.done) {
          done.push({ unit, result: outcome.result });
          appended ||= outcome.appended;
          continue;
        }
        if (outcome.ended) ended = { error: outcome.error };
        if (done.length === 0 || outcome.ended) unit.reject(outcome.error);
        else failedAfter.push({ unit, error: outcome.error });
      }
      if (ended !== undefined || done.length === 0) {
        rollback(c);
        // What those that failed after them saw may or may not have been kept: they fail as they do.
        fail(this.#lostWith(ended?.error));
        return;
      }
      try {
        this.#check();
        // A COMMIT that meets SQLITE_BUSY leaves the transaction open and may be tried again.
        await whileBusy(this.#host.busyTimeoutMs, () => c.control.commit.run());
      } catch (error) {
        rollback(c);
        fail(error);
        return;
      }
    } finally {
      this.#release = undefined;
      release();
    }
    // The file is free for the next batch while the disk syncs this one.
    try {
      await this.#host.afterCommit();
    } catch (error) {
      fail(error);
      return;
    }
    this.#host.committed?.(done.length);
    if (appended) this.#host.appended();
    for (const d of done) d.unit.resolve(d.result);
    for (const f of failedAfter) f.unit.reject(f.error);
  }

  /** The connection, this process's turn at the file, then SQLite's write lock: BEGIN IMMEDIATE. */
  async #begin(): Promise<{ c: Connection; release: ReleaseWriteLock }> {
    this.#check();
    if (this.#host.path === ':memory:') {
      // A private in-memory database cannot be opened by a second connection, and on the store's
      // one a unit of work held open across awaits would take in every other write and read.
      throw new UnitOfWorkUnsupportedError(SQLITE_MEMORY_HAS_NO_UNITS_OF_WORK);
    }
    const c = await this.#connection();
    const { busyTimeoutMs, lock } = this.#host;
    const started = Date.now();
    const release = await lock.acquire(busyTimeoutMs);
    try {
      await whileBusy(
        busyTimeoutMs,
        () => {
          this.#check();
          c.control.begin.run();
        },
        started,
      );
    } catch (error) {
      release();
      throw error;
    }
    return { c, release };
  }

  async #runUnit(c: Connection, unit: QueuedUnit): Promise<UnitOutcome> {
    try {
      this.#check();
      c.control.savepoint.run();
    } catch (error) {
      return { done: false, error, ended: true };
    }
    const tx = new SqliteStorageTransaction(c, () => this.#check());
    let result: unknown;
    try {
      result = await unit.work(tx);
    } catch (error) {
      tx.end();
      // Its savepoint rolled back alone: the units before it stay in the transaction.
      if (
        c.db.open &&
        c.db.inTransaction &&
        succeeds(() => c.db.exec(`ROLLBACK TO ${UNIT_SAVEPOINT}; RELEASE ${UNIT_SAVEPOINT}`))
      ) {
        return { done: false, error, ended: false };
      }
      return { done: false, error, ended: true };
    }
    tx.end();
    try {
      this.#check();
    } catch (error) {
      return { done: false, error, ended: true };
    }
    // Not in a transaction: the caller's SQL ended it (COMMIT, ROLLBACK), or SQLite rolled it back
    // after an error. No savepoint to release: its SQL ended it and began another.
    if (!c.db.inTransaction || !succeeds(() => c.control.release.run())) {
      return {
        done: false,
        ended: true,
        error: transactionEnded(),
      };
    }
    return { done: true, result, appended: tx.appended };
  }

  /**
   * What the units that ended well before `cause` ended the batch's transaction learn: closing the
   * connection rolled it back; anything else may have committed it.
   */
  #lostWith(cause: unknown): unknown {
    return isEventStoreClosedError(cause)
      ? new EventStoreClosedError()
      : new UnitOfWorkOutcomeUnknownError(cause);
  }

  #check(): void {
    if (this.#closed) throw new EventStoreClosedError();
    this.#host.ready();
  }

  #connection(): Promise<Connection> {
    this.#opening ??= this.#open().catch((error: unknown) => {
      this.#opening = undefined;
      throw error;
    });
    return this.#opening;
  }

  async #open(): Promise<Connection> {
    const { default: Driver } = await import('better-sqlite3');
    this.#check();
    const { path, busyTimeoutMs } = this.#host;
    // The store's connection created the file, put it in WAL (kept in the file) and migrated it.
    const db = new Driver(path, { timeout: Math.min(busyTimeoutMs, DRIVER_BUSY_TIMEOUT_MS) });
    try {
      db.defaultSafeIntegers(true);
      // Per connection, as the store's: COMMIT does not wait for the disk; a unit of work resolves
      // once a sync of the WAL begun after its commit ended (host.afterCommit), as an append does.
      await whileBusy(busyTimeoutMs, () => db.pragma('synchronous = NORMAL'));
      const c = await whileBusy(busyTimeoutMs, () => prepareConnection(db));
      this.#check();
      return c;
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /**
   * Refuses units of work from now on (`EVENT_STORE_CLOSED`) and resolves once those called before
   * have ended, committed or failed as they would have. The backend's `close()` calls it first.
   */
  async drain(): Promise<void> {
    this.#refusing = true;
    await this.#inFlight.idle();
  }

  /**
   * Closes the connection; a batch still open (only when `close()` came without {@link drain}) is rolled back (its units reject with
   * `EVENT_STORE_CLOSED`) and the file's lock let go at once. The backend's `close()` calls it.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const c = await this.#opening?.catch(() => undefined);
    c?.db.close();
    this.#release?.();
  }
}

/** Runs a statement that may fail because the transaction is gone: whether it ran. */
function succeeds(statement: () => unknown): boolean {
  try {
    statement();
    return true;
  } catch {
    return false;
  }
}

function rollback(c: Connection): void {
  // The connection rolls back when it closes; the caller gets the error that ended the work.
  if (c.db.open && c.db.inTransaction) succeeds(() => c.db.exec('ROLLBACK'));
}
