import type { CustomTypesConfig, Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { definedOptions } from '../errors/options-object.js';
import type {
  EventStoreBackend,
  HorizonOptions,
  ParkedEvent,
  ReadAfterResult,
  Snapshot,
} from '../eventstore/backend.js';
import {
  ConcurrencyError,
  DuplicateEventIdError,
  EventStoreClosedError,
  StoreUnavailableError,
} from '../eventstore/errors.js';
import {
  describeTransaction,
  isReadHeldBackError,
  type OpenTransaction,
  ReadHeldBackError,
} from '../eventstore/held-back.js';
import {
  MAX_TRANSACTION_EVENTS,
  prepareAppend,
  tooManyTransactionEvents,
} from '../eventstore/prepare-append.js';
import type {
  AppendResult,
  EventData,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import type { DurableIdempotencyStoreOptions } from '../http/server/durable-idempotency.js';
import type { Inbox } from '../inbox/inbox.js';
import type { DurableInboxOptions } from '../inbox/lease.js';
import { type Logger, stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import type { OutboxCapable, OutboxInsert, StorageAppendResult } from '../outbox/storage.js';
import { endOfTurn } from '../time/end-of-turn.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { redactUrl } from '../url/redact-url.js';
import {
  batchAppendStatement,
  batchOutboxParameters,
  batchOutboxStatement,
  batchParameters,
  exactVersion,
  type QueuedAppend,
} from './batch-append.js';
import { isConnectionFailure, unavailableIfConnectionFailed } from './connection-failure.js';
import { duplicateMessageId } from './duplicate-message-id.js';
import { localTimeParser } from './local-time-text.js';
import { migrate } from './migrations.js';
import { Notifier } from './notifier.js';
import { typedPoolWait } from './pool-wait.js';
import { PostgresIdempotencyStore } from './postgres-idempotency-store.js';
import { PostgresInbox } from './postgres-inbox.js';
import { PostgresOutboxStorage } from './postgres-outbox.js';
import { type PreparedStatement, preparedStatement } from './prepared-statement.js';
import { storeQuery } from './store-query.js';

/** How long a statement waits for a free connection of the pool before STORE_UNAVAILABLE. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Options of the PostgreSQL event store backend. */
export interface PostgresBackendOptions {
  /** `postgres://user:password@host:5432/database`; keep credentials in the environment. */
  readonly url: string;
  /** Schema holding the store's tables, created and migrated on open. @default 'ferry' */
  readonly schema?: string;
  /** Connections in the pool. @default 10 */
  readonly poolSize?: number;
  /**
   * Least time between two NOTIFYs that wake subscribers in other processes while appends keep
   * coming: each NOTIFY is a small transaction of its own. The first append after a pause is
   * announced at once. From 0 to 2147483647 (a timer's range). @default 2
   */
  readonly notifyIntervalMs?: number;
  /**
   * Longest wait for transactions open elsewhere in the cluster when finding the end of the global
   * order (a subscription `from: 'end'`, the end of a read): the end is fixed once every transaction
   * open at the call has ended, so that nothing committed before is replayed and nothing committed
   * after is missed. Past it, `horizon()` rejects with `ReadHeldBackError` (`READ_HELD_BACK`) naming
   * the transaction. @default 5000
   */
  readonly horizonWaitMs?: number;
  /**
   * A transaction open longer than this that holds reads in global order back is logged as a
   * warning (its pid, application and age), again every minute while it lasts. @default 10000
   */
  readonly longTransactionWarnMs?: number;
  /**
   * Longest a statement of the store's connections may run, waiting for a lock included (a row
   * another transaction is writing, `work.lock`), before PostgreSQL cancels it: the call rejects with
   * its error (code `57014`, query_canceled) and a unit of work rolls back, instead of waiting without
   * end behind a stuck transaction. The same limit ends a transaction of the store's left idle
   * between two statements for that long (`idle_in_transaction_session_timeout`: a unit of work whose
   * process stopped, or that awaits something slow), releasing its locks; it rejects with
   * `STORE_UNAVAILABLE`, not committed. Migrations at open have no limit. `0` for none. @default 30000
   */
  readonly statementTimeoutMs?: number;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

export const DEFAULT_POSTGRES_BACKEND_OPTIONS = Object.freeze({
  schema: 'ferry',
  poolSize: 10,
  notifyIntervalMs: 2,
  horizonWaitMs: 5000,
  longTransactionWarnMs: 10_000,
  statementTimeoutMs: 30_000,
});

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,40}$/;
/** PostgreSQL's largest `statement_timeout`, in ms. */
const MAX_TIMEOUT_MS = 2_147_483_647;
/**
 * How long `readAfter` waits, at most, for this process's own last append to become final
 * (read-your-writes); never longer than `horizonWaitMs`, the wait of a read for the same transactions.
 */
const OWN_WRITES_WAIT_MS = 5000;
/**
 * After `horizon()` gave up waiting, how long a new call goes on waiting for the same end (a
 * subscription retrying), rather than take a new one. A subscription retries within 5 s.
 */
const PENDING_END_REUSE_MS = 10_000;
/** Least time between two warnings about the same long transaction. */
const LONG_TRANSACTION_REPEAT_MS = 60_000;
/** Attempts of a statement outside appends (each safe to run twice) whose connection fails. */
const STATEMENT_ATTEMPTS = 3;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/**
 * How often an `any` append goes again after another writer took the version it was about to use.
 * Each loss means another append made progress, so a hot stream is not stuck, but one append may
 * keep losing to many writers (two processes, hundreds of appends): from the third loss on it pauses
 * a jittered moment, up to 20 ms, so that the others get out of its way.
 */
const MAX_ANY_RACES = 1000;

/** Whether an append that lost the race for a version goes again: `any` ones do, after their pause. */
async function goesAgainAfterLostRace(
  expected: ExpectedVersion,
  constraint: string | undefined,
  losses: number,
): Promise<boolean> {
  if (expected !== 'any' || constraint !== 'events_stream_version' || losses >= MAX_ANY_RACES) return false;
  if (losses >= 3) await sleep(Math.random() * Math.min(20, 2 * losses));
  return true;
}
interface EventRow extends QueryResultRow {
  position: bigint;
  stream_id: string;
  version: number;
  id: string;
  type: string;
  data: unknown;
  metadata: Record<string, unknown>;
  time: string;
}

// The version as float8: exact below 2^53 and parsed straight into a number.
const EVENT_COLUMNS = 'position, stream_id, version::float8 AS version, id, type, data, metadata, time';
// The same columns from the events table joined as `e`, so that a parked event has the live one's types.
const PARKED_EVENT_COLUMNS = EVENT_COLUMNS.split(', ')
  .map((column) => `e.${column}`)
  .join(', ');
const INT8_OID = 20;
const TIMESTAMPTZ_OID = 1184;
const TIMESTAMPTZ_ARRAY_OID = 1185;

/**
 * PostgreSQL's `timestamptz` text (DateStyle ISO, which every pooled connection sets) as an RFC 3339
 * time in UTC, never throwing: `2026-11-30 10:12:13.123456+00` to `2026-11-30T10:12:13.123Z` with
 * `digits` 3 (milliseconds, as the other stores give event times), or to `…13.123456Z` with 6 (all
 * PostgreSQL keeps: the service's own SQL); at least three fraction digits either way. Any offset
 * (a session time zone the caller's SQL set, an offset with seconds of a historical zone) is taken
 * off; `infinity` and `-infinity` as PostgreSQL writes them; a BC date or a year past 9999 with ISO
 * 8601's expanded year (`-000043-03-15T…`, year 0 being 1 BC). Text in another DateStyle (which a
 * caller's `SET DateStyle` would give) is returned as it is, never read as another date.
 */
export function utcTextToIso(text: string, digits: 3 | 6 = 3): string {
  const utc = UTC_TEXT.exec(text);
  if (utc !== null) return `${utc[1]}T${utc[2]}.${(utc[3] ?? '').padEnd(3, '0').slice(0, digits)}Z`;
  if (text === 'infinity' || text === '-infinity') return text;
  const m = ISO_TEXT.exec(text);
  if (m === null) return text;
  const [, y, mo, d, h, mi, sec, fraction, sign, oh, om, os, bc] = m;
  const digitsOf = (fraction ?? '').padEnd(3, '0').slice(0, digits);
  if (Number(oh) + Number(om ?? 0) + Number(os ?? 0) === 0) {
    // UTC: as written, whatever the year (Date holds only ±275,759).
    const year = bc === undefined ? Number(y) : 1 - Number(y);
    const isoYear =
      year >= 0 && year <= 9999
        ? String(year).padStart(4, '0')
        : `${year < 0 ? '-' : '+'}${String(Math.abs(year)).padStart(6, '0')}`;
    return `${isoYear}-${mo}-${d}T${h}:${mi}:${sec}.${digitsOf}Z`;
  }
  const date = new Date(0);
  date.setUTCFullYear(bc === undefined ? Number(y) : 1 - Number(y), Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(sec), 0);
  const offsetMs = (Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0)) * 1000;
  const ms = date.getTime() - (sign === '-' ? -offsetMs : offsetMs);
  // Past the years Date holds (±275,759): as it is.
  if (Number.isNaN(ms)) return text;
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, -4)}${digitsOf}Z`;
}

/** The common case, read without a Date: UTC, a four-digit year of our era. */
const UTC_TEXT = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00$/;
/** DateStyle ISO output of a timestamptz: any year, any offset (hours, minutes, seconds), BC. */
const ISO_TEXT =
  /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?( BC)?$/;

/** {@link utcTextToIso} with every digit PostgreSQL keeps, for the service's own SQL. */
const utcTextToIsoMicros = (text: string): string => utcTextToIso(text, 6);

/**
 * A PostgreSQL array's text, its non-null items read by `item`, with pg's own array parser: pg-types
 * 2 exposes it as `{ create(source, transform).parse() }`, its type declarations as a function.
 */
function parseArray(
  types: { readonly arrayParser: unknown },
  source: string,
  item: (text: string) => unknown,
): unknown[] {
  const transform = (entry: string | null) => (entry === null ? null : item(entry));
  const parser = types.arrayParser as
    | ((source: string, transform: (entry: string | null) => unknown) => unknown[])
    | { create(source: string, transform: (entry: string | null) => unknown): { parse(): unknown[] } };
  return typeof parser === 'function' ? parser(source, transform) : parser.create(source, transform).parse();
}

function toEvent(row: EventRow): RecordedEvent {
  return {
    streamId: row.stream_id,
    version: row.version,
    position: row.position,
    id: row.id,
    type: row.type,
    data: row.data,
    metadata: row.metadata,
    time: row.time,
  };
}

/** Something that runs queries: the pool, or a client inside the caller's transaction. */
type Queryable = Pick<Pool, 'query'> | Pick<PoolClient, 'query'>;

/**
 * A `?port=` in the URL (pg reads it over the authority's port) that is not a port: pg's socket
 * threw at the first connection and the open never settled.
 */
function checkPortParameter(url: string): void {
  let port: string | null;
  try {
    port = new URL(url).searchParams.get('port');
  } catch {
    return; // pg says what is wrong with a URL it cannot read.
  }
  if (port !== null && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535)) {
    throw new InvalidOptionsError(`the port of the PostgreSQL URL ${redactUrl(url)} must be from 1 to 65535`);
  }
}

/**
 * The PostgreSQL backend. One statement per append: the expected version is checked and the events
 * inserted atomically, the unique (stream, version) key turning a lost race into `ConcurrencyError`.
 * Readers of the global order see only final positions (below the oldest running transaction), and
 * wake up through LISTEN/NOTIFY.
 */
export class PostgresEventStoreBackend implements EventStoreBackend, OutboxCapable {
  readonly name = 'postgres';
  readonly schema: string;
  readonly #url: string;
  readonly #poolSize: number;
  readonly #notifyIntervalMs: number;
  readonly #logger: Logger;
  readonly #horizonWaitMs: number;
  readonly #longTransactionWarnMs: number;
  readonly #statementTimeoutMs: number;
  readonly #sql: ReturnType<typeof statements>;
  readonly #valuesStatements = new Map<number, Statement>();
  #pool: Pool | undefined;
  /** The type parsers of `work.query` (see {@link open}). */
  #ownSqlTypes: CustomTypesConfig | undefined;
  #notifier: Notifier | undefined;
  #outbox: PostgresOutboxStorage | undefined;
  #lastAppended = 0n;
  /** Appends waiting for a batch, in call order. */
  #queue: QueuedAppend[] = [];
  #batchesInFlight = 0;
  /** Streams with an append being committed, and how many. */
  readonly #streamsInFlight = new Map<string, number>();
  #batchCommits = 0;
  /** The end being fixed by `horizon()`: its position and the transactions still to end before it is final. */
  #pendingEnd: { readonly end: bigint; open: string[]; retryUntil: number } | undefined;
  /** When to look again for a long transaction holding reads back. */
  #nextHeldCheck = 0;
  #closed = false;
  /** Set once close() began (after the turn it was called in): new appends are refused. */
  #closing = false;
  /** Set once the pool is ending: what reaches it then is refused with `EventStoreClosedError`. */
  #ended = false;
  /** close() waiting for the appends called before it to settle. */
  #idleWaiters: (() => void)[] = [];

  constructor(options: PostgresBackendOptions) {
    const o = { ...DEFAULT_POSTGRES_BACKEND_OPTIONS, ...definedOptions(options), url: options.url };
    if (typeof o.schema !== 'string' || !SCHEMA_NAME.test(o.schema)) {
      throw new InvalidOptionsError(
        'schema must be 1-41 lower-case letters, digits or "_", not starting with a digit',
      );
    }
    if (!Number.isInteger(o.poolSize) || o.poolSize < 2)
      throw new InvalidOptionsError('poolSize must be at least 2');
    this.schema = o.schema;
    checkPortParameter(o.url);
    this.#url = o.url;
    this.#poolSize = o.poolSize;
    // A timer's range: past it Node fires at once (1 ms), the opposite of the interval asked for.
    if (
      !(
        typeof o.notifyIntervalMs === 'number' &&
        o.notifyIntervalMs >= 0 &&
        o.notifyIntervalMs <= MAX_TIMER_MS
      )
    )
      throw new InvalidOptionsError(
        `notifyIntervalMs must be a number from 0 to ${MAX_TIMER_MS}, not ${describeValue(o.notifyIntervalMs)}`,
      );
    this.#notifyIntervalMs = o.notifyIntervalMs;
    if (!(typeof o.horizonWaitMs === 'number' && o.horizonWaitMs >= 0))
      throw new InvalidOptionsError('horizonWaitMs must be 0 or more');
    this.#horizonWaitMs = o.horizonWaitMs;
    if (!(typeof o.longTransactionWarnMs === 'number' && o.longTransactionWarnMs > 0))
      throw new InvalidOptionsError('longTransactionWarnMs must be more than 0');
    this.#longTransactionWarnMs = o.longTransactionWarnMs;
    if (
      !Number.isSafeInteger(o.statementTimeoutMs) ||
      o.statementTimeoutMs < 0 ||
      o.statementTimeoutMs > MAX_TIMEOUT_MS
    )
      throw new InvalidOptionsError('statementTimeoutMs must be an integer from 0 (no limit) to 2147483647');
    this.#statementTimeoutMs = o.statementTimeoutMs;
    this.#logger = loggerOption('the PostgreSQL store', o.logger) ?? stderrLogger;
    this.#sql = statements(`"${o.schema}"`);
  }

  get #db(): Pool {
    if (this.#pool === undefined) throw new InvalidOptionsError('the PostgreSQL backend is not open');
    return this.#pool;
  }

  async open(): Promise<void> {
    if (this.#pool !== undefined) return;
    const pg = (await import('pg')).default;
    const poolTypes = {
      getTypeParser: ((oid: number, format?: string) =>
        oid === INT8_OID
          ? (value: string) => BigInt(value)
          : oid === TIMESTAMPTZ_OID
            ? (value: string) => utcTextToIso(value)
            : oid === TIMESTAMPTZ_ARRAY_OID
              ? (value: string) => parseArray(pg.types, value, (item) => utcTextToIso(item))
              : (localTimeParser(
                  oid,
                  (type) => pg.types.getTypeParser(type, 'text'),
                  (value, item) => parseArray(pg.types, value, item),
                ) ?? pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
    };
    // The service's own SQL (`work.query`) gets int8 as the application's pg gives it (a string
    // unless it set a parser of its own), as the README says: a bigint there would make a row
    // (a `count(*)`) that JSON cannot carry. Ferry's own queries keep bigint positions.
    this.#ownSqlTypes = {
      getTypeParser: ((oid: number, format?: string) =>
        oid === INT8_OID
          ? pg.types.getTypeParser(oid, format as 'text')
          : oid === TIMESTAMPTZ_OID
            ? utcTextToIsoMicros
            : oid === TIMESTAMPTZ_ARRAY_OID
              ? (value: string) => parseArray(pg.types, value, utcTextToIsoMicros)
              : poolTypes.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
    };
    const pool = new pg.Pool({
      connectionString: this.#url,
      max: this.#poolSize,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      application_name: 'ferry',
      // Times come back in UTC, so the text form converts to RFC 3339 without a Date. A transaction
      // left idle as long as a statement may run (its process stopped, or stuck between two
      // statements) is ended by the server, so that its locks and its hold on the global order do not
      // outlive it. Set at connection, so that 0 means no limit whatever the database or role sets
      // (and RESET goes back to them).
      options: `-c TimeZone=UTC -c DateStyle=ISO -c statement_timeout=${this.#statementTimeoutMs} -c idle_in_transaction_session_timeout=${this.#statementTimeoutMs}`,
      // For this pool only (the application's global type parsers stay untouched): int8 as bigint,
      // timestamptz as an ISO string, avoiding a Date per row.
      types: poolTypes,
    });
    pool.on('error', (error) =>
      this.#logger.warn('an idle PostgreSQL connection failed', { error: error.message }),
    );
    // The pool listens for the errors of its idle clients only. A connection that fails while
    // checked out, or just as the pool hands it over (pg reads a FATAL message in the same chunk as
    // the ReadyForQuery that completed the hand-over, before its user could listen), would raise an
    // 'error' event nobody listens for, and end the process. Every client listens for its whole
    // life: a statement running on it rejects, the next one fails, and the pool drops it on release.
    pool.on('connect', (client) => client.on('error', ignoreClientError));
    typedPoolWait(pool, this.#poolSize, CONNECT_TIMEOUT_MS);
    try {
      await migrate(pool, this.schema);
    } catch (error) {
      await pool.end().catch(() => {});
      // Typed, so that createEventStore passes it on as it is instead of saying where a second time.
      throw new StoreUnavailableError(
        'postgres',
        `could not open the postgres event store at ${redactUrl(this.#url)}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.#pool = pool;
    this.#notifier = new Notifier({
      connectionString: this.#url,
      channel: `ferry_events_${this.schema}`,
      pool,
      logger: this.#logger,
      intervalMs: this.#notifyIntervalMs,
    });
  }

  /**
   * Group commit: an append goes at once when fewer than {@link MAX_BATCHES_IN_FLIGHT} are being
   * committed; the appends called meanwhile wait and go together, as one statement and one commit.
   */
  append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    return this.#enqueue(streamId, events, expected, []);
  }

  /**
   * An append that also inserts `messages` into the outbox when it writes, in the same commit, through
   * the same group commit as {@link append} (`outboxStorage().appendWithMessages`).
   */
  #enqueue(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ): Promise<AppendResult> {
    return new Promise<AppendResult>((resolve, reject) => {
      if (this.#closing) {
        reject(new EventStoreClosedError());
        return;
      }
      const append: QueuedAppend =
        messages.length > 0
          ? { streamId, events, expected, messages, resolve, reject }
          : { streamId, events, expected, resolve, reject };
      if (
        this.#queue.length === 0 &&
        this.#batchesInFlight < MAX_BATCHES_IN_FLIGHT &&
        !this.#streamsInFlight.has(streamId)
      ) {
        this.#commit([append]);
      } else {
        this.#queue.push(append);
      }
    });
  }

  /**
   * Commits `batch`, settles its appends, then the `doomed` ones (see {@link #drain}), then starts
   * what queued meanwhile.
   */
  #commit(batch: readonly QueuedAppend[], doomed: readonly QueuedAppend[] = []): void {
    this.#batchesInFlight++;
    const streams = [...batch, ...doomed].map((a) => a.streamId);
    for (const stream of streams)
      this.#streamsInFlight.set(stream, (this.#streamsInFlight.get(stream) ?? 0) + 1);
    const done = batch.length === 1 ? this.#appendAlone(batch[0]!) : this.#appendBatch(batch);
    void done
      .then(() => Promise.all(doomed.map((a) => this.#settleRefused(this.#db, a))))
      .finally(() => {
        this.#batchesInFlight--;
        for (const stream of streams) {
          const left = this.#streamsInFlight.get(stream)! - 1;
          if (left === 0) this.#streamsInFlight.delete(stream);
          else this.#streamsInFlight.set(stream, left);
        }
        this.#drain();
        if (this.#queue.length === 0 && this.#batchesInFlight === 0) {
          for (const wake of this.#idleWaiters.splice(0)) wake();
        }
      });
  }

  /**
   * Starts batches from the queue while there is room: in call order, up to {@link MAX_BATCH_APPENDS}
   * appends of distinct streams none of whose appends is being committed; a long append goes alone.
   * A later append to a stream of the batch waits for the next batch, so that a stream's appends
   * apply in call order, unless its expected version is the same exact one (or `no_stream`) as the
   * batch's append to that stream: whether that one passes or not, the later one cannot, so it is
   * settled right after the batch instead of queueing behind it (writers racing on one stream).
   */
  #drain(): void {
    while (this.#queue.length > 0 && this.#batchesInFlight < MAX_BATCHES_IN_FLIGHT) {
      const batch: QueuedAppend[] = [];
      const doomed: QueuedAppend[] = [];
      /** The exact version each stream of the batch expects (-1 for `no_stream`), else null. */
      const members = new Map<string, number | null>();
      /** Streams with an append left in the queue: everything after it to that stream stays too. */
      const blocked = new Set<string>();
      const rest: QueuedAppend[] = [];
      for (const a of this.#queue) {
        const member = members.get(a.streamId);
        if (member !== undefined && !blocked.has(a.streamId)) {
          if (member !== null && exactVersion(a.expected) === member) {
            doomed.push(a);
            continue;
          }
        } else if (
          member === undefined &&
          !blocked.has(a.streamId) &&
          batch.length < MAX_BATCH_APPENDS &&
          !this.#streamsInFlight.has(a.streamId) &&
          (batch.length === 0 || (!isLong(a) && !isLong(batch[0]!)))
        ) {
          batch.push(a);
          members.set(a.streamId, exactVersion(a.expected));
          continue;
        }
        rest.push(a);
        blocked.add(a.streamId);
      }
      if (batch.length === 0) return;
      this.#queue = rest;
      this.#commit(batch, doomed);
    }
  }

  /** An append on its own: one statement, its own transaction, retried when the connection broke. */
  async #appendAlone(append: QueuedAppend): Promise<void> {
    try {
      append.resolve(
        append.messages === undefined
          ? await this.#appendRetrying(append.streamId, append.events, append.expected)
          : await this.#appendWithMessagesRetrying(append),
      );
    } catch (error) {
      append.reject(unavailableIfConnectionFailed(error, 'on every attempt of an append', true));
    }
  }

  /**
   * An append with outbox rows on its own: the batch statement with one append (events, key locks and
   * rows in one statement), retried when the connection broke. A retry of an append that did commit
   * finds its ids stored and resolves their result, enqueueing nothing again.
   */
  async #appendWithMessagesRetrying(append: QueuedAppend): Promise<AppendResult> {
    const { streamId, events, expected } = append;
    const ids = events.map((e) => e.id);
    let broken = 0;
    let raced = 0;
    for (;;) {
      let rows: { position: bigint; version: bigint; enqueued: number }[];
      try {
        ({ rows } = await this.#db.query<{ position: bigint; version: bigint; enqueued: number }>({
          name: this.#sql.appendBatchOutbox.name,
          text: this.#sql.appendBatchOutbox.text,
          values: batchOutboxParameters([append], this.#lockPrefix),
        }));
      } catch (error) {
        if (isConnectionFailure(error) && ++broken < 3) {
          await sleep(100 * broken);
          continue;
        }
        const duplicate = duplicateMessageId(error, append.messages ?? []);
        if (duplicate !== undefined) {
          // A retry after a lost connection of an append that did commit finds its rows too.
          const settled = await this.#resolveConflict(this.#db, streamId, ids, expected);
          if (settled !== undefined) return settled;
          throw duplicate;
        }
        const { code, constraint } = error as { code?: string; constraint?: string };
        if (code !== '23505' || !constraint?.startsWith('events_')) throw error;
        // Its ids were stored already (a retry with `any`), or another writer won the version.
        const settled = await this.#resolveConflict(this.#db, streamId, ids, expected);
        if (settled !== undefined) return settled;
        if (await goesAgainAfterLostRace(expected, constraint, ++raced)) continue;
        throw new ConcurrencyError(streamId, expected, await this.#currentVersion(this.#db, streamId));
      }
      if (rows.length === 0) {
        const settled = await this.#resolveConflict(this.#db, streamId, ids, expected);
        if (settled !== undefined) return settled;
        throw new ConcurrencyError(streamId, expected, await this.#currentVersion(this.#db, streamId));
      }
      let last = rows[0]!;
      for (const row of rows) if (row.position > last.position) last = row;
      if (last.position > this.#lastAppended) this.#lastAppended = last.position;
      this.#notifier?.notify();
      if (last.enqueued > 0) this.#outbox?.announce();
      return { nextExpectedVersion: Number(last.version), position: last.position };
    }
  }

  /** The prefix of the advisory lock of an outbox key, as the outbox storage's `enqueue` takes it. */
  get #lockPrefix(): string {
    return `ferry-outbox:${this.schema}:`;
  }

  async #appendRetrying(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        const statement =
          events.length <= MAX_VALUES_ROWS ? this.#valuesStatement(events.length) : this.#sql.appendArrays;
        const { repeated: _, ...result } = await this.#append(
          this.#db,
          statement,
          streamId,
          events,
          expected,
        );
        if (result.position > this.#lastAppended) this.#lastAppended = result.position;
        this.#notifier?.notify();
        return result;
      } catch (error) {
        // The same event ids go again, so a retry after an append that did commit is a no-op.
        if (attempt >= 3 || !isConnectionFailure(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  }

  /**
   * Appends of distinct streams in one statement, so one transaction and one commit: each append's
   * expected version is checked on its own, and one that fails it writes nothing while the others
   * are inserted. An append resolves once the statement (and so the commit) succeeded. When the
   * statement fails (a unique key: a duplicate event id, a race with another process; a bad event;
   * a lost connection), nothing of it committed or, for a lost connection, maybe all of it: every
   * append then goes again on its own with the same event ids, which is a no-op for events already
   * stored, so each append gets its own outcome and a failure touches no other.
   */
  async #appendBatch(batch: readonly QueuedAppend[]): Promise<void> {
    let rows: { position: bigint; stream_id: string; version: bigint; enqueued?: number }[];
    // With outbox rows, the statement that inserts those of the appends it writes (batch-append.ts).
    const withMessages = batch.some((a) => a.messages !== undefined);
    try {
      ({ rows } = await this.#db.query<{
        position: bigint;
        stream_id: string;
        version: bigint;
        enqueued?: number;
      }>(
        withMessages
          ? {
              name: this.#sql.appendBatchOutbox.name,
              text: this.#sql.appendBatchOutbox.text,
              values: batchOutboxParameters(batch, this.#lockPrefix),
            }
          : {
              name: this.#sql.appendBatch.name,
              text: this.#sql.appendBatch.text,
              values: batchParameters(batch),
            },
      ));
    } catch {
      await Promise.all(batch.map((a) => this.#appendAlone(a)));
      return;
    }
    this.#batchCommits++;
    const last = new Map<string, { position: bigint; version: bigint }>();
    for (const row of rows) {
      const seen = last.get(row.stream_id);
      if (seen === undefined || row.position > seen.position) last.set(row.stream_id, row);
    }
    let wrote = false;
    await Promise.all(
      batch.map(async (a) => {
        const row = last.get(a.streamId);
        if (row !== undefined) {
          wrote = true;
          if (row.position > this.#lastAppended) this.#lastAppended = row.position;
          a.resolve({ nextExpectedVersion: Number(row.version), position: row.position });
          return;
        }
        await this.#settleRefused(this.#db, a);
      }),
    );
    if (wrote) this.#notifier?.notify();
    if ((rows[0]?.enqueued ?? 0) > 0) this.#outbox?.announce();
  }

  /** An append whose expected version did not hold: its original result when its ids are stored already. */
  async #settleRefused(db: Queryable, a: QueuedAppend): Promise<void> {
    try {
      const ids = a.events.map((e) => e.id);
      const settled = await this.#resolveConflict(db, a.streamId, ids, a.expected);
      if (settled !== undefined) a.resolve(settled);
      else a.reject(new ConcurrencyError(a.streamId, a.expected, await this.#currentVersion(db, a.streamId)));
    } catch (error) {
      // It wrote nothing: on a lost connection it may go again, on its own (retried there).
      if (isConnectionFailure(error)) await this.#appendAlone(a);
      else a.reject(error);
    }
  }

  /** How many batches of two or more appends committed as one statement; for tests and benchmarks. */
  get groupCommits(): number {
    return this.#batchCommits;
  }

  /**
   * Appends on `db`, typically a client inside the caller's own transaction, so that events and other
   * writes commit together. Subscriptions, here and in other processes, are woken when that
   * transaction commits (a NOTIFY sent inside it, while anyone listens), not before, and not if it
   * rolls back.
   * The append is checked and encoded as `EventStore.append` does it, by the same function (else
   * `InvalidEventError`, `INVALID_EVENT`, and nothing is sent): ids filled in, data and metadata
   * stored as their JSON round trip. `expected` undefined means `'any'`.
   *
   * @example
   * await client.query('BEGIN');
   * await backend.appendInTransaction(client, 'order-42', [{ type: 'OrderPlaced', data: { total: 10 } }], 'no_stream');
   * await client.query('UPDATE orders_view SET …');
   * await client.query('COMMIT');
   */
  async appendInTransaction(
    db: Queryable,
    streamId: string,
    events: readonly EventData[],
    expected?: ExpectedVersion,
  ): Promise<AppendResult> {
    const prepared = prepareAppend(streamId, events, expected);
    const { repeated: _, ...result } = await this.#append(
      db,
      this.#sql.appendInTransaction,
      streamId,
      prepared.events,
      prepared.expected,
    );
    // Subscriptions learn of the events when the caller commits, not at their next poll.
    await this.#notifier?.notifyOnCommit(db);
    return result;
  }

  /** The VALUES append statement for `rows` events, built once per size. */
  #valuesStatement(rows: number): Statement {
    let statement = this.#valuesStatements.get(rows);
    if (statement === undefined) {
      statement = valuesAppendStatement(`"${this.schema}"`, rows);
      this.#valuesStatements.set(rows, statement);
    }
    return statement;
  }

  async #append(
    db: Queryable,
    statement: Statement,
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<StorageAppendResult> {
    const ids = events.map((e) => e.id);
    const kind = typeof expected === 'number' ? 'exact' : expected;
    const exact = typeof expected === 'number' ? expected : null;
    for (let attempt = 1; ; attempt++) {
      let rows: { position: bigint; version: bigint }[];
      try {
        ({ rows } = await db.query<{ position: bigint; version: bigint }>({
          name: statement.name,
          text: statement.text,
          values: statement.values
            ? [
                streamId,
                kind,
                exact,
                ...events.flatMap((e) => [e.id, e.type, JSON.stringify(e.data), JSON.stringify(e.metadata)]),
              ]
            : [
                streamId,
                kind,
                exact,
                ids,
                events.map((e) => e.type),
                events.map((e) => JSON.stringify(e.data)),
                events.map((e) => JSON.stringify(e.metadata)),
              ],
        }));
      } catch (error) {
        const { code, constraint } = error as { code?: string; constraint?: string };
        if (code !== '23505') throw error;
        if (statement === this.#sql.appendInTransaction) {
          // The error aborted the caller's transaction: nothing more can run in it, and the append
          // cannot go again. The writer it met has committed, so the pool sees what it wrote.
          const options = { detail: ABORTED_BY_RACE, cause: error };
          const found = await this.#resolveConflict(this.#db, streamId, ids, expected, options);
          const current = await this.#currentVersion(this.#db, streamId);
          throw new ConcurrencyError(
            streamId,
            expected,
            current,
            found === undefined ? options : { ...options, detail: `${STORED_BY_RACE}; ${ABORTED_BY_RACE}` },
          );
        }
        const settled = await this.#resolveConflict(db, streamId, ids, expected);
        if (settled !== undefined) return { ...settled, repeated: true };
        // A concurrent writer took the version an 'any' append was about to use: go again.
        if (await goesAgainAfterLostRace(expected, constraint, attempt)) continue;
        throw new ConcurrencyError(streamId, expected, await this.#currentVersion(db, streamId));
      }
      if (rows.length === 0) {
        const settled = await this.#resolveConflict(db, streamId, ids, expected);
        if (settled !== undefined) return { ...settled, repeated: true };
        if (statement === this.#sql.appendInTransaction)
          await this.#assertRoomInTransaction(db, events.length);
        throw new ConcurrencyError(streamId, expected, await this.#currentVersion(db, streamId));
      }
      // BigInt(): on a caller's client (appendInTransaction) pg gives int8 as a string.
      let last = BigInt(rows[0]!.position);
      let version = rows[0]!.version;
      for (const row of rows) {
        const position = BigInt(row.position);
        if (position > last) [last, version] = [position, row.version];
      }
      return { nextExpectedVersion: Number(version), position: last };
    }
  }

  /** After a refused append: the original result when every id is already stored, an error when some are. */
  /**
   * A position is the transaction id << 16 plus the event's index in the transaction: past 65536
   * events, one transaction's positions would run into the next transaction id's. The append
   * statement writes nothing then (as for a failed expected version); this tells which it was.
   */
  async #assertRoomInTransaction(db: Queryable, adding: number): Promise<void> {
    const { rows } = await db.query<{ n: number }>(this.#sql.eventsInTransaction);
    const held = Number(rows[0]?.n ?? 0);
    if (held + adding > MAX_TRANSACTION_EVENTS) throw tooManyTransactionEvents(held, adding);
  }

  async #resolveConflict(
    db: Queryable,
    streamId: string,
    ids: readonly string[],
    _expected: ExpectedVersion,
    errorOptions: { readonly detail?: string; readonly cause?: unknown } = {},
  ): Promise<AppendResult | undefined> {
    const { rows } = await db.query<{ id: string; version: bigint; position: bigint }>(
      this.#sql.existingIds,
      [streamId, ids],
    );
    if (rows.length === 0) return undefined;
    if (rows.length < new Set(ids).size)
      throw new DuplicateEventIdError(
        streamId,
        rows.map((r) => r.id),
        errorOptions,
      );
    // The latest of them: what their append returned, in whatever order they come again.
    const last = rows.reduce((a, b) => (BigInt(b.version) > BigInt(a.version) ? b : a));
    return { nextExpectedVersion: Number(last.version), position: BigInt(last.position) };
  }

  async #currentVersion(db: Queryable, streamId: string): Promise<number> {
    const { rows } = await db.query<{ version: bigint }>(this.#sql.currentVersion, [streamId]);
    return Number(rows[0]?.version ?? -1n);
  }

  async readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    const [statement, values] = this.#readStreamStatement(streamId, options);
    const { rows } = await this.#query<EventRow>(statement.text, values);
    return rows.map(toEvent);
  }

  /** {@link readStream} on a unit of work's client, which sees its own appends: prepared there. */
  async #readStreamOn(db: Queryable, streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    const [statement, values] = this.#readStreamStatement(streamId, options);
    const { rows } = await db.query<EventRow>({ ...statement, values });
    return rows.map(toEvent);
  }

  #readStreamStatement(streamId: string, options: ReadStreamOptions): [PreparedStatement, unknown[]] {
    const limit = options.limit ?? null;
    return options.direction === 'backward'
      ? [this.#sql.readStreamBackward, [streamId, options.fromVersion ?? Number.MAX_SAFE_INTEGER, limit]]
      : [this.#sql.readStreamForward, [streamId, options.fromVersion ?? 0, limit]];
  }

  /**
   * A statement on the pool outside appends and units of work (reads, checkpoints, leases, parked
   * events, snapshots; each is safe to run twice): on a connection that fails it goes again on a
   * fresh one, up to three attempts, then rejects `STORE_UNAVAILABLE`.
   */
  #query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values: readonly unknown[] = [],
  ): Promise<QueryResult<R>> {
    return storeQuery<R>(this.#db, () => this.#ended, text, values, {
      what: 'an event store statement',
      attempts: STATEMENT_ATTEMPTS,
    });
  }

  async readAfter(
    after: bigint,
    limit: number,
    types: readonly string[] | undefined,
    signal?: AbortSignal,
  ): Promise<ReadAfterResult> {
    const deadline = Date.now() + Math.min(OWN_WRITES_WAIT_MS, this.#horizonWaitMs);
    for (;;) {
      const { rows } = await this.#query<EventRow & { horizon: bigint }>(this.#sql.readAfter, [
        after,
        limit,
        types ?? null,
      ]);
      const horizon = rows[0]!.horizon;
      // Read-your-writes: what this process appended becomes readable as soon as it is final. Only
      // when nothing final comes first: events below the horizon are returned at once, whatever holds
      // back the positions after them.
      const first = rows[0]!.position;
      const finalFirst = first !== null && first < horizon;
      if (
        !finalFirst &&
        horizon <= this.#lastAppended &&
        this.#lastAppended > after &&
        Date.now() < deadline
      ) {
        this.#checkHeldBack();
        signal?.throwIfAborted();
        await new Promise((resolve) => setTimeout(resolve, 10));
        signal?.throwIfAborted();
        continue;
      }
      // Positions at or above the horizon may still be preceded by a commit in progress: not yet.
      const events: RecordedEvent[] = [];
      let held = false;
      for (const row of rows) {
        if (row.position === null) break;
        if (row.position >= horizon) {
          held = true;
          break;
        }
        events.push(toEvent(row));
      }
      if (held) this.#checkHeldBack();
      return { events, held };
    }
  }

  /**
   * The end of the global order now, from the current snapshot: every event committed before the
   * call is at or below it, and final (readable) once this resolves; every event of a transaction
   * begun after the call is above it. Positions order transactions by their start, so those open at
   * the call (which may still commit at lower positions) count as before: they are waited for, up to
   * `horizonWaitMs`; then it rejects with `ReadHeldBackError`, and a call within the next 10 s (a
   * subscription retrying) goes on waiting for the same end rather than take a later one. With
   * `fresh` (a read's end, which must cover what was committed before this very call), the end is
   * this call's own, never one fixed earlier; `signal` stops the wait (the promise rejects).
   */
  async horizon(options: HorizonOptions = {}): Promise<bigint> {
    const { fresh = false, signal, wait = true } = options;
    if (!wait) {
      // Final now: every position below the oldest transaction still open (its events, and those of
      // any later one, come at or above its xid's positions).
      const { rows } = await this.#query<{ xmax: string; xip: string[] }>(this.#sql.snapshot);
      // Open transactions are below xmax: the oldest of them, else xmax.
      let oldest = BigInt(rows[0]!.xmax);
      for (const xid of rows[0]!.xip) if (BigInt(xid) < oldest) oldest = BigInt(xid);
      return (oldest << 16n) - 1n;
    }
    let pending = fresh ? undefined : this.#pendingEnd;
    // An end nobody retried for a while is stale: what was committed since exists now.
    if (pending !== undefined && Date.now() > pending.retryUntil) pending = this.#pendingEnd = undefined;
    if (pending === undefined) {
      const { rows } = await this.#query<{ xmax: string; xip: string[] }>(this.#sql.snapshot);
      pending = {
        end: (BigInt(rows[0]!.xmax) << 16n) - 1n,
        open: rows[0]!.xip,
        retryUntil: Number.POSITIVE_INFINITY,
      };
      // A concurrent call may have fixed one first: share it.
      if (!fresh) {
        this.#pendingEnd ??= pending;
        pending = this.#pendingEnd;
      }
    }
    pending.retryUntil = Number.POSITIVE_INFINITY;
    try {
      return await this.#waitForEnd(pending, signal);
    } catch (error) {
      // Aborted, or the connection lost: not an end to share with later calls. Left in place (its
      // reuse time unbounded), every later call took this old end as the store's end, for good.
      if (!isReadHeldBackError(error) && this.#pendingEnd === pending) this.#pendingEnd = undefined;
      throw error;
    }
  }

  /** Waits for the transactions open at `pending`'s snapshot, up to `horizonWaitMs` (see {@link horizon}). */
  async #waitForEnd(
    pending: { readonly end: bigint; open: string[]; retryUntil: number },
    signal: AbortSignal | undefined,
  ): Promise<bigint> {
    const started = Date.now();
    for (let round = 0; ; round++) {
      signal?.throwIfAborted();
      if (pending.open.length > 0) {
        const { rows } = await this.#query<{ xid: string }>(this.#sql.stillOpen, [pending.open]);
        pending.open = rows.map((r) => r.xid);
      }
      if (pending.open.length === 0) {
        if (this.#pendingEnd === pending) this.#pendingEnd = undefined;
        return pending.end;
      }
      const waited = Date.now() - started;
      if (waited >= this.#horizonWaitMs) {
        const transaction = await this.#openTransaction(pending.open);
        this.#checkHeldBack(transaction);
        pending.retryUntil = Date.now() + PENDING_END_REUSE_MS;
        throw new ReadHeldBackError(pending.end, transaction, waited);
      }
      await sleep(Math.min(5 * 2 ** round, 100, this.#horizonWaitMs - waited));
    }
  }

  /**
   * The oldest transaction open in the cluster (with a transaction id, so one that writes or may):
   * the one holding the horizon back, which every subscription waits for. For readiness checks and
   * dashboards; undefined when none is open.
   *
   * @example
   * const t = await backend.oldestOpenTransaction();
   * if (t?.ageMs !== undefined && t.ageMs > 60_000) reportNotReady(`held back by pid ${t.pid}`);
   */
  async oldestOpenTransaction(): Promise<OpenTransaction | undefined> {
    return this.#openTransaction(null);
  }

  /** The oldest of `xids` still open (of every open transaction when null), with its session. */
  async #openTransaction(xids: readonly string[] | null): Promise<OpenTransaction | undefined> {
    const { rows } = await this.#query<{
      xid: string;
      pid: number | null;
      application_name: string | null;
      state: string | null;
      age_ms: number | null;
    }>(this.#sql.openTransaction, [xids]);
    const row = rows[0];
    if (row === undefined) return undefined;
    return {
      xid: BigInt(row.xid),
      pid: row.pid ?? undefined,
      ageMs: row.age_ms === null ? undefined : Math.max(0, Math.round(row.age_ms)),
      applicationName: row.application_name ?? undefined,
      state: row.state ?? undefined,
    };
  }

  /**
   * Reads are held back: warns when the transaction responsible has been open longer than
   * `longTransactionWarnMs`. Looks at most once per that interval while transactions are short.
   */
  #checkHeldBack(known?: OpenTransaction): void {
    const now = Date.now();
    if (now < this.#nextHeldCheck) return;
    this.#nextHeldCheck = now + this.#longTransactionWarnMs;
    void (known === undefined ? this.oldestOpenTransaction() : Promise.resolve(known)).then(
      (t) => {
        if (t?.ageMs === undefined) return;
        if (t.ageMs < this.#longTransactionWarnMs) {
          this.#nextHeldCheck = Date.now() + this.#longTransactionWarnMs - t.ageMs;
          return;
        }
        this.#nextHeldCheck = Date.now() + Math.max(LONG_TRANSACTION_REPEAT_MS, this.#longTransactionWarnMs);
        this.#logger.warn(
          `reads of the event store's global order are held back by ${describeTransaction(t)}: subscriptions wait until it ends`,
          {
            schema: this.schema,
            xid: String(t.xid),
            pid: t.pid,
            applicationName: t.applicationName,
            state: t.state,
            ageMs: t.ageMs,
          },
        );
      },
      () => {},
    );
  }

  async countAfter(position: bigint): Promise<number> {
    const { rows } = await this.#query<{ count: bigint }>(this.#sql.countAfter, [position]);
    return Number(rows[0]!.count);
  }

  watch(listener: () => void): () => void {
    if (this.#notifier === undefined) throw new InvalidOptionsError('the PostgreSQL backend is not open');
    return this.#notifier.watch(listener);
  }

  async loadCheckpoint(subscription: string): Promise<bigint | undefined> {
    const { rows } = await this.#query<{ position: bigint }>(this.#sql.loadCheckpoint, [subscription]);
    return rows[0]?.position;
  }

  async saveCheckpoint(subscription: string, position: bigint): Promise<void> {
    await this.#query(this.#sql.saveCheckpoint, [subscription, position]);
  }

  async claimSubscription(
    subscription: string,
    owner: string,
    ttlMs: number,
    replacing?: string,
  ): Promise<string> {
    // The database's clock, the one every process sharing the lease sees.
    const { rows } = await this.#query<{ owner: string }>(this.#sql.claimSubscription, [
      subscription,
      owner,
      ttlMs,
      replacing ?? null,
    ]);
    return rows[0]?.owner ?? '';
  }

  async releaseSubscription(subscription: string, owner: string): Promise<void> {
    const { rowCount } = await this.#query(this.#sql.releaseSubscription, [subscription, owner]);
    if (rowCount !== null && rowCount > 0) await this.#notifier?.leaseReleased(subscription);
  }

  /** Releases through this backend at once; through other processes and stores by LISTEN/NOTIFY. */
  watchLeases(listener: (subscription: string) => void): () => void {
    if (this.#notifier === undefined) throw new InvalidOptionsError('the PostgreSQL backend is not open');
    return this.#notifier.watchLeases(listener);
  }

  async park(parked: ParkedEvent): Promise<void> {
    await this.#query(this.#sql.park, [
      parked.subscription,
      parked.event.position,
      parked.error,
      parked.attempts,
      parked.parkedAt,
    ]);
  }

  async listParked(subscription: string, limit: number): Promise<ParkedEvent[]> {
    const { rows } = await this.#query<
      EventRow & { subscription: string; error: string; attempts: number; parked_at: string }
    >(this.#sql.listParked, [subscription, Math.min(limit, 1_000_000)]);
    return rows.map((row) => ({
      subscription: row.subscription,
      event: toEvent(row),
      error: row.error,
      attempts: row.attempts,
      parkedAt: row.parked_at,
    }));
  }

  async unpark(subscription: string, position: bigint): Promise<void> {
    await this.#query(this.#sql.unpark, [subscription, position]);
  }

  async loadSnapshot(streamId: string): Promise<Snapshot | undefined> {
    const { rows } = await this.#query<{
      stream_id: string;
      version: bigint;
      schema_version: number;
      state: unknown;
      time: string;
    }>(this.#sql.loadSnapshot, [streamId]);
    const row = rows[0];
    if (row === undefined) return undefined;
    return {
      streamId: row.stream_id,
      version: Number(row.version),
      schemaVersion: row.schema_version,
      state: row.state,
      time: row.time,
    };
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    await this.#query(this.#sql.saveSnapshot, [
      snapshot.streamId,
      snapshot.version,
      snapshot.schemaVersion,
      JSON.stringify(snapshot.state),
      snapshot.time,
    ]);
  }

  /** An inbox in this schema, for idempotent consumers of the message bus. Needs `open()` first. */
  inbox(options: DurableInboxOptions = {}): Inbox {
    return new PostgresInbox(this.#db, this.schema, options, () => this.#ended);
  }

  /**
   * An HTTP idempotency store in this schema, shared by every instance of the service and kept
   * across restarts. Needs `open()` first; closing the backend closes it.
   */
  idempotencyStore(options: DurableIdempotencyStoreOptions = {}): PostgresIdempotencyStore {
    return new PostgresIdempotencyStore(this.#db, this.schema, options, () => this.#ended);
  }

  /**
   * The outbox, transactional inbox marks and saga rows in this schema, with units of work that
   * append events, run the caller's SQL and write outbox rows in one transaction. The same instance
   * on every call; usable once the backend is open, closed with it.
   */
  outboxStorage(): PostgresOutboxStorage {
    this.#outbox ??= new PostgresOutboxStorage({
      schema: this.schema,
      url: this.#url,
      pool: () => this.#db,
      closing: () => this.#closing,
      ended: () => this.#ended,
      logger: this.#logger,
      notifyIntervalMs: this.#notifyIntervalMs,
      append: (client, streamId, events, expected) =>
        this.#append(client, this.#sql.appendInTransaction, streamId, events, expected),
      readStream: (client, streamId, options) => this.#readStreamOn(client, streamId, options),
      ownSqlTypes: () => this.#ownSqlTypes,
      appended: (position) => {
        if (position > this.#lastAppended) this.#lastAppended = position;
        this.#notifier?.notify();
      },
      appendWithMessages: (streamId, events, expected, messages) =>
        this.#enqueue(streamId, events, expected, messages),
    });
    return this.#outbox;
  }

  /**
   * Commits the appends called before it (`outbox.append` too: those called in the same turn of the
   * event loop, on their way here, included) and waits for the units of work called before it, then
   * closes the outbox, the notifier and the pool. Every later call rejects with
   * `EventStoreClosedError`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await endOfTurn();
    this.#closing = true;
    for (;;) {
      await this.#outbox?.whenIdle();
      if (this.#queue.length === 0 && this.#batchesInFlight === 0) break;
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
    this.#ended = true;
    await this.#outbox?.close();
    await this.#notifier?.close();
    await this.#pool?.end();
  }
}

/** A prepared statement; `values` marks the VALUES form, whose events are scalar parameters. */
interface Statement {
  readonly name: string;
  readonly text: string;
  readonly values?: true;
}

/** Appends of up to this many events use the VALUES form; longer ones use array parameters. */
const MAX_VALUES_ROWS = 32;
/** Most appends committed together: with at most {@link MAX_VALUES_ROWS} events each, far below 65,536 positions. */
const MAX_BATCH_APPENDS = 64;
/**
 * Batches (or lone appends) being committed at once: one, the classic leader/follower group commit.
 * A lone append goes at once; those called while a commit is in flight go together next. With two
 * or four in flight, batches were smaller and bench:eventstore slower (8 writers: 0.8-0.9x raw
 * INSERT with two, 0.65x with four, 1.2-1.4x with one).
 */
const MAX_BATCHES_IN_FLIGHT = 1;

/** An append too long to share a batch. */
const isLong = (append: QueuedAppend) => append.events.length > MAX_VALUES_ROWS;

/**
 * Said of an append in the caller's transaction that met a concurrent transaction's rows (the same
 * events, or the versions it was taking) once that one committed: PostgreSQL aborts the caller's
 * transaction on the unique violation.
 */
const ABORTED_BY_RACE =
  'another transaction appended to the stream while this one waited for it, and PostgreSQL aborted this transaction: roll it back, then try again';
/** Said when that other transaction stored every event of the append (the same append, sent twice at once). */
const STORED_BY_RACE = 'every event of this append was stored by that other transaction';

/** Parameters $2 (kind) and $3 (the exact version) against `cur.v`, the stream's current version. */
const EXPECTED_CHECK = `CASE $2::text
        WHEN 'any' THEN true
        WHEN 'no_stream' THEN cur.v = -1
        WHEN 'stream_exists' THEN cur.v >= 0
        ELSE cur.v = $3::bigint
      END`;
const CURRENT_VERSION = (s: string) =>
  `(SELECT COALESCE(max(version), -1) AS v FROM ${s}.events WHERE stream_id = $1) cur`;

/**
 * An append is one statement: the stream's current version, the expected-version check and the
 * insert. A position is the transaction id shifted left by 16 plus the event's index in its
 * transaction; `append` runs each statement as its own transaction, so indexes start at 0.
 *
 * This form takes each event as four scalar parameters in a VALUES list: array parameters cost the
 * client escaping and the server parsing, about a fifth of single-event append throughput.
 */
function valuesAppendStatement(s: string, rows: number): Statement {
  const list = Array.from({ length: rows }, (_, i) => {
    const p = 4 + i * 4;
    return `(${i + 1}, $${p}::uuid, $${p + 1}, $${p + 2}::jsonb, $${p + 3}::jsonb)`;
  }).join(', ');
  return {
    name: `ferry-append-${rows}-${s}`,
    values: true,
    text: `
      INSERT INTO ${s}.events (position, stream_id, version, id, type, data, metadata)
      SELECT (txid_current() << 16) + e.ord - 1, $1, cur.v + e.ord, e.id, e.type, e.data, e.metadata
      FROM ${CURRENT_VERSION(s)}, (VALUES ${list}) AS e(ord, id, type, data, metadata)
      WHERE ${EXPECTED_CHECK}
      RETURNING position, version`,
  };
}

/**
 * The array form, for long appends, and for appends inside the caller's transaction, which first
 * count the positions that transaction already used.
 */
function arrayAppendStatements(s: string) {
  const insert = (offset: string, from: string, room = '') => `
      INSERT INTO ${s}.events (position, stream_id, version, id, type, data, metadata)
      SELECT tx.base ${offset} + e.ord - 1, $1, cur.v + e.ord, e.id, e.type, e.data::jsonb, e.metadata::jsonb
      FROM ${CURRENT_VERSION(s)}, tx${from},
           unnest($4::uuid[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS e(id, type, data, metadata, ord)
      WHERE ${EXPECTED_CHECK}${room}
      RETURNING position, version`;
  const tx = `WITH tx AS MATERIALIZED (SELECT txid_current() << 16 AS base)`;
  // The events this transaction appended so far: its positions run from tx.base.
  const used = `SELECT count(*)::int4 AS n FROM ${s}.events, tx
        WHERE position >= tx.base AND position < tx.base + ${MAX_TRANSACTION_EVENTS}`;
  return {
    appendArrays: { name: `ferry-append-arrays-${s}`, text: tx + insert('', '') } satisfies Statement,
    eventsInTransaction: { name: `ferry-events-in-tx-${s}`, text: `${tx} ${used}` } satisfies Statement,
    appendInTransaction: {
      name: `ferry-append-tx-${s}`,
      // Nothing is written while any of the events is in the stream already (an append sent again):
      // the caller then learns which it is with one more read, and the append of new events takes
      // one round trip, not a read of its ids first. A unique violation would abort the caller's
      // transaction.
      text: `${tx}, used AS (${used})${insert(
        '+ used.n',
        ', used',
        ` AND used.n + cardinality($4::uuid[]) <= ${MAX_TRANSACTION_EVENTS}
        AND NOT EXISTS (SELECT 1 FROM ${s}.events WHERE stream_id = $1 AND id = ANY($4::uuid[]))`,
      )}`,
    } satisfies Statement,
  };
}

/** Every statement, with the schema name filled in once. */
function statements(s: string) {
  const horizon = '(txid_snapshot_xmin(txid_current_snapshot()) << 16)';
  return {
    ...arrayAppendStatements(s),
    appendBatch: batchAppendStatement(s),
    appendBatchOutbox: batchOutboxStatement(s),
    existingIds: `SELECT id, version, position FROM ${s}.events WHERE stream_id = $1 AND id = ANY($2::uuid[]) ORDER BY version`,
    currentVersion: `SELECT COALESCE(max(version), -1) AS version FROM ${s}.events WHERE stream_id = $1`,
    // Prepared on a unit of work's connection; sent as text on the pool.
    readStreamForward: preparedStatement(
      `SELECT ${EVENT_COLUMNS} FROM ${s}.events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3`,
    ),
    readStreamBackward: preparedStatement(
      `SELECT ${EVENT_COLUMNS} FROM ${s}.events WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3`,
    ),
    // The next events by position, whatever their horizon (a plain index range scan), and the horizon
    // beside them: the caller keeps those below it. Always one row, so the horizon comes back even
    // without events. A horizon condition inside the scan would make the planner sort the whole range.
    readAfter: `
      WITH h AS MATERIALIZED (SELECT ${horizon} AS horizon)
      SELECT h.horizon, e.*
      FROM h LEFT JOIN LATERAL (
        SELECT ${EVENT_COLUMNS} FROM ${s}.events
        WHERE position > $1 AND ($3::text[] IS NULL OR type = ANY($3::text[]))
        ORDER BY position LIMIT $2
      ) e ON true`,
    // What exists now: every transaction below xmax has ended, except those in xip.
    snapshot: `SELECT pg_snapshot_xmax(s)::text AS xmax, ARRAY(SELECT pg_snapshot_xip(s)::text) AS xip FROM pg_current_snapshot() s`,
    stillOpen: `SELECT x::text AS xid FROM unnest($1::xid8[]) x WHERE pg_xact_status(x) = 'in progress'`,
    openTransaction: `
      SELECT x.xid::text AS xid, a.pid, a.application_name, COALESCE(a.state, CASE WHEN p.gid IS NOT NULL THEN 'prepared' END) AS state,
        (extract(epoch FROM clock_timestamp() - COALESCE(a.xact_start, p.prepared)) * 1000)::float8 AS age_ms
      FROM (
        SELECT x AS xid FROM unnest(COALESCE($1::xid8[], ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())))) x
        WHERE pg_xact_status(x) = 'in progress'
      ) x
      LEFT JOIN pg_stat_activity a ON a.backend_xid = xid(x.xid)
      LEFT JOIN pg_prepared_xacts p ON p.transaction = xid(x.xid)
      ORDER BY x.xid LIMIT 1`,
    countAfter: `SELECT count(*) AS count FROM ${s}.events WHERE position > $1 AND position < ${horizon}`,
    loadCheckpoint: `SELECT position FROM ${s}.checkpoints WHERE name = $1`,
    saveCheckpoint: `
      INSERT INTO ${s}.checkpoints (name, position) VALUES ($1, $2)
      ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()`,
    claimSubscription: `
      WITH claim AS (
        INSERT INTO ${s}.subscription_leases AS l (subscription, owner, expires_at)
        VALUES ($1, $2, clock_timestamp() + $3::integer * interval '1 millisecond')
        ON CONFLICT (subscription) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE l.owner = EXCLUDED.owner OR l.owner = $4::text OR l.expires_at <= clock_timestamp()
        RETURNING owner
      )
      SELECT owner FROM claim
      UNION ALL
      SELECT owner FROM ${s}.subscription_leases WHERE subscription = $1 AND NOT EXISTS (SELECT 1 FROM claim)`,
    releaseSubscription: `DELETE FROM ${s}.subscription_leases WHERE subscription = $1 AND owner = $2`,
    park: `
      INSERT INTO ${s}.parked (subscription, position, error, attempts, parked_at) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (subscription, position) DO UPDATE
        SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, parked_at = EXCLUDED.parked_at`,
    listParked: `
      SELECT p.subscription, p.error, p.attempts, p.parked_at, ${PARKED_EVENT_COLUMNS}
      FROM ${s}.parked p JOIN ${s}.events e ON e.position = p.position
      WHERE p.subscription = $1 ORDER BY p.position LIMIT $2`,
    unpark: `DELETE FROM ${s}.parked WHERE subscription = $1 AND position = $2`,
    loadSnapshot: `SELECT stream_id, version, schema_version, state, time FROM ${s}.snapshots WHERE stream_id = $1`,
    saveSnapshot: `
      INSERT INTO ${s}.snapshots AS stored (stream_id, version, schema_version, state, time) VALUES ($1, $2, $3, $4::jsonb, $5)
      ON CONFLICT (stream_id) DO UPDATE
        SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, time = EXCLUDED.time
        WHERE EXCLUDED.schema_version <> stored.schema_version OR EXCLUDED.version >= stored.version`,
  };
}

/** A pooled client's connection failed: its user meets the failure through its statements. */
function ignoreClientError(): void {}
