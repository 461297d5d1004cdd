import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';

/**
 * What the outbox, the transactional inbox and sagas need from a store's database. Implemented by
 * the memory, SQLite and PostgreSQL backends (`outboxStorage()`), checked by one contract suite
 * (`testOutboxStorage`). Times are epoch milliseconds read from the caller's clock and passed in, so
 * that a virtual clock drives due times and leases in tests; instances of one service should have
 * their clocks in step (NTP), as with any lease.
 */
export interface OutboxStorage {
  readonly name: string;

  /**
   * Runs `work` inside one database transaction and commits it when `work` resolves; rolls it back
   * when `work` throws (the error is rethrown unchanged). Everything done through the transaction
   * handle (appends, the caller's SQL, outbox rows, inbox marks, saga rows) is durable together or
   * not at all. Transactions of one process may be serialised (SQLite, memory).
   */
  transaction<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T>;

  /**
   * The fast path of a unit of work that appends to one stream and enqueues messages: both commit
   * atomically, sharing commits with concurrent appends of this process where the backend has group
   * commit, each append's expected version checked on its own; an append refused
   * (`ConcurrencyError`, `DuplicateEventIdError`) enqueues nothing. An append whose event ids are all
   * stored already (a retry) writes nothing and enqueues nothing. Optional: without it the outbox
   * runs a transaction (no shared commits).
   */
  appendWithMessages?(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ): Promise<AppendResult>;

  /**
   * Leases up to `limit` deliverable rows to `owner` until `now + leaseMs`, in `seq` order, and
   * returns them. A row is deliverable when it is `pending`, due (`dueAt <= now`), not leased by
   * anyone (or its lease ended before `now`, or `owner` leases it; a held row, see {@link hold}, not
   * even to its holder until its lease ends), and no row of the same key with a lower `seq` remains
   * (pending, failed or leased) other than rows held by a relay whose lease runs and scheduled rows
   * not yet due (never attempted, `dueAt > createdAt` and `dueAt > now`): at most one row per key is
   * returned, the oldest not held, so that a key's rows go out one at a time in commit order. A
   * scheduled row takes its place in its key's order when it falls due: it is not deliverable while a
   * row of its key with a higher `seq` is leased (being sent; not held). Several owners calling at
   * once never get the same row.
   */
  claim(owner: string, now: number, limit: number, leaseMs: number): Promise<OutboxRow[]>;
  /**
   * Deletes the rows `owner` still leases or holds among `seqs` (they were published, or settled).
   * Resolves how many.
   */
  delivered(owner: string, seqs: readonly bigint[]): Promise<number>;
  /**
   * Holds rows `owner` published, until their messages are settled (a transport that keeps messages
   * in process memory only, see `Transport.publishTracked`): each row among `seqs` that `owner`
   * leases or holds stays in the outbox, held by `owner` until `until` (called again to renew).
   * `claim` hands a held row to no one, `owner` included, until that time passes (its relay died:
   * the row goes out again); it no longer holds back the rows of its key behind it. `delivered`
   * deletes it once settled. Resolves the seqs now held (not those another relay took over).
   */
  hold(owner: string, seqs: readonly bigint[], until: number): Promise<bigint[]>;
  /**
   * Ends `owner`'s lease on row `seq` after a failed attempt: `attempts` + 1 when `counted` (the
   * broker refused the message; not when it could not be reached), `lastError` set, due again at
   * `dueAt`. Does nothing when `owner` no longer leases it.
   */
  retry(owner: string, seq: bigint, error: string, dueAt: number, counted: boolean): Promise<void>;
  /**
   * Sets row `seq` aside as `failed` with `error` (`attempts` + 1, lease ended); its key is held
   * until it is redriven or discarded. Does nothing when `owner` no longer leases it.
   */
  fail(owner: string, seq: bigint, error: string): Promise<void>;
  /** Up to `limit` failed rows, oldest first. */
  failed(limit: number): Promise<OutboxRow[]>;
  /** Failed rows among `ids` (message ids) become pending again, due now, attempts 0. Resolves how many. */
  redrive(ids: readonly string[], now: number): Promise<number>;
  /** Deletes the failed rows among `ids`. Resolves how many. */
  discard(ids: readonly string[]): Promise<number>;
  /** Pending, held, failed and scheduled rows (see {@link OutboxBacklog}), and since when the oldest waits. */
  backlog(now: number): Promise<OutboxBacklog>;
  /**
   * When the relay should look next: the earliest `dueAt` among the rows `claim` could hand out once
   * due (pending, not leased at `now`, the oldest row of their key as `claim` counts it), if any.
   * Rows behind an older row of their key do not count: they wait for it.
   */
  nextDue(now: number): Promise<number | undefined>;
  /** Scheduled rows not yet due (see {@link OutboxBacklog}), soonest first, optionally of one key. */
  scheduled(now: number, limit: number, key?: string): Promise<OutboxRow[]>;

  /** Deletes up to `limit` inbox marks made before `before`. Resolves how many. */
  pruneHandled(before: number, limit: number): Promise<number>;

  /**
   * Saga instances of `saga`, optionally only those with `status`, up to `limit`, least recently
   * updated first; those updated at the same ms by id, in code point order (as SQLite's BINARY and
   * PostgreSQL's "C" collation sort).
   */
  sagas(saga: string, limit: number, status?: SagaStatus): Promise<SagaRow[]>;

  /**
   * Calls `listener` when outbox rows may have been committed by another process (LISTEN/NOTIFY on
   * PostgreSQL, a data version poll on SQLite; never on memory, where every commit is in-process).
   * Returns an unsubscribe function.
   */
  watch(listener: () => void): () => void;
}

