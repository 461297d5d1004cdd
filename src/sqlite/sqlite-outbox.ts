import type Database from 'better-sqlite3';
import { storableText } from '../errors/storable-text.js';
import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';
import type {
  OutboxBacklog,
  OutboxInsert,
  OutboxRow,
  OutboxStorage,
  SagaRow,
  SagaStatus,
  StorageTransaction,
} from '../outbox/storage.js';
import { boundLimit } from './bound-limit.js';
import {
  deliverable,
  held,
  jsonList,
  ms,
  NEXT_DUE,
  OUTBOX_COLUMNS,
  type OutboxDbRow,
  SAGA_COLUMNS,
  type SagaDbRow,
  SCHEDULED,
  toOutboxRow,
  toSagaRow,
} from './sqlite-outbox-sql.js';
import { type SqliteUnitOfWorkHost, SqliteUnitsOfWork } from './sqlite-unit-of-work.js';

/** What the storage needs from the backend that owns it. */
export interface SqliteOutboxHost extends SqliteUnitOfWorkHost {
  /**
   * Resolves once every commit to the file this process could have read so far survived a disk
   * sync: what a claim read is published only then.
   */
  readonly durable: () => Promise<void>;
  /** The store's open connection; throws `EventStoreClosedError` while the backend is not open. */
  readonly connection: () => Database.Database;
  /**
   * The store's group commit of an append and, when it writes, its outbox rows in the same SAVEPOINT
   * (the storage's `appendWithMessages`); the backend calls {@link SqliteOutboxStorage.announce}
   * after a commit that enqueued.
   */
  readonly appendWithMessages: (
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ) => Promise<AppendResult>;
}

/** How often `watch` looks for commits of other connections. */
const DATA_VERSION_POLL_MS = 100;

interface ClaimParams {
  owner: string;
  now: number;
  limit: number;
  until: number;
}

