import type Database from 'better-sqlite3';
import { FerryError } from '../errors/ferry-error.js';
import { EventStoreClosedError } from '../eventstore/errors.js';
import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import { SagaConcurrencyError, UnitOfWorkUnsupportedError } from '../outbox/errors.js';
import type { OutboxInsert, SagaRow, StorageTransaction } from '../outbox/storage.js';
import { type AppendOutcome, appendRows, prepareAppendStatements } from './sqlite-append.js';
import {
  jsonList,
  ms,
  NOT_LEASED,
  SAGA_COLUMNS,
  type SagaDbRow,
  SCHEDULED,
  toSagaRow,
} from './sqlite-outbox-sql.js';
import { prepareReadStream, readStreamWith } from './sqlite-read-stream.js';
import { DRIVER_BUSY_TIMEOUT_MS, whileBusy } from './store-busy.js';

/** What units of work need from the backend that owns them. */
/** Why a `:memory:` SQLite store has no outbox. */
export const SQLITE_MEMORY_HAS_NO_UNITS_OF_WORK =
  "units of work need a SQLite file: a ':memory:' database has one connection only (use a file, a temporary one in tests, or the memory event store)";

export interface SqliteUnitOfWorkHost {
  readonly path: string;
  readonly busyTimeoutMs: number;
  /** Throws `EventStoreClosedError` while the backend is not open. */
  readonly ready: () => void;
  /** After a commit that appended events: wakes the store's watchers, as an append does. */
  readonly appended: () => void;
}

/** Most statements of the caller's SQL kept prepared per connection. */
const QUERY_CACHE_SIZE = 100;

/** The unit-of-work connection and what is prepared on it. */
function prepareConnection(db: Database.Database) {
  const append = prepareAppendStatements(db);
  const enqueue = db.prepare<[string, string, string, number, number]>(
    'INSERT INTO ferry_outbox (id, key, envelope, created_at, due_at) VALUES (?, ?, ?, ?, ?)',
  );
  return {
    db,
    read: prepareReadStream(db),
    // Inside the open transaction, better-sqlite3 runs these as SAVEPOINTs: one that throws (a version
    // conflict, a message id already in the outbox) leaves nothing of itself, and the caller may go on.
    append: db.transaction((streamId: string, events: readonly PreparedEvent[], expected: ExpectedVersion) =>
      appendRows(append, streamId, events, expected),
    ),
    enqueue: db.transaction((messages: readonly OutboxInsert[]) => {
      for (const m of messages) enqueue.run(m.id, m.key, m.envelope, ms(m.createdAt), ms(m.dueAt));
    }),
    cancel: db
      .prepare<[{ ids: string; now: number }], string>(
        `DELETE FROM ferry_outbox WHERE state = 'pending' AND ${SCHEDULED} AND ${NOT_LEASED}
         AND id IN (SELECT value FROM json_each(@ids)) RETURNING id`,
      )
      .pluck(),
    markHandled: db.prepare<[string, string, number]>(
      `INSERT INTO ferry_inbox_done (consumer, message_id, handled_at) VALUES (?, ?, ?)
       ON CONFLICT (consumer, message_id) DO NOTHING`,
    ),
    loadSaga: db.prepare<[string, string], SagaDbRow>(
      `SELECT ${SAGA_COLUMNS} FROM ferry_sagas WHERE saga = ? AND id = ?`,
    ),
    insertSaga: db.prepare<[string, string, string, number, string, number]>(
      `INSERT INTO ferry_sagas (saga, id, state, version, status, updated_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (saga, id) DO NOTHING`,
    ),
    updateSaga: db.prepare<[string, number, string, number, string, string, number]>(
      'UPDATE ferry_sagas SET state = ?, version = ?, status = ?, updated_at = ? WHERE saga = ? AND id = ? AND version = ?',
    ),
    queries: new Map<string, Database.Statement<unknown[], Record<string, unknown>>>(),
  };
}

type Connection = ReturnType<typeof prepareConnection>;

/**
 * Units of work of a SQLite event store, on a second connection to its file of their own: a unit of
 * work holds SQLite's write lock (BEGIN IMMEDIATE) across the awaits of its callback, and on its own
 * connection nothing else of the store (group commit, reads, subscriptions, inboxes) can see its
 * uncommitted writes or land inside it. Units of work of one process run one at a time, in call
 * order; the store's own writes meanwhile wait for the lock as they wait for another process's (up
 * to `busyTimeoutMs`, then `STORE_BUSY`), so keep units of work short, and inside one write through
 * its handle only: a `store.append` awaited there waits for the unit of work's own lock and fails.
 *
 * Unlike PostgreSQL, a call that fails inside a unit of work (a version conflict, a message id the
 * outbox holds, a statement of the caller's) leaves nothing of itself and the transaction open: work
 * that catches the error and resolves commits the rest.
 */