/** What {@link StorageTransaction.append} did. */
export interface StorageAppendResult extends AppendResult {
  /**
   * Every event was in the stream already (an append sent again): nothing was written, and the
   * result is that of the latest of them. A storage that cannot tell leaves it out.
   */
  readonly repeated?: boolean;
}

/** The handle a unit of work writes through: every call joins the open transaction. */
export interface StorageTransaction {
  /**
   * Appends events, already checked and encoded (`prepareAppend`), enforcing `expected` now
   * (`ConcurrencyError`, `DuplicateEventIdError` as the store's append).
   */
  append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<StorageAppendResult>;
  /**
   * The events of a stream as this transaction sees them: committed ones and its own appends, on the
   * transaction's own connection (no second pooled connection, which units of work in flight could
   * exhaust). Options as the store's `readStream`.
   */
  readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]>;
  /**
   * Runs the caller's SQL in the transaction (`?` placeholders on SQLite, `$1` on PostgreSQL) and
   * resolves its rows (none for a statement that returns none). Rejects on memory.
   */
  query(sql: string, params?: readonly unknown[]): Promise<Record<string, unknown>[]>;
  /** The driver's handle (a `pg` client, a `better-sqlite3` database), `undefined` on memory. */
  readonly client: unknown;
  /**
   * Holds `keys` (distinct, sorted) until the transaction ends: another transaction locking one of
   * them waits for this one to commit or roll back. Where transactions of a process run one at a
   * time (memory, SQLite, whose write lock also keeps other processes out), there is nothing to wait for.
   */
  lock(keys: readonly string[]): Promise<void>;
  /** Adds rows to the outbox, in order (their `seq` increases in this order). */
  enqueue(messages: readonly OutboxInsert[]): Promise<void>;
  /**
   * Deletes scheduled rows among `ids` (message ids, see {@link OutboxBacklog}; due or not) that no
   * relay leases now, and scheduled rows enqueued earlier in this transaction. Resolves the ids
   * deleted. A plain message, or one already attempted, is never deleted.
   */
  cancel(ids: readonly string[], now: number): Promise<string[]>;
  /**
   * Records that `consumer` handled message `messageId`. Resolves `false` when it already had (the
   * mark committed earlier): the caller must then do nothing. Waits for a concurrent transaction
   * holding the same mark to end.
   */
  markHandled(consumer: string, messageId: string, now: number): Promise<boolean>;
  /** The instance `id` of `saga`, as committed or as written earlier in this transaction. */
  loadSaga(saga: string, id: string): Promise<SagaRow | undefined>;
  /**
   * Writes a saga instance: inserted when `expectedVersion` is 0, otherwise updated only if its stored
   * version is `expectedVersion`; the stored version becomes `row.version`. Rejects with
   * `SagaConcurrencyError` when the instance exists (insert) or has another version (update).
   */
  saveSaga(row: SagaRow, expectedVersion: number): Promise<void>;
}

/** A message to put in the outbox. */
export interface OutboxInsert {
  /** The message id (the envelope's), unique in the outbox. */
  readonly id: string;
  /** Messages of one key are published one at a time in the order they were enqueued. */
  readonly key: string;
  /** The envelope as JSON text. */
  readonly envelope: string;
  /** When to publish: now, or later for a scheduled message. */
  readonly dueAt: number;
  readonly createdAt: number;
}

/** A row of the outbox. */
export interface OutboxRow {
  /** Commit order (increasing, not contiguous). */
  readonly seq: bigint;
  readonly id: string;
  readonly key: string;
  readonly envelope: string;
  readonly state: 'pending' | 'failed';
  readonly attempts: number;
  readonly createdAt: number;
  readonly dueAt: number;
  readonly lastError: string | undefined;
}

/**
 * What waits in an outbox. A row is _scheduled_ when it was written by `work.schedule`
 * (`dueAt > createdAt`: one due at once is written as created 1 ms before) and has not been attempted
 * yet (no `lastError`); a row is _held_ when it was
 * published and a relay holds it until its message is settled (see {@link OutboxStorage.hold}), its
 * lease running; every other row not failed is pending, whether due now or waiting for a retry.
 */
export interface OutboxBacklog {
  /** Rows pending: due, or waiting for a retry. */
  readonly pending: number;
  /** Rows published and held until their messages are settled. */
  readonly held: number;
  readonly failed: number;
  /** Scheduled rows not yet due. */
  readonly scheduled: number;
  /**
   * Since when the longest-waiting row pending or failed has been waiting: its due time for a
   * scheduled row, its creation otherwise. Held rows do not count: they are published.
   */
  readonly oldestWaitingSince: number | undefined;
}

export type SagaStatus = 'active' | 'completed';

/** A stored saga instance. */
export interface SagaRow {
  readonly saga: string;
  readonly id: string;
  /** The state as JSON text. */
  readonly state: string;
  /** 1 after the first save, + 1 per save. */
  readonly version: number;
  readonly status: SagaStatus;
  readonly updatedAt: number;
}

/**
 * A store backend that keeps an outbox in its database (SQLite, PostgreSQL). The memory backend gets
 * its storage from `MemoryOutboxStorage`.
 */
export interface OutboxCapable {
  outboxStorage(): OutboxStorage;
}

export function isOutboxCapable(backend: unknown): backend is OutboxCapable {
  return typeof (backend as Partial<OutboxCapable> | null)?.outboxStorage === 'function';
}
