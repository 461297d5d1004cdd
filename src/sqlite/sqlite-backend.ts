import { accessSync, constants, realpathSync } from 'node:fs';
import { resolve as absolutePath, dirname, sep } from 'node:path';
import type Database from 'better-sqlite3';
import { InvalidOptionsError, isFerryError } from '../errors/ferry-error.js';
import type { EventStoreBackend, ParkedEvent, ReadAfterResult, Snapshot } from '../eventstore/backend.js';
import { EventStoreClosedError, StoreUnavailableError } from '../eventstore/errors.js';
import { insideUnitOf } from '../eventstore/open-units.js';
import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import type { DurableIdempotencyStoreOptions } from '../http/server/durable-idempotency.js';
import type { Inbox } from '../inbox/inbox.js';
import type { DurableInboxOptions } from '../inbox/lease.js';
import { UnitOfWorkUnsupportedError } from '../outbox/errors.js';
import type { OutboxInsert } from '../outbox/storage.js';
import { atEndOfTurn, endOfTurn } from '../time/end-of-turn.js';
import { boundLimit } from './bound-limit.js';
import { announceLeaseRelease, watchLeaseReleases } from './lease-releases.js';
import { makeDirectory } from './make-directory.js';
import { type AppendOutcome, appendRows, prepareAppendStatements } from './sqlite-append.js';
import { SqliteIdempotencyStore } from './sqlite-idempotency-store.js';
import { SqliteInbox } from './sqlite-inbox.js';
import { SqliteOutboxStorage } from './sqlite-outbox.js';
import { INSERT_OUTBOX_ROW, insertOutboxRow } from './sqlite-outbox-sql.js';
import {
  EVENT_COLUMNS,
  type EventRow,
  prepareReadStream,
  readStreamWith,
  toRecordedEvent,
} from './sqlite-read-stream.js';
import {
  DEFAULT_SQLITE_UNIT_OF_WORK_BATCH,
  SQLITE_MEMORY_HAS_NO_UNITS_OF_WORK,
  type SqliteUnitOfWorkBatchOptions,
} from './sqlite-unit-of-work.js';
import { DEFAULT_BUSY_TIMEOUT_MS, DRIVER_BUSY_TIMEOUT_MS, whileBusy } from './store-busy.js';
import { type CommitSync, DatabaseFileMovedError, WalSync } from './wal-sync.js';
import { type StoreWrite, WriteLock } from './write-lock.js';

/** Options of {@link SqliteEventStoreBackend}. */
export interface SqliteBackendOptions {
  /** Database file, created with its parent directories if missing; `:memory:` for a private in-memory database. */
  readonly path: string;
  /**
   * How long a write waits for the file's write lock, held by another process or by a batch of this
   * process's units of work, before failing with `StoreBusyError` (`STORE_BUSY`). The wait is
   * asynchronous: the event loop keeps running. @default 5000
   */
  readonly busyTimeoutMs?: number;
  /**
   * How many units of work share one transaction and one commit (group commit; see
   * `SqliteUnitsOfWork`). @default { maxUnits: 64, maxOpenMs: 5 }
   */
  readonly unitOfWorkBatch?: SqliteUnitOfWorkBatchOptions;
}

export const DEFAULT_SQLITE_BACKEND_OPTIONS = Object.freeze({
  busyTimeoutMs: DEFAULT_BUSY_TIMEOUT_MS,
  unitOfWorkBatch: DEFAULT_SQLITE_UNIT_OF_WORK_BATCH,
});

/** How often watchers look for commits made by other connections to the same file. */
const DATA_VERSION_POLL_MS = 100;

