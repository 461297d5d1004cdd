import type Database from 'better-sqlite3';
import type {
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import {
  SagaConcurrencyError,
  UnitOfWorkOutcomeUnknownError,
  UnitOfWorkUnsupportedError,
} from '../outbox/errors.js';
import type { OutboxInsert, SagaRow, StorageAppendResult, StorageTransaction } from '../outbox/storage.js';
import { type AppendOutcome, appendRows, prepareAppendStatements } from './sqlite-append.js';
import {
  INSERT_OUTBOX_ROW,
  insertOutboxRow,
  jsonList,
  ms,
  NOT_LEASED,
  SAGA_COLUMNS,
  type SagaDbRow,
  SCHEDULED,
  toSagaRow,
} from './sqlite-outbox-sql.js';
import { prepareReadStream, type ReadStreamStatements, readStreamWith } from './sqlite-read-stream.js';

/** Most statements of the caller's SQL kept prepared per connection. */
const QUERY_CACHE_SIZE = 100;

/** The units of work's connection and what is prepared on it. */
export interface Connection {
  readonly db: Database.Database;
  readonly read: ReadStreamStatements;
  readonly append: Database.Transaction<
    (streamId: string, events: readonly PreparedEvent[], expected: ExpectedVersion) => AppendOutcome
  >;
  readonly enqueue: Database.Transaction<(messages: readonly OutboxInsert[]) => void>;
  readonly cancel: Database.Statement<[{ ids: string; now: number }], string>;
  readonly markHandled: Database.Statement<[string, string, number]>;
  readonly loadSaga: Database.Statement<[string, string], SagaDbRow>;
  readonly insertSaga: Database.Statement<[string, string, string, number, string, number]>;
  readonly updateSaga: Database.Statement<[string, number, string, number, string, string, number]>;
  /** The caller's SQL (`query`), prepared once. */
  readonly queries: Map<string, Database.Statement<unknown[], Record<string, unknown>>>;
  /**
   * A batch's BEGIN IMMEDIATE and COMMIT, and each unit's savepoint and its release, prepared once
   * (`db.exec` compiles its SQL on every call).
   */
  readonly control: {
    readonly begin: Database.Statement;
    readonly commit: Database.Statement;
    readonly savepoint: Database.Statement;
    readonly release: Database.Statement;
  };
}

/**
 * A unit of work whose transaction is gone: its SQL ended it (COMMIT, ROLLBACK), or SQLite rolled it
 * back after an error. What it wrote before may have been committed.
 */
export function transactionEnded(): UnitOfWorkOutcomeUnknownError {
  return new UnitOfWorkOutcomeUnknownError(undefined, 'own-sql');
}

/** The savepoint each unit of work of a batch runs in: one that throws rolls back alone. */
export const UNIT_SAVEPOINT = 'ferry_unit_of_work';

export function prepareConnection(db: Database.Database): Connection {
  const append = prepareAppendStatements(db);
  const enqueue = db.prepare<[string, string, string, number, number]>(INSERT_OUTBOX_ROW);
  return {
    db,
    read: prepareReadStream(db),
    // Inside the open transaction, better-sqlite3 runs these as SAVEPOINTs: one that throws (a version
    // conflict, a message id already in the outbox) leaves nothing of itself, and the caller may go on.
    append: db.transaction((streamId: string, events: readonly PreparedEvent[], expected: ExpectedVersion) =>
      appendRows(append, streamId, events, expected),
    ),
    enqueue: db.transaction((messages: readonly OutboxInsert[]) => {
      for (const m of messages) insertOutboxRow(enqueue, m);
    }),
    cancel: db
      .prepare<[{ ids: string; now: number }], string>(
        // `+state`: found by id, never by a scan of the pending rows through an index on state.
        `DELETE FROM ferry_outbox WHERE +state = 'pending' AND ${SCHEDULED} AND ${NOT_LEASED}
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
    control: {
      begin: db.prepare('BEGIN IMMEDIATE'),
      commit: db.prepare('COMMIT'),
      savepoint: db.prepare(`SAVEPOINT ${UNIT_SAVEPOINT}`),
      release: db.prepare(`RELEASE ${UNIT_SAVEPOINT}`),
    },
  };
}

/**
 * The handle of one unit of work. Every call runs at once, synchronously, on the units of work's
 * connection, inside the unit's SAVEPOINT of its batch's transaction.
 */
export class SqliteStorageTransaction implements StorageTransaction {
  /**
   * The unit of work's `better-sqlite3` Database. Its transaction is open and may hold other units
   * of work of the same batch: do not BEGIN, COMMIT or ROLLBACK on it, nor RELEASE the unit's own
   * SAVEPOINT (`ferry_unit_of_work`); savepoints of your own are fine. It reads integers as `bigint`
   * (`defaultSafeIntegers`).
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
    // The caller's SQL ended the batch's transaction (COMMIT, ROLLBACK): what came next would be
    // written outside any transaction, kept whatever becomes of the unit of work.
    if (!this.#c.db.inTransaction) throw transactionEnded();
    return this.#c;
  }

  async append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<StorageAppendResult> {
    const outcome: AppendOutcome = this.#open().append(streamId, events, expected);
    this.appended ||= outcome.written;
    return {
      nextExpectedVersion: outcome.nextExpectedVersion,
      position: outcome.position,
      ...(outcome.written ? {} : { repeated: true }),
    };
  }

  /**
   * Runs one statement of the caller's (`?` placeholders), in the transaction. Rows come back as plain
   * objects, integers as numbers, as PostgreSQL's `integer` columns do (a `bigint` only beyond
   * ±(2^53−1), which a number cannot hold exactly). Resolves no rows for a statement that returns none.
   */
  async query(sql: string, params: readonly unknown[] = []): Promise<Record<string, unknown>[]> {
    const c = this.#open();
    let statement = c.queries.get(sql);
    if (statement === undefined) {
      statement = c.db.prepare<unknown[], Record<string, unknown>>(sql);
      if (c.queries.size >= QUERY_CACHE_SIZE) c.queries.clear();
      c.queries.set(sql, statement);
    }
    // The store's connections read integers as bigint (positions stay exact); the caller's rows get
    // numbers, so that the same handler code runs on SQLite and on PostgreSQL.
    if (statement.reader) return statement.all(...params).map(withSafeNumbers);
    statement.run(...params);
    // Its SQL ended the batch's transaction (COMMIT, ROLLBACK): the unit of work fails here, as on
    // PostgreSQL, and every later call of it too (see #open).
    if (!c.db.inTransaction) throw transactionEnded();
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

  /**
   * Units of work of a process run one at a time, and SQLite's write lock, held from BEGIN IMMEDIATE,
   * keeps other processes' out: none can hold a key this one wants.
   */
  async lock(_keys: readonly string[]): Promise<void> {
    this.#open();
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

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** `row` with each bigint a number that can hold it exactly turned into that number. */
function withSafeNumbers(row: Record<string, unknown>): Record<string, unknown> {
  for (const key in row) {
    const value = row[key];
    if (typeof value === 'bigint' && value >= MIN_SAFE && value <= MAX_SAFE) row[key] = Number(value);
  }
  return row;
}
