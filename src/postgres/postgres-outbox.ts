import type { CustomTypesConfig, Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';
import { InvalidOptionsError, isFerryError } from '../errors/ferry-error.js';
import { storableText } from '../errors/storable-text.js';
import { EventStoreClosedError, StoreUnavailableError } from '../eventstore/errors.js';
import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import type { Logger } from '../logging/logger.js';
import {
  SagaConcurrencyError,
  UnitOfWorkOutcomeUnknownError,
  UnitOfWorkRolledBackError,
  UnitOfWorkUnsupportedError,
} from '../outbox/errors.js';
import { doomedBy } from '../outbox/guarded-transaction.js';
import { InFlight } from '../outbox/in-flight.js';
import type {
  OutboxBacklog,
  OutboxInsert,
  OutboxRow,
  OutboxStorage,
  SagaRow,
  SagaStatus,
  StorageAppendResult,
  StorageTransaction,
} from '../outbox/storage.js';
import { type CancelTarget, cancelStatement } from './cancel-statement.js';
import { isConnectionFailure } from './connection-failure.js';
import { duplicateMessageId } from './duplicate-message-id.js';
import { Notifier } from './notifier.js';
import { outboxStatements } from './postgres-outbox-sql.js';
import {
  markPreparedOutOfStep,
  mayDropPrepared,
  PREPARED_OUT_OF_STEP,
  prepareFerryStatementsAgain,
  takePreparedOutOfStep,
} from './prepared-statement.js';
import { storeQuery } from './store-query.js';

/** PostgreSQL's error for a statement cancelled (by a cancel request, or at `statement_timeout`). */
const QUERY_CANCELED = '57014';

/** How long a cancel request's connection is given to reach the server. */
const CANCEL_TIMEOUT_MS = 2000;

/** Why a connection is destroyed rather than pooled, once a cancel request was sent on its behalf. */
const CANCELLED_CONNECTION = new Error('a cancel request was sent for a statement of this connection');

/**
 * The session settings by which Ferry reads what PostgreSQL sends (times), back to the connection's
 * own (DateStyle ISO and TimeZone UTC, set when it opened).
 */
const RESET_SESSION_SETTINGS = 'RESET DateStyle; RESET TimeZone; RESET IntervalStyle';

/** The server ended the session because its transaction sat idle too long (`idle_in_transaction_session_timeout`). */
const endedIdle = (error: unknown): boolean => (error as { code?: unknown } | undefined)?.code === '25P03';

/** The text of a statement (a string or pg's query config) has a word that may end its transaction. */
function mayEndTransaction(statement: unknown): boolean {
  const text = typeof statement === 'string' ? statement : (statement as { text?: unknown } | null)?.text;
  return typeof text === 'string' && /\b(?:commit|end|prepare)\b/i.test(text);
}

/**
 * A statement of a unit of work whose connection failed, as `StoreUnavailableError`: the unit was not
 * committed, unless the statement was the caller's SQL that may have ended its transaction itself.
 */
function lostDuringUnit(error: unknown, statement: unknown): StoreUnavailableError {
  // pg refuses a statement on a connection already known lost without sending it.
  const sent = !/^Client has encountered a connection error/.test((error as Error).message ?? '');
  const mayHaveEnded = sent && mayEndTransaction(statement);
  return unitLost(
    error,
    mayHaveEnded ? 'under SQL of a unit of work that may have ended its transaction' : undefined,
  );
}

/**
 * The connection of a unit of work failed: the unit was not committed, or, when the failure came
 * `whileEnding` it (its COMMIT sent), whether it committed is unknown (`outcomeUnknown`).
 */
function unitLost(error: unknown, whileEnding?: string): StoreUnavailableError {
  const why = (error as Error).message;
  return new StoreUnavailableError(
    'postgres',
    whileEnding === undefined
      ? `the database connection failed during a unit of work, which was not committed (${why})`
      : `the database connection failed ${whileEnding}: whether it committed is unknown (${why})`,
    { cause: error, outcomeUnknown: whileEnding !== undefined },
  );
}

/** What the storage needs from the backend that owns it. */
export interface PostgresOutboxOptions {
  readonly schema: string;
  readonly url: string;
  /** The backend's pool; throws while the backend is not open. */
  readonly pool: () => Pool;
  /** Whether the backend is closing: units of work called from then on are refused. */
  readonly closing?: () => boolean;
  /** Whether the backend's pool is ending (closed): what would reach it is refused. */
  readonly ended?: () => boolean;
  readonly logger: Logger;
  /** Least time between two NOTIFYs announcing outbox rows to other processes. */
  readonly notifyIntervalMs: number;
  /** The backend's append inside the caller's transaction (checks and errors of `appendInTransaction`). */
  readonly append: (
    client: PoolClient,
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ) => Promise<StorageAppendResult>;
  /** The type parsers of the caller's SQL (`work.query`), once the backend is open. */
  readonly ownSqlTypes?: () => CustomTypesConfig | undefined;
  /** The backend's read of one stream, on the unit of work's client. */
  readonly readStream: (
    client: PoolClient,
    streamId: string,
    options: ReadStreamOptions,
  ) => Promise<RecordedEvent[]>;
  /** After a commit that appended events up to `position`: wakes the store's subscribers. */
  readonly appended: (position: bigint) => void;
  /**
   * The backend's group commit of an append and, when it writes, its outbox rows (the storage's
   * `appendWithMessages`); the backend calls {@link PostgresOutboxStorage.announce} after a commit
   * that enqueued.
   */
  readonly appendWithMessages: (
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ) => Promise<AppendResult>;
}

interface OutboxDbRow {
  seq: bigint;
  id: string;
  key: string;
  envelope: string;
  state: 'pending' | 'failed';
  attempts: number;
  created_at: bigint;
  due_at: bigint;
  last_error: string | null;
}

interface SagaDbRow {
  saga: string;
  id: string;
  state: string;
  version: number;
  status: SagaStatus;
  updated_at: bigint;
}

const toOutboxRow = (row: OutboxDbRow): OutboxRow => ({
  seq: BigInt(row.seq),
  id: row.id,
  key: row.key,
  envelope: row.envelope,
  state: row.state,
  attempts: row.attempts,
  createdAt: Number(row.created_at),
  dueAt: Number(row.due_at),
  lastError: row.last_error ?? undefined,
});

const toSagaRow = (row: SagaDbRow): SagaRow => ({
  saga: row.saga,
  id: row.id,
  state: row.state,
  version: row.version,
  status: row.status,
  updatedAt: Number(row.updated_at),
});

/** Times go into bigint columns: a fractional clock reading is taken down to its millisecond. */
const ms = (time: number): number => Math.floor(time);

/**
 * The outbox, transactional inbox marks and saga rows of a PostgreSQL event store, in its schema
 * (migration 5). Get it from `PostgresEventStoreBackend.outboxStorage()`. A unit of work is a pooled
 * client between BEGIN and COMMIT; keep it short: while it is open it holds back reads of the
 * global order (as any transaction that appends does) and the keys it enqueued (see `enqueue`).
 * Relays of several processes share the table: claims skip each other's locked rows, and a commit
 * that wrote outbox rows is announced to them by NOTIFY on `ferry_outbox_<schema>`.
 */
export class PostgresOutboxStorage implements OutboxStorage {
  readonly name = 'postgres';
  readonly #options: PostgresOutboxOptions;
  readonly #sql: ReturnType<typeof outboxStatements>;
  #notifier: Notifier | undefined;
  #closed = false;
  /** Units of work begun and not yet ended; what {@link whenIdle} waits for. */
  readonly #units = new InFlight();

  /** Use `PostgresEventStoreBackend.outboxStorage()`. */
  constructor(options: PostgresOutboxOptions) {
    this.#options = options;
    this.#sql = outboxStatements(`"${options.schema}"`);
  }

  get #pool(): Pool {
    // After close, pg would say "Cannot use a pool after calling end on the pool", with no code.
    if (this.#options.ended?.()) throw new EventStoreClosedError();
    return this.#options.pool();
  }

  /** A read of the relay's or an operator's: on a failed connection again, up to three attempts, then `STORE_UNAVAILABLE`. */
  #read<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values: readonly unknown[],
  ): Promise<QueryResult<R>> {
    return storeQuery<R>(this.#pool, this.#ended, text, values, { what: 'an outbox read', attempts: 3 });
  }

  /** A write outside units of work: on a failed connection `STORE_UNAVAILABLE` at once, its outcome unknown. */
  #write<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values: readonly unknown[],
  ): Promise<QueryResult<R>> {
    return storeQuery<R>(this.#pool, this.#ended, text, values, { what: 'an outbox statement' });
  }

  readonly #ended = (): boolean => this.#options.ended?.() ?? false;

  /** Resolves once no unit of work is running (the backend's close() waits for those called before it). */
  whenIdle(): Promise<void> {
    return this.#units.idle();
  }

  /** Wake-ups of relays, created with the first use (the pool exists only once the backend is open). */
  get #wakeUps(): Notifier {
    if (this.#closed) throw new InvalidOptionsError('the PostgreSQL backend is closed');
    this.#notifier ??= new Notifier({
      connectionString: this.#options.url,
      channel: `ferry_outbox_${this.#options.schema}`,
      pool: this.#pool,
      logger: this.#options.logger,
      intervalMs: this.#options.notifyIntervalMs,
    });
    return this.#notifier;
  }

  async transaction<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    if (this.#options.closing?.()) throw new EventStoreClosedError();
    return this.#units.run(() => this.#transaction(work));
  }

  async #transaction<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      if (this.#options.ended?.()) throw new EventStoreClosedError();
      throw new StoreUnavailableError(
        'postgres',
        `could not start a unit of work: ${(error as Error).message}`,
        { cause: error },
      );
    }
    let broken: Error | undefined;
    let committing = false;
    // The pool listens for errors of idle clients only: a connection lost while the work runs would
    // otherwise be an uncaught 'error' event. The statement running on it rejects as well.
    const lost = (error: Error) => {
      broken = error;
    };
    client.on('error', lost);
    const tx = new PostgresStorageTransaction(client, this.#sql, this.#options);
    try {
      await client.query('BEGIN');
      if (takePreparedOutOfStep(client))
        await prepareFerryStatementsAgain(client, (sql) => client.query(sql));
      let result: T;
      try {
        result = await work(tx);
      } catch (error) {
        // A statement the work started and did not wait for may be under way: it is cancelled (a
        // handler past its time limit held its transaction and locks until its lock wait or long
        // statement ended), then its answer is waited for. A COMMIT of the caller's SQL among them
        // (never cancelled) kept what came before, whatever the work threw.
        tx.abandon(CANCEL_TIMEOUT_MS);
        await tx.settled();
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          broken = rollbackError as Error;
        }
        throw tx.endedBySql ?? error;
      }
      tx.end();
      await tx.settled();
      if (tx.endedBySql !== undefined) throw tx.endedBySql;
      // Lost while the work ran between two statements (the server ended a transaction left idle
      // too long), or under a statement whose error the work caught: nothing was committed, and
      // that is known.
      broken ??= tx.connectionLost;
      if (broken !== undefined) throw broken;
      committing = true;
      const committed = await client.query('COMMIT');
      // PostgreSQL answers COMMIT of a transaction a failed statement aborted with ROLLBACK, no error:
      // `work` resolved after catching that statement's error, and nothing of it was kept.
      if (committed.command !== 'COMMIT') {
        throw new UnitOfWorkRolledBackError();
      }
      if (tx.lastPosition !== undefined) this.#options.appended(tx.lastPosition);
      if (tx.enqueued && !this.#closed) this.#wakeUps.notify();
      return result;
    } catch (error) {
      if (broken === undefined && isConnectionFailure(error)) broken = error as Error;
      broken ??= tx.connectionLost;
      if (isConnectionFailure(error)) {
        // The server ended the session while the transaction sat idle: the COMMIT, if sent, never ran.
        const unknown = committing && !endedIdle(error) && !endedIdle(broken);
        throw unitLost(error, unknown ? 'while a unit of work committed' : undefined);
      }
      throw error;
    } finally {
      client.off('error', lost);
      // A SET of the caller's SQL (not SET LOCAL) stays on the connection: the settings Ferry reads
      // times by go back to what the connection began with, before another unit or read gets it.
      if (broken === undefined && tx.mayHaveSet && !tx.cancelSent) {
        try {
          await client.query(RESET_SESSION_SETTINGS);
        } catch (error) {
          broken = error as Error;
        }
      }
      // A client whose connection failed (or whose ROLLBACK or reset did) is destroyed, not pooled.
      // So is one a cancel was sent for: nothing tells when the server acts on it (the statement may
      // have ended by itself meanwhile, and a proxy on the way may hold the request back), and on a
      // pooled connection it could cancel a statement of the next unit of work given it.
      client.release(broken ?? (tx.cancelSent ? CANCELLED_CONNECTION : undefined));
    }
  }

  /**
   * Joins the backend's group commit: concurrent calls (and `store.append` calls) share one statement
   * and one commit, each append's expected version checked on its own; the rows of an append are
   * inserted only if it writes, under the advisory locks of their explicit keys (as `enqueue`). A
   * commit that enqueued wakes the relays (NOTIFY).
   */
  appendWithMessages(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ): Promise<AppendResult> {
    return this.#options.appendWithMessages(streamId, events, expected, messages);
  }

  /** @internal The backend committed outbox rows outside a unit of work: wakes the relays. */
  announce(): void {
    if (!this.#closed) this.#wakeUps.notify();
  }

  async claim(owner: string, now: number, limit: number, leaseMs: number): Promise<OutboxRow[]> {
    const { rows } = await this.#write<OutboxDbRow>(this.#sql.claim, [owner, ms(now), limit, ms(leaseMs)]);
    return rows.map(toOutboxRow).sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  }

  async delivered(owner: string, seqs: readonly bigint[]): Promise<number> {
    if (seqs.length === 0) return 0;
    const result = await this.#write(this.#sql.delivered, [owner, seqs.map(String)]);
    return result.rowCount ?? 0;
  }

  async hold(owner: string, seqs: readonly bigint[], until: number): Promise<bigint[]> {
    if (seqs.length === 0) return [];
    const { rows } = await this.#write<{ seq: bigint }>(this.#sql.hold, [owner, seqs.map(String), ms(until)]);
    return rows.map((row) => BigInt(row.seq));
  }

  async retry(owner: string, seq: bigint, error: string, dueAt: number, counted: boolean): Promise<void> {
    await this.#write(this.#sql.retry, [owner, String(seq), storableText(error), ms(dueAt), counted ? 1 : 0]);
  }

  async fail(owner: string, seq: bigint, error: string): Promise<void> {
    await this.#write(this.#sql.fail, [owner, String(seq), storableText(error)]);
  }

  async failed(limit: number): Promise<OutboxRow[]> {
    const { rows } = await this.#read<OutboxDbRow>(this.#sql.failed, [limit]);
    return rows.map(toOutboxRow);
  }

  async redrive(ids: readonly string[], now: number): Promise<number> {
    if (ids.length === 0) return 0;
    const result = await this.#write(this.#sql.redrive, [ids, ms(now)]);
    const count = result.rowCount ?? 0;
    if (count > 0 && !this.#closed) this.#wakeUps.notify();
    return count;
  }

  async discard(ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0;
    const result = await this.#write(this.#sql.discard, [ids]);
    const count = result.rowCount ?? 0;
    // The key a failed row held may go on.
    if (count > 0 && !this.#closed) this.#wakeUps.notify();
    return count;
  }

  async backlog(now: number): Promise<OutboxBacklog> {
    const { rows } = await this.#read<{
      pending: number;
      held: number;
      failed: number;
      scheduled: number;
      oldest: number | null;
    }>(this.#sql.backlog, [ms(now)]);
    const row = rows[0]!;
    return {
      pending: row.pending,
      held: row.held,
      failed: row.failed,
      scheduled: row.scheduled,
      oldestWaitingSince: row.oldest ?? undefined,
    };
  }

  async nextDue(now: number): Promise<number | undefined> {
    const { rows } = await this.#read<{ due: number | null }>(this.#sql.nextDue, [ms(now)]);
    return rows[0]?.due ?? undefined;
  }

  async scheduled(now: number, limit: number, key?: string): Promise<OutboxRow[]> {
    const { rows } = await this.#read<OutboxDbRow>(this.#sql.scheduled, [ms(now), limit, key ?? null]);
    return rows.map(toOutboxRow);
  }

  async pruneHandled(before: number, limit: number): Promise<number> {
    const result = await this.#write(this.#sql.pruneHandled, [ms(before), limit]);
    return result.rowCount ?? 0;
  }

  async sagas(saga: string, limit: number, status?: SagaStatus): Promise<SagaRow[]> {
    const { rows } = await this.#read<SagaDbRow>(this.#sql.sagas, [saga, limit, status ?? null]);
    return rows.map(toSagaRow);
  }

  watch(listener: () => void): () => void {
    return this.#wakeUps.watch(listener);
  }

  /** Stops listening; the backend's `close()` calls it. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#notifier?.close();
  }
}

/** The handle of one unit of work: every call runs on its client, inside its transaction. */
class PostgresStorageTransaction implements StorageTransaction {
  readonly #client: PoolClient;
  /** The same, for the store's own statements. */
  readonly #internal: PoolClient;
  /** The statement under way: whether it may be cancelled (not the caller's SQL that may end the transaction). */
  #running: { readonly cancellable: boolean } | undefined;
  /** {@link abandon} asked the server to cancel it: its error (57014) is the unit's end, not a failure. */
  #cancelSent = false;
  /** The unit failed and rolls back ({@link abandon}): a statement answered since is refused. */
  #abandoned = false;
  /** The connection itself, under the proxies. */
  readonly #raw: PoolClient;
  /** The unit's statements, one at a time (see {@link #inTurn}). */
  #turn: Promise<unknown> = Promise.resolve();
  /** A statement of the unit failed: its transaction is aborted. */
  #failed: { readonly error: unknown } | undefined;
  readonly #sql: ReturnType<typeof outboxStatements>;
  readonly #options: PostgresOutboxOptions;
  #ended = false;
  /** Set once the caller's SQL ended the transaction: every later call rejects with it. */
  #endedBySql: UnitOfWorkOutcomeUnknownError | undefined;
  /** The last position appended, once the transaction appended events. */
  lastPosition: bigint | undefined;
  enqueued = false;
  /** The caller's SQL ran a SET (or could have: its code had the client): settings to reset. */
  mayHaveSet = false;
  /** The connection failed under one of the unit's statements (whether or not its caller caught it). */
  connectionLost: Error | undefined;

  constructor(client: PoolClient, sql: ReturnType<typeof outboxStatements>, options: PostgresOutboxOptions) {
    this.#sql = sql;
    this.#options = options;
    // Every statement is checked, not only each call: a call of several statements (an append looks
    // for its events, then inserts; an enqueue locks its keys, then inserts) that was under way when
    // its unit of work ended (its handler past its time limit: rolled back) sent the rest after the
    // ROLLBACK, in autocommit or in another unit's transaction on the pooled connection: a timed-out
    // saga step's messages went out while its state change did not.
    // And checked when its turn comes, not when it is called: calls started together, without
    // waiting for each other (`Promise.all([work.query('COMMIT'), work.publish(…)])`), were all
    // handed to the driver at once, and those queued behind a COMMIT of the caller's SQL ran after
    // it in autocommit (a message published from a unit that rejected). Statements go to the
    // driver one at a time, each once the one before has been answered and seen.
    this.#raw = client;
    // The store's own statements and the caller's (through `work.client`) go through two handles:
    // the caller's SQL may end the transaction (see `abandon`).
    const handle = (own: boolean) => {
      const query = (...args: unknown[]) => {
        const callbackOrSubmittable =
          typeof args[args.length - 1] === 'function' ||
          typeof (args[0] as { submit?: unknown } | null)?.submit === 'function';
        if (callbackOrSubmittable) {
          this.#assertUsable();
          return this.#send(args);
        }
        return this.#inTurn(() => this.#send(args) as Promise<unknown>, args[0], own);
      };
      return new Proxy(client, {
        get: (target, property) => {
          if (property === 'query') return query;
          const value: unknown = Reflect.get(target, property, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    };
    this.#client = handle(true);
    this.#internal = handle(false);
  }

  /** The unit's connection, every statement of which is refused once the unit of work has ended. */
  get client(): PoolClient {
    this.mayHaveSet = true;
    return this.#client;
  }

  /** The client goes back to the pool: a handle kept past its unit of work must not reach it. */
  end(): void {
    this.#ended = true;
  }

  /** Resolves once the statement under way, if any, was answered (those queued behind it are refused once ended). */
  settled(): Promise<void> {
    return this.#turn.then(() => {});
  }

  /**
   * The unit of work failed (its handler ran past its time limit, say) and rolls back: it ends, and a
   * statement of it still running (a lock wait, a long scan) is cancelled, so that the ROLLBACK
   * behind it, and the release of the unit's locks, come as soon as the server gets the request
   * rather than when the statement ends. The caller's SQL too, unless it has a word that may end the
   * transaction (COMMIT, END, PREPARE): that is left to finish, its answer saying what was kept. A
   * statement answered after this is refused (`UNIT_OF_WORK_UNSUPPORTED`), whatever its answer.
   */
  abandon(timeoutMs: number): void {
    this.#ended = true;
    this.#abandoned = true;
    if (this.#running === undefined || !this.#running.cancellable) return;
    this.#cancelSent = true;
    void cancelStatement(this.#raw as CancelTarget, timeoutMs);
  }

  /** {@link abandon} sent a cancel request for a statement of the unit. */
  get cancelSent(): boolean {
    return this.#cancelSent;
  }

  /** Set once the caller's SQL ended the transaction. */
  get endedBySql(): UnitOfWorkOutcomeUnknownError | undefined {
    return this.#endedBySql;
  }

  #send(args: unknown[]): unknown {
    return (this.#raw.query as unknown as (...a: unknown[]) => unknown).apply(this.#raw, args);
  }

  /**
   * Runs `statement` on the connection once every statement of the unit called before it has been
   * answered, checking then that the unit may still run one: not ended, not ended by its own SQL,
   * and no statement of it failed (the transaction is aborted: a call started beside the failed one
   * rejects as every later call does, rather than with PostgreSQL's 25P02).
   */
  #inTurn<T>(statement: () => Promise<T>, text: unknown, own: boolean): Promise<T> {
    const run = async () => {
      this.#assertUsable();
      if (this.#failed !== undefined) throw doomedBy(this.#failed.error);
      const running = { cancellable: !own || !mayEndTransaction(text) };
      this.#running = running;
      let answer: T;
      try {
        answer = await statement();
      } catch (error) {
        // The caller's SQL may have dropped some before it failed (DEALLOCATE is not rolled back).
        if (own && mayDropPrepared(text)) markPreparedOutOfStep(this.#raw);
        throw error;
      } finally {
        if (this.#running === running) this.#running = undefined;
      }
      // The caller's SQL may have dropped statements the store keeps prepared: all of them are
      // dropped and prepared again at their next use (one round trip, only after such SQL).
      if (own && mayDropPrepared(text)) await this.#prepareAgain();
      // Answered after the unit failed (the cancel came too late, or the statement was the caller's
      // not cancelled): rolled back, whatever the answer says, unless that SQL ended the transaction.
      if (this.#abandoned && this.#endedBySql === undefined) {
        throw new UnitOfWorkUnsupportedError(
          'the unit of work failed while this statement ran: nothing of it is kept',
        );
      }
      return answer;
    };
    const result = this.#turn.then(run, run).catch((error: unknown) => {
      if (this.#cancelSent && (error as { code?: unknown } | null)?.code === QUERY_CANCELED) {
        throw new UnitOfWorkUnsupportedError(
          'the unit of work has ended: its statement under way was cancelled',
          { cause: error },
        );
      }
      if (isConnectionFailure(error)) {
        this.connectionLost ??= error as Error;
        throw lostDuringUnit(error, text);
      }
      // The server's prepared statements and pg's record disagree: set right at the next unit of work.
      if (PREPARED_OUT_OF_STEP.has(String((error as { code?: unknown } | null)?.code)))
        markPreparedOutOfStep(this.#raw);
      if (this.#failed === undefined && !isFerryError(error)) this.#failed = { error };
      throw error;
    });
    this.#turn = result.then(
      () => {},
      () => {},
    );
    return result;
  }

  #open(): PoolClient {
    this.#assertUsable();
    return this.#internal;
  }

  /** Drops the connection's `ferry-` statements, prepared again at their next use; if that fails, at the next unit. */
  async #prepareAgain(): Promise<void> {
    await prepareFerryStatementsAgain(this.#raw, (sql) => this.#send([sql]) as Promise<unknown>).catch(
      () => {},
    );
  }

  #assertUsable(): void {
    if (this.#ended) {
      throw new UnitOfWorkUnsupportedError('the unit of work has ended: its handle can no longer be used');
    }
    if (this.#endedBySql !== undefined) throw this.#endedBySql;
  }
  readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    return this.#options.readStream(this.#open(), streamId, options);
  }

  async append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<StorageAppendResult> {
    const result = await this.#options.append(this.#open(), streamId, events, expected);
    if (this.lastPosition === undefined || result.position > this.lastPosition)
      this.lastPosition = result.position;
    return result;
  }

  /**
   * The caller's SQL. What the server answers tells whether it ended the unit's transaction: the
   * tag of each statement (COMMIT: `COMMIT`, `END`, `COMMIT AND CHAIN`; ROLLBACK: `ROLLBACK`, `ABORT`,
   * `ROLLBACK AND CHAIN`, and `ROLLBACK TO SAVEPOINT`, which does not end it) and the transaction
   * status after the last (idle). One that did fails the unit of work with
   * `UnitOfWorkOutcomeUnknownError`, and nothing more of it runs, in autocommit or in a transaction
   * the SQL began.
   */
  async query(sql: string, params: readonly unknown[] = []): Promise<Record<string, unknown>[]> {
    this.#assertUsable();
    const types = this.#options.ownSqlTypes?.();
    // Watched only while its turn lasts: the answers to statements queued before it are theirs.
    const turn = async () => {
      const connection = this.#raw.connection;
      let status: string | undefined;
      const tags: string[] = [];
      const ready = (message: { status?: string }) => {
        status = message.status;
      };
      const complete = (message: { text?: string }) => {
        if (message.text !== undefined) tags.push(message.text);
      };
      const ended = () => {
        const commits = tags.filter((t) => t === 'COMMIT' || t === 'PREPARE TRANSACTION').length;
        const rollbacks = tags.filter((t) => t === 'ROLLBACK').length;
        const toSavepoint = sql.match(/\brollback\s+(?:work\s+|transaction\s+)?to\b/gi)?.length ?? 0;
        return status === 'I' || commits > 0 || rollbacks > toSavepoint;
      };
      // Decided before the answer is handed on, so that the statement queued next sees it.
      const endedBySql = (cause?: unknown) => {
        this.#endedBySql = new UnitOfWorkOutcomeUnknownError(cause, 'own-sql');
        return this.#endedBySql;
      };
      connection.on('readyForQuery', ready);
      connection.on('commandComplete', complete);
      try {
        let rows: Record<string, unknown>[] | undefined;
        try {
          ({ rows } = await this.#raw.query(
            types === undefined
              ? { text: sql, values: params as unknown[] }
              : { text: sql, values: params as unknown[], types },
          ));
        } catch (error) {
          // `COMMIT; SELECT 1/0`: the COMMIT kept what came before, whatever failed after it.
          if (ended()) throw endedBySql(error);
          throw error;
        }
        if (ended()) throw endedBySql();
        return rows ?? [];
      } finally {
        if (tags.some((t) => t === 'SET' || t === 'RESET')) this.mayHaveSet = true;
        connection.off('readyForQuery', ready);
        connection.off('commandComplete', complete);
      }
    };
    return this.#inTurn(turn, sql, true);
  }

  /**
   * Rows of an explicit key (one that is not the message id) take a transaction-level advisory lock
   * on (schema, key) before they get their seq. A seq is drawn at insert, but transactions commit in
   * any order: two units of work enqueueing the same key could commit against their seq order, and a
   * relay that saw only the later commit would publish the key's second message first (the earlier
   * row, not yet visible, cannot hold it back). Under the lock, the second transaction draws its seq
   * only after the first has ended, so per key seq order is commit order; the lock is held until
   * COMMIT, so keep such units of work short. A row keyed by its own id (the default) is alone in
   * its key: no lock, no waiting.
   */
  async enqueue(messages: readonly OutboxInsert[]): Promise<void> {
    const client = this.#open();
    if (messages.length === 0) return;
    const keys = [...new Set(messages.filter((m) => m.key !== m.id).map((m) => m.key))];
    if (keys.length > 0)
      await client.query({ ...this.#sql.lockKeys, values: [`ferry-outbox:${this.#options.schema}:`, keys] });
    try {
      await client.query({
        ...this.#sql.enqueue,
        values: [
          messages.map((m) => m.id),
          messages.map((m) => m.key),
          messages.map((m) => m.envelope),
          messages.map((m) => ms(m.createdAt)),
          messages.map((m) => ms(m.dueAt)),
        ],
      });
    } catch (error) {
      throw duplicateMessageId(error, messages) ?? error;
    }
    this.enqueued = true;
  }

  async cancel(ids: readonly string[], now: number): Promise<string[]> {
    const client = this.#open();
    if (ids.length === 0) return [];
    const { rows } = await client.query<{ id: string }>({ ...this.#sql.cancel, values: [ids, ms(now)] });
    const deleted = new Set(rows.map((r) => r.id));
    return [...new Set(ids)].filter((id) => deleted.has(id));
  }

  /** Transaction-level advisory locks on (schema, key), taken in key order: released at COMMIT or ROLLBACK. */
  async lock(keys: readonly string[]): Promise<void> {
    const client = this.#open();
    if (keys.length === 0) return;
    await client.query({ ...this.#sql.lockKeys, values: [`ferry-lock:${this.#options.schema}:`, keys] });
  }

  async markHandled(consumer: string, messageId: string, now: number): Promise<boolean> {
    // ON CONFLICT waits for a concurrent transaction inserting the same mark, then does nothing
    // if it committed: exactly one of them gets true.
    const result = await this.#open().query({
      ...this.#sql.markHandled,
      values: [consumer, messageId, ms(now)],
    });
    return result.rowCount === 1;
  }

  async loadSaga(saga: string, id: string): Promise<SagaRow | undefined> {
    const { rows } = await this.#open().query<SagaDbRow>({ ...this.#sql.loadSaga, values: [saga, id] });
    return rows[0] === undefined ? undefined : toSagaRow(rows[0]);
  }

  async saveSaga(row: SagaRow, expectedVersion: number): Promise<void> {
    const client = this.#open();
    const values = [row.saga, row.id, row.state, row.version, row.status, ms(row.updatedAt)];
    // Neither statement raises on a conflict, so the transaction stays usable after the error.
    const result =
      expectedVersion === 0
        ? await client.query({ ...this.#sql.insertSaga, values })
        : await client.query({ ...this.#sql.updateSaga, values: [...values, expectedVersion] });
    if (result.rowCount !== 1) throw new SagaConcurrencyError(row.saga, row.id, expectedVersion);
  }
}