/** Applied in order, each once per database file; never edit one that has shipped, add another. */
const MIGRATIONS: readonly { readonly version: number; readonly name: string; readonly sql: string }[] = [
  {
    version: 1,
    name: 'create event store',
    sql: `
      CREATE TABLE ferry_events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        metadata TEXT NOT NULL,
        time TEXT NOT NULL,
        UNIQUE (stream_id, version),
        UNIQUE (stream_id, id)
      );
      CREATE TABLE ferry_checkpoints (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        updated_at TEXT NOT NULL
      );
      CREATE TABLE ferry_parked (
        subscription TEXT NOT NULL,
        position INTEGER NOT NULL,
        event TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        parked_at TEXT NOT NULL,
        PRIMARY KEY (subscription, position)
      );
      CREATE TABLE ferry_snapshots (
        stream_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        time TEXT NOT NULL
      );`,
  },
  {
    version: 2,
    name: 'inbox of idempotent consumers',
    sql: `
      CREATE TABLE ferry_inbox (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('processing', 'done')),
        lease_until INTEGER,
        processed_at INTEGER
      );
      CREATE INDEX ferry_inbox_done ON ferry_inbox (processed_at) WHERE state = 'done';`,
  },
  {
    version: 3,
    name: 'subscription leases',
    sql: `
      CREATE TABLE ferry_subscription_leases (
        subscription TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      );`,
  },
  {
    version: 4,
    name: 'inbox claim tokens',
    // Each claim writes its own token; renewals, completions and releases act only on their token.
    sql: 'ALTER TABLE ferry_inbox ADD COLUMN claim_token TEXT;',
  },
  {
    version: 5,
    name: 'HTTP idempotency keys',
    // `status` is NULL while a request holds the key (under `claim`); `expires_at` ends the lease
    // while held, the replay once completed. The body is kept as bytes (`encoding` says how it was given).
    sql: `
      CREATE TABLE ferry_idempotency (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        claim TEXT,
        status INTEGER,
        headers TEXT,
        body BLOB,
        encoding TEXT,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, key)
      );
      CREATE INDEX ferry_idempotency_expires ON ferry_idempotency (expires_at);`,
  },
  {
    version: 6,
    name: 'outbox, transactional inbox marks and saga instances',
    // Outbox rows are deleted once published; `seq` is commit order (AUTOINCREMENT: never reused, so a
    // relay's `seq` stays unique for its row). A lease (`lease_owner`, `lease_until`) marks a row a
    // relay is publishing. Tables and indexes share one namespace: migration 2's index named
    // ferry_inbox_done is recreated, unchanged, under another name first.
    sql: `
      DROP INDEX ferry_inbox_done;
      CREATE INDEX ferry_inbox_processed ON ferry_inbox (processed_at) WHERE state = 'done';
      CREATE TABLE ferry_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        key TEXT NOT NULL,
        envelope TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER,
        last_error TEXT
      );
      CREATE INDEX ferry_outbox_key ON ferry_outbox (key, seq);
      CREATE INDEX ferry_outbox_due ON ferry_outbox (state, due_at);
      CREATE TABLE ferry_inbox_done (
        consumer TEXT,
        message_id TEXT,
        handled_at INTEGER,
        PRIMARY KEY (consumer, message_id)
      );
      CREATE INDEX ferry_inbox_done_handled ON ferry_inbox_done (handled_at);
      CREATE TABLE ferry_sagas (
        saga TEXT,
        id TEXT,
        state TEXT,
        version INTEGER,
        status TEXT,
        updated_at INTEGER,
        PRIMARY KEY (saga, id)
      );
      CREATE INDEX ferry_sagas_status ON ferry_sagas (saga, status, updated_at);`,
  },
  {
    version: 7,
    name: 'outbox indexes that keep held rows out of the relay reads',
    // A relay's claim, and its look for the next due row, read rows not marked `held:` (pending ones
    // by seq, and by due time) and held ones by the end of their hold, never the held rows as such;
    // a row's key head is found by seeking each kind by key. The WHERE terms are those of
    // sqlite-outbox-sql.ts (MARKED, UNMARKED): a query uses a partial index only when it states them.
    sql: `
      CREATE INDEX ferry_outbox_ready ON ferry_outbox (seq)
        WHERE state = 'pending' AND coalesce(lease_owner, '') NOT LIKE 'held:%';
      CREATE INDEX ferry_outbox_ready_due ON ferry_outbox (due_at)
        WHERE state = 'pending' AND coalesce(lease_owner, '') NOT LIKE 'held:%';
      CREATE INDEX ferry_outbox_unheld_key ON ferry_outbox (key, seq)
        WHERE coalesce(lease_owner, '') NOT LIKE 'held:%';
      CREATE INDEX ferry_outbox_held ON ferry_outbox (lease_until)
        WHERE coalesce(lease_owner, '') LIKE 'held:%';
      CREATE INDEX ferry_outbox_held_key ON ferry_outbox (key, lease_until)
        WHERE coalesce(lease_owner, '') LIKE 'held:%';`,
  },
  {
    version: 8,
    name: 'outbox indexes that keep rows due later out of the claim, and no index no query uses',
    // Migration 7's ferry_outbox_ready held every pending row by seq, those due later too: a claim
    // stepped over every scheduled message (a saga's deadline, a retry's wait) ahead of the first
    // due one, on every call. Rows due at once (due_at <= created_at) are now read by seq, rows due
    // later by due_at, up to now. The WHERE terms are those of sqlite-outbox-sql.ts (AT_ONCE, LATER).
    // Migration 6's indexes by (key, seq) and (state, due_at) served no query any more, and cost
    // every write of a row: the failed rows, which the operator lists, get a small index of their own.
    sql: `
      DROP INDEX ferry_outbox_ready;
      DROP INDEX ferry_outbox_key;
      DROP INDEX ferry_outbox_due;
      CREATE INDEX ferry_outbox_failed ON ferry_outbox (seq) WHERE state = 'failed';
      CREATE INDEX ferry_outbox_now ON ferry_outbox (seq)
        WHERE state = 'pending' AND coalesce(lease_owner, '') NOT LIKE 'held:%' AND due_at <= created_at;
      CREATE INDEX ferry_outbox_later ON ferry_outbox (due_at)
        WHERE state = 'pending' AND coalesce(lease_owner, '') NOT LIKE 'held:%' AND due_at > created_at;`,
  },
];