/** The relay's and the operator's statements, on the store's own connection. */
function prepareStatements(db: Database.Database) {
  // One statement per kind of row, merged here: as one compound SELECT (UNION ALL … ORDER BY seq
  // LIMIT), SQLite took ten times as long as its parts together on every claim.
  const kinds = deliverable('seq');
  const firstOfKind = kinds.map((query) =>
    db.prepare<[{ owner: string; now: number }], bigint>(`${query} LIMIT 1`).pluck(),
  );
  const oldestOfKind = kinds.map((query) =>
    db
      .prepare<[{ owner: string; now: number; limit: number }], bigint>(
        `${query} ORDER BY 1 ${boundLimit('@limit')}`,
      )
      .pluck(),
  );
  const lease = db.prepare<[{ owner: string; until: number; seqs: string }], OutboxDbRow>(
    `UPDATE ferry_outbox SET lease_owner = @owner, lease_until = @until
     WHERE seq IN (SELECT value FROM json_each(@seqs)) RETURNING ${OUTBOX_COLUMNS}`,
  );
  return {
    anyDeliverable: (params: { owner: string; now: number }): boolean =>
      firstOfKind.some((statement) => statement.get(params) !== undefined),
    claim: db.transaction(({ owner, now, limit, until }: ClaimParams): OutboxDbRow[] => {
      const seqs = oldestOfKind
        .flatMap((statement) => statement.all({ owner, now, limit }))
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
        .slice(0, limit);
      return seqs.length === 0 ? [] : lease.all({ owner, until, seqs: jsonList(seqs) });
    }),
    delivered: db.prepare<[{ owner: string; seqs: string }]>(
      `DELETE FROM ferry_outbox WHERE lease_owner IN (@owner, 'held:' || @owner)
       AND seq IN (SELECT value FROM json_each(@seqs))`,
    ),
    hold: db
      .prepare<[{ owner: string; seqs: string; until: number }], bigint>(
        `UPDATE ferry_outbox SET lease_owner = 'held:' || @owner, lease_until = @until
         WHERE lease_owner IN (@owner, 'held:' || @owner) AND +state = 'pending' -- by seq, not by state
           AND seq IN (SELECT value FROM json_each(@seqs))
         RETURNING seq`,
      )
      .pluck(),
    retry: db.prepare<[number, string, number, string, bigint]>(
      `UPDATE ferry_outbox SET attempts = attempts + ?, last_error = ?, due_at = ?, lease_owner = NULL, lease_until = NULL
       WHERE lease_owner = ? AND seq = ? AND state = 'pending'`,
    ),
    fail: db.prepare<[string, string, bigint]>(
      `UPDATE ferry_outbox SET state = 'failed', attempts = attempts + 1, last_error = ?, lease_owner = NULL, lease_until = NULL
       WHERE lease_owner = ? AND seq = ? AND state = 'pending'`,
    ),
    failed: db.prepare<[number], OutboxDbRow>(
      `SELECT ${OUTBOX_COLUMNS} FROM ferry_outbox WHERE state = 'failed' ORDER BY seq ${boundLimit()}`,
    ),
    redrive: db.prepare<[number, string]>(
      `UPDATE ferry_outbox SET state = 'pending', due_at = ?, attempts = 0, lease_owner = NULL, lease_until = NULL
       WHERE state = 'failed' AND id IN (SELECT value FROM json_each(?))`,
    ),
    discard: db.prepare<[string]>(
      "DELETE FROM ferry_outbox WHERE state = 'failed' AND id IN (SELECT value FROM json_each(?))",
    ),
    backlog: db.prepare<
      [{ now: number }],
      { pending: bigint; held: bigint; failed: bigint; scheduled: bigint; oldest: bigint | null }
    >(
      `SELECT count(*) FILTER (WHERE state = 'pending' AND NOT ${held('')} AND NOT (${SCHEDULED} AND due_at > @now)) AS pending,
              count(*) FILTER (WHERE ${held('')}) AS held,
              count(*) FILTER (WHERE state = 'failed') AS failed,
              count(*) FILTER (WHERE state = 'pending' AND ${SCHEDULED} AND due_at > @now) AS scheduled,
              min(CASE WHEN ${SCHEDULED} THEN due_at ELSE created_at END)
                FILTER (WHERE NOT (state = 'pending' AND ${SCHEDULED} AND due_at > @now) AND NOT ${held('')}) AS oldest
       FROM ferry_outbox`,
    ),
    // Only the oldest row of a key can be claimed: rows waiting behind it do not make the relay look sooner.
    nextDue: db.prepare<[{ now: number }], bigint | null>(NEXT_DUE).pluck(),
    scheduled: db.prepare<[{ now: number; limit: number; key: string | null }], OutboxDbRow>(
      `SELECT ${OUTBOX_COLUMNS} FROM ferry_outbox
       WHERE state = 'pending' AND ${SCHEDULED} AND due_at > @now AND (@key IS NULL OR key = @key)
       ORDER BY due_at, seq ${boundLimit('@limit')}`,
    ),
    pruneHandled: db.prepare<[number, number]>(
      `DELETE FROM ferry_inbox_done WHERE rowid IN (
         SELECT rowid FROM ferry_inbox_done WHERE handled_at < ? ORDER BY handled_at ${boundLimit()})`,
    ),
    sagas: db.prepare<[{ saga: string; status: string | null; limit: number }], SagaDbRow>(
      `SELECT ${SAGA_COLUMNS} FROM ferry_sagas WHERE saga = @saga AND (@status IS NULL OR status = @status)
       ORDER BY updated_at, id ${boundLimit('@limit')}`,
    ),
    dataVersion: db.prepare<[], bigint>('PRAGMA data_version').pluck(),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/**
 * The outbox, transactional inbox marks and saga rows of a SQLite event store, in its file
 * (migration 6). Get it from `SqliteEventStoreBackend.outboxStorage()`.
 *
 * Units of work run on a second connection to the file (see `SqliteUnitsOfWork`), so a `:memory:`
 * store refuses them (`INVALID_OPTIONS`). The relay's calls run on the store's connection, each a
 * short write that waits asynchronously for the lock like the store's other writes (`STORE_BUSY`
 * after `busyTimeoutMs`); a claim that finds nothing to hand out reads only, so it never waits for an
 * open unit of work. Several processes may share the file: each claim takes the write lock, so no
 * two relays get the same row.
 */
export class SqliteOutboxStorage implements OutboxStorage {
  readonly name = 'sqlite';
  readonly #host: SqliteOutboxHost;
  readonly #units: SqliteUnitsOfWork;
  readonly #watchers = new Set<() => void>();
  #statements: Statements | undefined;
  #poller: NodeJS.Timeout | undefined;
  #dataVersion = 0n;

  /** Use `SqliteEventStoreBackend.outboxStorage()`. */
  constructor(host: SqliteOutboxHost) {
    this.#host = host;
    this.#units = new SqliteUnitsOfWork(host);
  }

  /** Prepared with the first use: the store's connection exists only once the backend is open. */
  #ready(): Statements {
    const db = this.#host.connection();
    this.#statements ??= prepareStatements(db);
    return this.#statements;
  }

  #write<T>(operation: (s: Statements) => T): Promise<T> {
    return this.#host.lock.write(this.#host.busyTimeoutMs, () => operation(this.#ready()));
  }

  /**
   * The relay's bookkeeping (claims, holds, deletes after delivery, retry times): committed, as every
   * commit on the store's connections (`synchronous = NORMAL`), without waiting for the disk, and
   * not waiting for a sync either. A crash of the process loses none of it (WAL). A power cut may
   * lose the last of it: then a message is published again, which consumers' inboxes drop; none is
   * lost, since a row only leaves the outbox by a delete. The next sync of the WAL covers it.
   */
  #bookkeeping<T>(operation: (s: Statements) => T): Promise<T> {
    return this.#write(operation);
  }

  /** A row set aside as failed, redriven or discarded: resolves once that survives a power cut. */
  async #durableWrite<T>(operation: (s: Statements) => T): Promise<T> {
    const result = await this.#write(operation);
    await this.#host.afterCommit();
    return result;
  }

  transaction<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    return this.#units.run(work);
  }

  /**
   * Joins the store's group commit on its connection: concurrent calls (and `store.append` calls)
   * commit together, each append in a SAVEPOINT of its own with its outbox rows, which only an append
   * that wrote inserts. A commit that enqueued wakes this storage's watchers at once (the data
   * version poll does not see the store connection's own commits).
   */
  appendWithMessages(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ): Promise<AppendResult> {
    return this.#host.appendWithMessages(streamId, events, expected, messages);
  }

  /** @internal The store committed outbox rows on its connection: wakes the watchers. */
  announce(): void {
    queueMicrotask(() => {
      for (const watcher of [...this.#watchers]) watcher();
    });
  }

  async claim(owner: string, now: number, limit: number, leaseMs: number): Promise<OutboxRow[]> {
    if (limit <= 0) return [];
    const at = ms(now);
    // A read first: in WAL it never waits, and most calls of an idle relay end here.
    if (!this.#ready().anyDeliverable({ owner, now: at })) return [];
    const params = { owner, now: at, limit, until: at + ms(leaseMs) };
    const rows = await this.#bookkeeping((s) => s.claim.immediate(params));
    // Published only once the commits that wrote them survive a power cut.
    if (rows.length > 0) await this.#host.durable();
    return rows.map(toOutboxRow).sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  }

  async delivered(owner: string, seqs: readonly bigint[]): Promise<number> {
    if (seqs.length === 0) return 0;
    return (await this.#bookkeeping((s) => s.delivered.run({ owner, seqs: jsonList(seqs) }))).changes;
  }

  async hold(owner: string, seqs: readonly bigint[], until: number): Promise<bigint[]> {
    if (seqs.length === 0) return [];
    const params = { owner, seqs: jsonList(seqs), until: ms(until) };
    return this.#bookkeeping((s) => s.hold.all(params));
  }

  async retry(owner: string, seq: bigint, error: string, dueAt: number, counted: boolean): Promise<void> {
    await this.#bookkeeping((s) => s.retry.run(counted ? 1 : 0, storableText(error), ms(dueAt), owner, seq));
  }

  async fail(owner: string, seq: bigint, error: string): Promise<void> {
    await this.#durableWrite((s) => s.fail.run(storableText(error), owner, seq));
  }

  async failed(limit: number): Promise<OutboxRow[]> {
    if (limit <= 0) return [];
    return this.#ready().failed.all(limit).map(toOutboxRow);
  }

  async redrive(ids: readonly string[], now: number): Promise<number> {
    if (ids.length === 0) return 0;
    return (await this.#durableWrite((s) => s.redrive.run(ms(now), jsonList(ids)))).changes;
  }

  async discard(ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return (await this.#durableWrite((s) => s.discard.run(jsonList(ids)))).changes;
  }

  async backlog(now: number): Promise<OutboxBacklog> {
    const row = this.#ready().backlog.get({ now: ms(now) })!;
    return {
      pending: Number(row.pending),
      held: Number(row.held),
      failed: Number(row.failed),
      scheduled: Number(row.scheduled),
      oldestWaitingSince: row.oldest === null ? undefined : Number(row.oldest),
    };
  }

  async nextDue(now: number): Promise<number | undefined> {
    const due = this.#ready().nextDue.get({ now: ms(now) });
    return due === null || due === undefined ? undefined : Number(due);
  }

  async scheduled(now: number, limit: number, key?: string): Promise<OutboxRow[]> {
    if (limit <= 0) return [];
    return this.#ready()
      .scheduled.all({ now: ms(now), limit, key: key ?? null })
      .map(toOutboxRow);
  }

  async pruneHandled(before: number, limit: number): Promise<number> {
    if (limit <= 0) return 0;
    return (await this.#write((s) => s.pruneHandled.run(ms(before), limit))).changes;
  }

  async sagas(saga: string, limit: number, status?: SagaStatus): Promise<SagaRow[]> {
    if (limit <= 0) return [];
    return this.#ready()
      .sagas.all({ saga, status: status ?? null, limit })
      .map(toSagaRow);
  }

  /**
   * Calls `listener` within about 100 ms of a commit by another connection to the file (another
   * process's unit of work or relay, this process's units of work, which the outbox already knows
   * of, too): any commit counts, so a wake-up may find nothing new.
   */
  watch(listener: () => void): () => void {
    this.#watchers.add(listener);
    if (this.#watchers.size === 1) this.#startPolling();
    return () => {
      this.#watchers.delete(listener);
      if (this.#watchers.size === 0) this.#stopPolling();
    };
  }

  // `data_version` changes when another connection commits to the file (never for this one's commits).
  #startPolling(): void {
    try {
      this.#dataVersion = this.#ready().dataVersion.get()!;
    } catch {
      this.#dataVersion = -1n; // Not open yet: the first tick reads where to start from.
    }
    this.#poller = setInterval(() => {
      let version: bigint;
      try {
        version = this.#ready().dataVersion.get()!;
      } catch {
        return; // Not open yet, or locked: tried again on the next tick.
      }
      const first = this.#dataVersion === -1n;
      if (version === this.#dataVersion) return;
      this.#dataVersion = version;
      if (first) return;
      for (const watcher of [...this.#watchers]) watcher();
    }, DATA_VERSION_POLL_MS);
    this.#poller.unref();
  }

  #stopPolling(): void {
    clearInterval(this.#poller);
    this.#poller = undefined;
  }

  /** Refuses new units of work and waits for those called before; the backend's `close()` calls it. */
  drain(): Promise<void> {
    return this.#units.drain();
  }

  /** Stops watching and closes the unit-of-work connection; the backend's `close()` calls it. */
  async close(): Promise<void> {
    this.#stopPolling();
    this.#watchers.clear();
    await this.#units.close();
  }
}