export class SqliteUnitsOfWork {
  readonly #host: SqliteUnitOfWorkHost;
  #opening: Promise<Connection> | undefined;
  /** The tail of the queue of units of work. */
  #last: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(host: SqliteUnitOfWorkHost) {
    this.#host = host;
  }

  run<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    const run = this.#last.then(() => this.#run(work));
    this.#last = run.catch(() => {});
    return run;
  }

  async #run<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    this.#check();
    if (this.#host.path === ':memory:') {
      // A private in-memory database cannot be opened by a second connection, and on the store's
      // one a unit of work held open across awaits would take in every other write and read.
      throw new UnitOfWorkUnsupportedError(SQLITE_MEMORY_HAS_NO_UNITS_OF_WORK);
    }
    const c = await this.#connection();
    const { busyTimeoutMs } = this.#host;
    await whileBusy(busyTimeoutMs, () => {
      this.#check();
      c.db.exec('BEGIN IMMEDIATE');
    });
    const tx = new SqliteStorageTransaction(c, () => this.#check());
    let result: T;
    try {
      result = await work(tx);
      tx.end();
      this.#check();
      if (!c.db.inTransaction) {
        // The caller's SQL ended it (COMMIT, ROLLBACK), or SQLite rolled it back after an error.
        throw new FerryError(
          'UNIT_OF_WORK_ROLLED_BACK',
          'the unit of work was no longer open at its end (its SQL ended the transaction, or SQLite rolled it back after an error): what was kept is not known',
        );
      }
      // A COMMIT that meets SQLITE_BUSY leaves the transaction open and may be tried again.
      await whileBusy(busyTimeoutMs, () => c.db.exec('COMMIT'));
    } catch (error) {
      tx.end();
      rollback(c.db);
      throw error;
    }
    if (tx.appended) this.#host.appended();
    return result;
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
      // Per connection: a unit of work that resolved survives a power cut, as an append does.
      await whileBusy(busyTimeoutMs, () => db.pragma('synchronous = FULL'));
      const c = await whileBusy(busyTimeoutMs, () => prepareConnection(db));
      this.#check();
      return c;
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** Closes the connection; a unit of work still open is rolled back. The backend's `close()` calls it. */
  async close(): Promise<void> {
    this.#closed = true;
    const c = await this.#opening?.catch(() => undefined);
    c?.db.close();
  }
}

function rollback(db: Database.Database): void {
  try {
    if (db.open && db.inTransaction) db.exec('ROLLBACK');
  } catch {
    // The connection rolls back when it closes; the caller gets the error that ended the work.
  }
}

/**
 * The handle of one unit of work. Every call runs at once, synchronously, on the unit of work's
 * connection, inside its transaction.
 */
class SqliteStorageTransaction implements StorageTransaction {
  /**
   * The unit of work's `better-sqlite3` Database (its transaction is open: do not BEGIN, COMMIT or
   * ROLLBACK on it). It reads integers as `bigint` (`defaultSafeIntegers`).
   */
  readonly client: Database.Database;
  /** Whether an append wrote events. */
  appended = false;
  readonly #c: Connection;
  readonly #check: () => void;
  #ended = false;

  constructor(c: Connection, check: () => void) {
    this.#c = c;
    this.client = c.db;
    this.#check = check;
  }

  end(): void {
    this.#ended = true;
  }

  #open(): Connection {
    if (this.#ended) throw new UnitOfWorkUnsupportedError('this unit of work has ended');
    this.#check();
    return this.#c;
  }

  async append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    const outcome: AppendOutcome = this.#open().append(streamId, events, expected);
    this.appended ||= outcome.written;
    return { nextExpectedVersion: outcome.nextExpectedVersion, position: outcome.position };
  }

  /**
   * Runs one statement of the caller's (`?` placeholders), in the transaction. Rows come back as plain
   * objects, integers as `bigint` (the store's connections read them so, to keep positions exact):
   * convert with `Number()` where they fit. Resolves no rows for a statement that returns none.
   */
  async query(sql: string, params: readonly unknown[] = []): Promise<Record<string, unknown>[]> {
    const c = this.#open();
    let statement = c.queries.get(sql);
    if (statement === undefined) {
      statement = c.db.prepare<unknown[], Record<string, unknown>>(sql);
      if (c.queries.size >= QUERY_CACHE_SIZE) c.queries.clear();
      c.queries.set(sql, statement);
    }
    if (statement.reader) return statement.all(...params);
    statement.run(...params);
    return [];
  }

  async readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    return readStreamWith(this.#open().read, streamId, options);
  }

  async enqueue(messages: readonly OutboxInsert[]): Promise<void> {
    this.#open().enqueue(messages);
  }

  async cancel(ids: readonly string[], now: number): Promise<string[]> {
    const c = this.#open();
    if (ids.length === 0) return [];
    const deleted = new Set(c.cancel.all({ ids: jsonList(ids), now: ms(now) }));
    return [...new Set(ids)].filter((id) => deleted.has(id));
  }

  async markHandled(consumer: string, messageId: string, now: number): Promise<boolean> {
    // SQLite serialises writers, so a concurrent holder of the same mark has committed or rolled back.
    return this.#open().markHandled.run(consumer, messageId, ms(now)).changes === 1;
  }

  async loadSaga(saga: string, id: string): Promise<SagaRow | undefined> {
    const row = this.#open().loadSaga.get(saga, id);
    return row === undefined ? undefined : toSagaRow(row);
  }

  async saveSaga(row: SagaRow, expectedVersion: number): Promise<void> {
    const c = this.#open();
    const { saga, id, state, version, status } = row;
    const updatedAt = ms(row.updatedAt);
    const written =
      expectedVersion === 0
        ? c.insertSaga.run(saga, id, state, version, status, updatedAt)
        : c.updateSaga.run(state, version, status, updatedAt, saga, id, expectedVersion);
    if (written.changes === 0) throw new SagaConcurrencyError(saga, id, expectedVersion);
  }
}