// Integers come back as bigint (`defaultSafeIntegers`): positions stay exact; versions are converted.
interface ParkedRow {
  subscription: string;
  position: bigint;
  event: string;
  error: string;
  attempts: bigint;
  parked_at: string;
}
interface SnapshotRow {
  stream_id: string;
  version: bigint;
  schema_version: bigint;
  state: string;
  time: string;
}

/** Prepared once per connection in `open()`. */
function prepareStatements(db: Database.Database) {
  return {
    ...prepareAppendStatements(db),
    ...prepareReadStream(db),
    readAfter: db.prepare<[bigint, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM ferry_events WHERE position > ? ORDER BY position ${boundLimit()}`,
    ),
    readAfterTyped: db.prepare<[bigint, string, number], EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM ferry_events
       WHERE position > ? AND type IN (SELECT value FROM json_each(?)) ORDER BY position ${boundLimit()}`,
    ),
    horizon: db.prepare<[], bigint>('SELECT coalesce(max(position), 0) FROM ferry_events').pluck(),
    countAfter: db.prepare<[bigint], bigint>('SELECT count(*) FROM ferry_events WHERE position > ?').pluck(),
    loadCheckpoint: db
      .prepare<[string], bigint>('SELECT position FROM ferry_checkpoints WHERE name = ?')
      .pluck(),
    saveCheckpoint: db.prepare<[string, bigint, string]>(
      `INSERT INTO ferry_checkpoints (name, position, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`,
    ),
    claimSubscription: db.prepare<
      [{ subscription: string; owner: string; now: number; ttl: number; replacing: string | null }]
    >(
      `INSERT INTO ferry_subscription_leases (subscription, owner, expires_at) VALUES (@subscription, @owner, @now + @ttl)
       ON CONFLICT (subscription) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
       WHERE ferry_subscription_leases.owner IN (excluded.owner, @replacing)
          OR ferry_subscription_leases.expires_at <= @now`,
    ),
    leaseHolder: db
      .prepare<[string], string>('SELECT owner FROM ferry_subscription_leases WHERE subscription = ?')
      .pluck(),
    releaseSubscription: db.prepare<[string, string]>(
      'DELETE FROM ferry_subscription_leases WHERE subscription = ? AND owner = ?',
    ),
    park: db.prepare<[string, bigint, string, string, number, string]>(
      `INSERT OR REPLACE INTO ferry_parked (subscription, position, event, error, attempts, parked_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    listParked: db.prepare<[string, number], ParkedRow>(
      `SELECT * FROM ferry_parked WHERE subscription = ? ORDER BY position ${boundLimit()}`,
    ),
    unpark: db.prepare<[string, bigint]>('DELETE FROM ferry_parked WHERE subscription = ? AND position = ?'),
    loadSnapshot: db.prepare<[string], SnapshotRow>('SELECT * FROM ferry_snapshots WHERE stream_id = ?'),
    saveSnapshot: db.prepare<[string, number, number, string, string]>(
      `INSERT INTO ferry_snapshots (stream_id, version, schema_version, state, time) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (stream_id) DO UPDATE
         SET version = excluded.version, schema_version = excluded.schema_version, state = excluded.state, time = excluded.time
         WHERE excluded.schema_version <> ferry_snapshots.schema_version OR excluded.version >= ferry_snapshots.version`,
    ),
    dataVersion: db.prepare<[], bigint>('PRAGMA data_version').pluck(),
    enqueue: db.prepare<[string, string, string, number, number]>(INSERT_OUTBOX_ROW),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** Most appends committed together. */
const MAX_BATCH_APPENDS = 64;

/** An append waiting to commit with the others called while one was being settled. */
interface QueuedAppend {
  readonly streamId: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ExpectedVersion;
  /** Outbox rows inserted with the append, in its savepoint, when it writes. */
  readonly messages: readonly OutboxInsert[];
  readonly resolve: (result: AppendResult) => void;
  readonly reject: (error: unknown) => void;
}

/** What became of one append of a batch. */
type BatchOutcome = { readonly result: AppendOutcome } | { readonly error: unknown };
type AppendRows = (
  streamId: string,
  events: readonly PreparedEvent[],
  expected: ExpectedVersion,
  messages: readonly OutboxInsert[],
) => AppendOutcome;

/**
 * Events in one SQLite file, through better-sqlite3 (loaded by `open()`, so only users of this
 * backend need it). SQLite lets one writer commit at a time, so positions follow commit order and
 * nothing is ever held back from readers. Several processes may share a file: appends from other
 * connections wake this backend's watchers through `PRAGMA data_version`.
 *
 * Until `open()` has resolved, and after `close()`, every method rejects with `EventStoreClosedError`.
 *
 * @example
 * const backend = new SqliteEventStoreBackend({ path: './data/events.db' });
 * await backend.open();
 * const store = new EventStore(backend);
 */
export class SqliteEventStoreBackend implements EventStoreBackend {
  readonly name = 'sqlite';
  readonly #path: string;
  readonly #busyTimeoutMs: number;
  readonly #unitOfWorkBatch: Required<SqliteUnitOfWorkBatchOptions>;
  /** This process's turn at the file's write lock, shared with its units of work and other stores on it. */
  readonly #lock: WriteLock;
  readonly #watchers = new Set<() => void>();
  #opening: Promise<void> | undefined;
  #db: Database.Database | undefined;
  #statements: Statements | undefined;
  #append: Database.Transaction<AppendRows> | undefined;
  #appendBatch: Database.Transaction<(batch: readonly QueuedAppend[]) => BatchOutcome[]> | undefined;
  /** Appends called while others were being settled, waiting to commit together. */
  #queue: QueuedAppend[] = [];
  /** An append, or a batch, is being settled: new appends queue. */
  #flushing = false;
  /** `close()` calls waiting for the appends already called to be committed. */
  #whenFlushed: (() => void)[] = [];
  #closing: Promise<void> | undefined;
  #groupCommits = 0;
  #unitOfWorkCommits = 0;
  /** Set once close() has let the turn it was called in end: appends called from then on are refused. */
  #refusing = false;
  #closed = false;
  #poller: NodeJS.Timeout | undefined;
  #dataVersion = 0n;
  #outbox: SqliteOutboxStorage | undefined;
  /** The WAL's disk syncs, off the event loop; none for `:memory:`. */
  #walSync: WalSync | undefined;

  constructor(options: SqliteBackendOptions) {
    const { path, busyTimeoutMs = DEFAULT_SQLITE_BACKEND_OPTIONS.busyTimeoutMs } = options;
    if (typeof path !== 'string' || path.length === 0) {
      throw new InvalidOptionsError('the SQLite backend needs a path');
    }
    // SQLite would open a file named after the last folder (`./data/` as `./data`).
    if (path.endsWith('/') || path.endsWith(sep)) {
      throw new InvalidOptionsError(`the SQLite backend needs a file's path, not a folder's: ${path}`);
    }
    if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
      throw new InvalidOptionsError('busyTimeoutMs must be a non-negative integer');
    }
    const batch = options.unitOfWorkBatch ?? {};
    const { maxUnits = DEFAULT_SQLITE_UNIT_OF_WORK_BATCH.maxUnits } = batch;
    const { maxOpenMs = DEFAULT_SQLITE_UNIT_OF_WORK_BATCH.maxOpenMs } = batch;
    if (!Number.isInteger(maxUnits) || maxUnits < 1) {
      throw new InvalidOptionsError('unitOfWorkBatch.maxUnits must be a positive integer');
    }
    if (!Number.isInteger(maxOpenMs) || maxOpenMs < 0) {
      throw new InvalidOptionsError('unitOfWorkBatch.maxOpenMs must be a non-negative integer');
    }
    this.#path = path;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#unitOfWorkBatch = { maxUnits, maxOpenMs };
    this.#lock = new WriteLock(path);
  }

  /** Opens the file (creating it and its directories) and applies pending migrations. Idempotent. */
  open(): Promise<void> {
    if (this.#closed) return Promise.reject(new EventStoreClosedError());
    this.#opening ??= this.#open();
    return this.#opening;
  }

  /**
   * Errors of the file system and of SQLite (a folder that cannot be made, a file that is not a
   * database) as `StoreUnavailableError`, naming the file; Ferry's own (`STORE_BUSY`,
   * `EVENT_STORE_CLOSED`) as they are.
   */
  async #open(): Promise<void> {
    try {
      await this.#openFile();
    } catch (error) {
      if (isFerryError(error)) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new StoreUnavailableError(
        'sqlite',
        `could not open the sqlite event store at ${this.#path}: ${reason}`,
        {
          cause: error,
        },
      );
    }
  }

  async #openFile(): Promise<void> {
    const { default: Driver } = await import('better-sqlite3');
    if (this.#closed) throw new EventStoreClosedError();
    if (this.#path !== ':memory:') {
      makeDirectory(dirname(this.#path));
      refuseReadOnlyFile(this.#path);
    }
    const db = new Driver(this.#path, { timeout: Math.min(this.#busyTimeoutMs, DRIVER_BUSY_TIMEOUT_MS) });
    let statements: Statements;
    try {
      db.defaultSafeIntegers(true);
      // Every step below may meet another connection's lock (one opening the same new file, switching
      // it to WAL or migrating it); even preparing a PRAGMA reads the schema. Each waits
      // asynchronously, as writes do, for up to busyTimeoutMs in all, then fails with STORE_BUSY.
      const deadline = Date.now() + this.#busyTimeoutMs;
      const whileLocked = <T>(step: () => T) => whileBusy(Math.max(0, deadline - Date.now()), step);
      // Another store of this process opening the same file waits here rather than polling.
      const release = await this.#lock.acquire(this.#busyTimeoutMs);
      try {
        // WAL lets readers run beside the writer. Switching a file to it needs the file to itself, so
        // it fails with SQLITE_BUSY while another connection holds any lock on a file not yet in WAL.
        await whileLocked(() => db.pragma('journal_mode = WAL'));
        // NORMAL: COMMIT writes the WAL without waiting for the disk (a crash of the process loses
        // nothing); what must survive a power cut then waits for a sync of the WAL on the thread pool
        // (WalSync) before it resolves, so the event loop is not blocked for the disk.
        await whileLocked(() => db.pragma('synchronous = NORMAL'));
        if (this.#closed) throw new EventStoreClosedError();
        await whileLocked(() => migrate(db));
        if (this.#closed) throw new EventStoreClosedError();
        // A file this process may only read: SQLite opens it read-only without a word, and every
        // write would fail later, untyped. A page changed in a transaction rolled back says so now.
        if (this.#path !== ':memory:') await whileLocked(() => probeWritable(db));
        statements = await whileLocked(() => prepareStatements(db));
      } finally {
        release();
      }
    } catch (error) {
      db.close();
      throw error;
    }
    this.#db = db;
    this.#statements = statements;
    if (this.#path !== ':memory:') {
      // Where SQLite keeps the WAL: beside the file a symbolic link points to, and not moved by a
      // later process.chdir() when the path is relative.
      this.#walSync = new WalSync(
        realpathSync(this.#path),
        () => {
          try {
            return this.#statements?.dataVersion.get();
          } catch {
            return undefined;
          }
        },
        absolutePath(this.#path),
      );
    }
    // An append and its outbox rows (`outbox.append`), which only an append that wrote inserts: both
    // in the append's own transaction, or its SAVEPOINT in a batch. One writer at a time, so each
    // row's seq follows commit order.
    const append = db.transaction<AppendRows>((streamId, events, expected, messages) => {
      const outcome = appendRows(statements, streamId, events, expected);
      if (outcome.written) {
        for (const m of messages) insertOutboxRow(statements.enqueue, m);
      }
      return outcome;
    });
    this.#append = append;
    // Called inside this transaction, each append's own is a SAVEPOINT: one that throws rolls back
    // alone, and the others commit.
    this.#appendBatch = db.transaction((batch: readonly QueuedAppend[]) =>
      batch.map((a): BatchOutcome => {
        try {
          return { result: append(a.streamId, a.events, a.expected, a.messages) };
        } catch (error) {
          return { error };
        }
      }),
    );
    if (this.#watchers.size > 0) this.#startPolling();
  }

  /**
   * Runs a write on this connection in this process's turn at the file (after units of work of the
   * batch under way), then waiting asynchronously while another process holds the lock.
   */
  #busy<T>(operation: (statements: Statements) => T): Promise<T> {
    return this.#lock.write(this.#busyTimeoutMs, () => operation(this.#ready()));
  }

  #ready(): Statements {
    if (this.#closed || this.#statements === undefined) throw new EventStoreClosedError();
    return this.#statements;
  }

  /**
   * Group commit: an append commits at the end of the event loop's turn it was called in (its check
   * phase), or when this process's turn at the file comes if it is taken (units of work), with every
   * append called meanwhile and those called while an earlier batch is still being settled (waiting
   * for another process's lock): together in call order, each in a SAVEPOINT of one transaction, so
   * that one commit (one WAL sync) serves them all, and an append that fails leaves the others in. A
   * writer alone waits for nothing but the end of its turn.
   */
  append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    // It would wait for the write lock that very unit of work holds until it ends: STORE_BUSY after
    // busyTimeoutMs, with nothing written. Said at once instead.
    if (insideUnitOf(this.#outbox)) {
      return Promise.reject(
        new UnitOfWorkUnsupportedError(
          'store.append inside a unit of work on the same SQLite store would wait for the write lock the unit of work holds: append through the unit of work (work.append, or handleIn)',
        ),
      );
    }
    return this.#enqueue(streamId, events, expected, []);
  }

  /** {@link append}, with outbox rows committed with it when it writes (`outbox.append`). */
  #enqueue(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ): Promise<AppendResult> {
    if (this.#refusing) return Promise.reject(new EventStoreClosedError());
    return new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({ streamId, events, expected, messages, resolve, reject });
      if (this.#flushing) return;
      this.#flushing = true;
      // While the file is taken (a batch of units of work), in line for it at once: what is called
      // until its turn comes joins in. Otherwise at the end of this turn of the event loop, so that
      // the appends of every callback of the turn (the requests that arrived together) share one
      // commit, one disk sync: committing the first at once would block the loop for its sync while
      // the others wait, then commit each of them alone.
      if (this.#lock.taken) void this.#flush();
      else atEndOfTurn(() => void this.#flush());
    });
  }

  /**
   * Commits the oldest {@link MAX_BATCH_APPENDS} appends of the queue once this process's turn at the
   * file came (after a batch of units of work under way); what queues after that goes next. One at a
   * time, so that appends to a stream apply in call order even while another process holds the lock.
   */
  async #flush(): Promise<void> {
    let batch: QueuedAppend[] | undefined;
    try {
      const outcomes = await this.#busy((): BatchOutcome[] => {
        // Taken once this process's turn at the file came: appends queued while it waited join in.
        batch ??= this.#queue.splice(0, MAX_BATCH_APPENDS);
        if (batch.length > 1) return this.#appendBatch!.immediate(batch);
        // BEGIN IMMEDIATE takes the write lock before the checks: no other writer slips in between.
        const a = batch[0]!;
        return [{ result: this.#append!.immediate(a.streamId, a.events, a.expected, a.messages) }];
      });
      if (batch!.length > 1) this.#groupCommits++;
      const synced = await this.#afterCommit();
      let written = false;
      let enqueued = false;
      for (const [i, outcome] of outcomes.entries()) {
        const a = batch![i]!;
        if ('error' in outcome) {
          a.reject(outcome.error);
          continue;
        }
        if (synced !== undefined) {
          a.reject(synced);
          continue;
        }
        written ||= outcome.result.written;
        enqueued ||= outcome.result.written && a.messages.length > 0;
        a.resolve({
          nextExpectedVersion: outcome.result.nextExpectedVersion,
          position: outcome.result.position,
        });
      }
      if (written) queueMicrotask(() => this.#notify());
      if (enqueued) this.#outbox?.announce();
    } catch (error) {
      // Nothing committed: the lock stayed taken, the commit failed, the store closed, or the one
      // append of the batch was refused.
      batch ??= this.#queue.splice(0, MAX_BATCH_APPENDS);
      for (const a of batch) a.reject(error);
    }
    this.#flushed();
  }

  /**
   * Waits for a disk sync of the WAL begun after the commit just made: what failed it (as
   * `StoreUnavailableError`: the commit is in the file, but may not outlive a power cut), or
   * `undefined`.
   */
  async #afterCommit(): Promise<unknown> {
    try {
      await this.#walSync?.afterCommit();
      return undefined;
    } catch (error) {
      return walSyncFailed(this.#path, error);
    }
  }

  /** The WAL syncs as the inbox, the idempotency store and units of work wait for them. */
  #commitSync(): CommitSync {
    return {
      afterCommit: async () => {
        const failed = await this.#afterCommit();
        if (failed !== undefined) throw failed;
      },
      durable: () => this.#durable(),
    };
  }

  /** Before what was read leaves the file: waits for a sync covering every commit it could see. */
  #durable(): Promise<void> {
    return (
      this.#walSync?.durable().catch((error: unknown) => {
        throw walSyncFailed(this.#path, error);
      }) ?? Promise.resolve()
    );
  }

  /** How many batches of two or more appends committed as one transaction; for tests and benchmarks. */
  get groupCommits(): number {
    return this.#groupCommits;
  }

  /** How many transactions of units of work committed (each one or more of them); for tests and benchmarks. */
  get unitOfWorkCommits(): number {
    return this.#unitOfWorkCommits;
  }

  #flushed(): void {
    if (this.#queue.length > 0) queueMicrotask(() => void this.#flush());
    else {
      this.#flushing = false;
      for (const resolve of this.#whenFlushed.splice(0)) resolve();
    }
  }

  async readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    const events = readStreamWith(this.#ready(), streamId, options);
    if (events.length > 0) await this.#durable();
    return events;
  }

  async readAfter(
    after: bigint,
    limit: number,
    types: readonly string[] | undefined,
  ): Promise<ReadAfterResult> {
    const s = this.#ready();
    const rows =
      types === undefined
        ? s.readAfter.all(after, limit)
        : s.readAfterTyped.all(after, JSON.stringify(types), limit);
    if (rows.length > 0) await this.#durable();
    return { events: rows.map(toRecordedEvent), held: false };
  }

  async horizon(): Promise<bigint> {
    return this.#ready().horizon.get()!;
  }

  async countAfter(position: bigint): Promise<number> {
    return Number(this.#ready().countAfter.get(position)!);
  }

  /** Appends through this instance wake `listener` at once; those of other connections within about 100 ms. */
  watch(listener: () => void): () => void {
    this.#watchers.add(listener);
    if (this.#watchers.size === 1 && this.#statements !== undefined) this.#startPolling();
    return () => {
      this.#watchers.delete(listener);
      if (this.#watchers.size === 0) this.#stopPolling();
    };
  }

  #notify(): void {
    for (const watcher of [...this.#watchers]) watcher();
  }

  // `data_version` changes when another connection commits to the file (never for this one's commits).
  // Any commit counts, a checkpoint too: a needless wake-up costs a subscription one empty read.
  #startPolling(): void {
    const s = this.#statements!;
    this.#dataVersion = s.dataVersion.get()!;
    this.#poller = setInterval(() => {
      let version: bigint;
      try {
        version = s.dataVersion.get()!;
      } catch {
        return; // Tried again on the next tick; subscriptions also re-read on their idle poll.
      }
      if (version === this.#dataVersion) return;
      this.#dataVersion = version;
      this.#notify();
    }, DATA_VERSION_POLL_MS);
    this.#poller.unref();
  }

  #stopPolling(): void {
    clearInterval(this.#poller);
    this.#poller = undefined;
  }

  async loadCheckpoint(subscription: string): Promise<bigint | undefined> {
    return this.#ready().loadCheckpoint.get(subscription);
  }

  async saveCheckpoint(subscription: string, position: bigint): Promise<void> {
    await this.#busy((s) => s.saveCheckpoint.run(subscription, position, new Date().toISOString()));
  }

  async claimSubscription(
    subscription: string,
    owner: string,
    ttlMs: number,
    replacing?: string,
  ): Promise<string> {
    // The processes sharing a SQLite file share its host's clock.
    const claim = { subscription, owner, now: Date.now(), ttl: ttlMs, replacing: replacing ?? null };
    return this.#busy((s) =>
      s.claimSubscription.run(claim).changes === 1 ? owner : (s.leaseHolder.get(subscription) ?? ''),
    );
  }

  async releaseSubscription(subscription: string, owner: string): Promise<void> {
    const released = await this.#busy((s) => s.releaseSubscription.run(subscription, owner).changes === 1);
    if (released) announceLeaseRelease(this.#lock.file, subscription);
  }

  /** Releases through any store of this process on the file, at once; other processes' are found by polling. */
  watchLeases(listener: (subscription: string) => void): () => void {
    return watchLeaseReleases(this.#lock.file, listener);
  }

  async park(parked: ParkedEvent): Promise<void> {
    // The position is the row's key; the rest of the event is kept as JSON.
    const { position, ...event } = parked.event;
    await this.#busy((s) =>
      s.park.run(
        parked.subscription,
        position,
        JSON.stringify(event),
        parked.error,
        parked.attempts,
        parked.parkedAt,
      ),
    );
  }

  async listParked(subscription: string, limit: number): Promise<ParkedEvent[]> {
    return this.#ready()
      .listParked.all(subscription, limit)
      .map((row) => ({
        subscription: row.subscription,
        event: { ...(JSON.parse(row.event) as Omit<RecordedEvent, 'position'>), position: row.position },
        error: row.error,
        attempts: Number(row.attempts),
        parkedAt: row.parked_at,
      }));
  }

  async unpark(subscription: string, position: bigint): Promise<void> {
    await this.#busy((s) => s.unpark.run(subscription, position));
  }

  async loadSnapshot(streamId: string): Promise<Snapshot | undefined> {
    const row = this.#ready().loadSnapshot.get(streamId);
    if (row === undefined) return undefined;
    return {
      streamId: row.stream_id,
      version: Number(row.version),
      schemaVersion: Number(row.schema_version),
      state: JSON.parse(row.state),
      time: row.time,
    };
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    await this.#busy((s) =>
      s.saveSnapshot.run(
        snapshot.streamId,
        snapshot.version,
        snapshot.schemaVersion,
        JSON.stringify(snapshot.state ?? null),
        snapshot.time,
      ),
    );
  }

  /** Writes of the inbox and idempotency store on this connection, in this process's turn at the file. */
  #writes(): StoreWrite {
    return (operation) => this.#lock.write(this.#busyTimeoutMs, operation);
  }

  /** An inbox in this database, for idempotent consumers of the message bus. Needs `open()` first. */
  inbox(options: DurableInboxOptions = {}): Inbox {
    this.#ready();
    return new SqliteInbox(this.#db!, options, this.#writes(), this.#commitSync());
  }

  /**
   * An HTTP idempotency store in this database, shared by every process on the file and kept across
   * restarts. Needs `open()` first; closing the backend closes it.
   */
  idempotencyStore(options: DurableIdempotencyStoreOptions = {}): SqliteIdempotencyStore {
    this.#ready();
    return new SqliteIdempotencyStore(this.#db!, options, this.#writes(), this.#commitSync());
  }

  /**
   * The outbox, transactional inbox marks and saga rows in this file, for `createOutbox` and units of
   * work (the same instance on every call; usable once `open()` has resolved). Units of work run on a
   * second connection to the file, so a `:memory:` database has none (`UNIT_OF_WORK_UNSUPPORTED`).
   */
  outboxStorage(): SqliteOutboxStorage {
    if (this.#path === ':memory:') throw new UnitOfWorkUnsupportedError(SQLITE_MEMORY_HAS_NO_UNITS_OF_WORK);
    this.#outbox ??= new SqliteOutboxStorage({
      path: this.#path,
      busyTimeoutMs: this.#busyTimeoutMs,
      lock: this.#lock,
      batch: this.#unitOfWorkBatch,
      committed: () => void this.#unitOfWorkCommits++,
      ...this.#commitSync(),
      ready: () => void this.#ready(),
      connection: () => {
        this.#ready();
        return this.#db!;
      },
      appended: () => queueMicrotask(() => this.#notify()),
      appendWithMessages: (streamId, events, expected, messages) =>
        this.#enqueue(streamId, events, expected, messages),
    });
    return this.#outbox;
  }

  /** Stops watching for other connections' appends and closes the database. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // A disk that does not answer one sync for busyTimeoutMs while close() waits: what waits for it
    // rejects with STORE_UNAVAILABLE (committed, outcome after a power cut unknown), and close() goes
    // on. A close that waits for something else (a relay's publish) gives up on nothing.
    const limit = this.#busyTimeoutMs;
    const watch = setInterval(
      () => {
        if (this.#walSync !== undefined && this.#walSync.runningFor() >= limit) {
          this.#walSync.abandon(
            new Error(`a disk sync of the write-ahead log did not end within ${limit} ms`),
          );
        }
      },
      Math.max(10, Math.floor(limit / 4)),
    );
    try {
      await this.#closeFile();
    } finally {
      clearInterval(watch);
    }
  }

  async #closeFile(): Promise<void> {
    // Appends called before close() are committed first: those still on their way here (an
    // `outbox.append` preparing its messages) by the end of this turn, then every batch queued.
    // Then every later call is refused, and the units of work called before close() end as they
    // would have (they take turns at the file with those appends).
    await endOfTurn();
    this.#refusing = true;
    await Promise.all([
      this.#outbox?.drain(),
      (async () => {
        while (this.#flushing) await new Promise<void>((resolve) => this.#whenFlushed.push(resolve));
      })(),
    ]);
    this.#closed = true;
    this.#stopPolling();
    this.#watchers.clear();
    await this.#opening?.catch(() => {});
    await this.#outbox?.close();
    await this.#walSync?.close();
    this.#db?.close();
    this.#db = undefined;
    this.#statements = undefined;
  }
}

/** A WAL sync that failed: the commits it was to cover are in the file, but may not outlive a power cut. */
function walSyncFailed(path: string, cause: unknown): StoreUnavailableError {
  if (cause instanceof DatabaseFileMovedError) {
    return new StoreUnavailableError('sqlite', `committed, but ${cause.message}`, {
      cause,
      outcomeUnknown: true,
    });
  }
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new StoreUnavailableError(
    'sqlite',
    `committed to ${path}, but the disk sync of its write-ahead log failed (${reason}): whether it outlives a power cut is unknown`,
    { cause, outcomeUnknown: true },
  );
}

/**
 * Throws when `path` is a file this process may not write, before SQLite opens it: SQLite would
 * open it read-only and make the -wal and -shm files beside it as this process's user, which its
 * owner may then be unable to write, shutting the owner out of its own store.
 */
function refuseReadOnlyFile(path: string): void {
  try {
    accessSync(path, constants.W_OK);
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    if (code === 'ENOENT') return; // A new file: SQLite makes it.
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      throw new Error(`the file is read-only for this process (${code})`, { cause: error });
    }
    throw error;
  }
}

/**
 * Throws when the connection cannot write (SQLite opened a file the process may only read): a page
 * changed (the header's user_version set to what it holds) in a transaction rolled back.
 */
function probeWritable(db: Database.Database): void {
  const version = Number(db.pragma('user_version', { simple: true }));
  db.exec('BEGIN IMMEDIATE');
  try {
    db.pragma(`user_version = ${version}`);
  } catch (error) {
    if (!String((error as { code?: unknown }).code).startsWith('SQLITE_READONLY')) throw error;
    throw new Error(`the file is read-only for this process (${(error as Error).message})`, { cause: error });
  } finally {
    if (db.inTransaction) db.exec('ROLLBACK');
  }
}

/**
 * Applies pending migrations. BEGIN IMMEDIATE takes the write lock first, so when two processes open a
 * new file at once, the second waits, then finds the migrations recorded and applies none.
 */
function migrate(db: Database.Database): void {
  db.transaction(() => {
    db.exec(
      'CREATE TABLE IF NOT EXISTS ferry_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    const applied = new Set(
      db
        .prepare<[], bigint>('SELECT version FROM ferry_migrations')
        .pluck()
        .all()
        .map((v) => Number(v)),
    );
    const record = db.prepare<[number, string, string]>(
      'INSERT INTO ferry_migrations (version, name, applied_at) VALUES (?, ?, ?)',
    );
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      db.exec(migration.sql);
      record.run(migration.version, migration.name, new Date().toISOString());
    }
  }).immediate();
}
