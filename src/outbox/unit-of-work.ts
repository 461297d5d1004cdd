import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import {
  assertReadStream,
  MAX_TRANSACTION_EVENTS,
  prepareAppend,
  tooManyTransactionEvents,
} from '../eventstore/prepare-append.js';
import type {
  AppendOptions,
  AppendResult,
  EventData,
  PendingEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import type { Bus, PublishOptions } from '../messaging/bus.js';
import type { Contracts, DataIn, NoContracts, TypeOf } from '../messaging/contracts.js';
import { expiryOf } from '../messaging/expiry.js';
import type { Clock } from '../time/clock.js';
import { endOfTurn } from '../time/end-of-turn.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { doomedBy } from './guarded-transaction.js';
import { lookupIds } from './outbox-options.js';
import { outboxRow } from './outbox-row.js';
import type { StorageTransaction } from './storage.js';

const MAX_LOCK_KEYS = 1000;
const MAX_LOCK_KEY_LENGTH = 1000;

/** Options of {@link UnitOfWork.publish}. */
export interface OutboxPublishOptions extends PublishOptions {
  /**
   * Messages with the same key are published one at a time, in the order their units of work
   * committed (an aggregate's id, say). @default the message id: no order with other messages
   */
  readonly key?: string;
}

/** Options of {@link UnitOfWork.schedule}: when, besides what `publish` takes. */
export interface ScheduleOptions extends OutboxPublishOptions {
  /** Delay from now, in ms (an integer from 0 to 2^31 - 1). Give this or `at`. */
  readonly delayMs?: number;
  /** When to publish (one past is due at once). Give this or `delayMs`. */
  readonly at?: Date;
}

/** What {@link UnitOfWork.append} did: the store's result and the events as they will be stored. */
export interface UnitOfWorkAppendResult extends AppendResult {
  /**
   * The events appended, as readers will get them once the unit of work commits (`position` is the
   * result's, of the last event; `time` is set at commit).
   */
  readonly events: readonly PendingEvent[];
}

/**
 * One database transaction of a service: event appends, the service's own SQL and the messages it
 * publishes commit together or not at all. Get one from `outbox.unitOfWork(work => …)`; it is valid
 * only until that callback settles.
 */
export class UnitOfWork<C extends Contracts = NoContracts> {
  /** The storage transaction (for sagas and the transactional inbox). */
  readonly tx: StorageTransaction;
  readonly #bus: Bus<C>;
  readonly #clock: Clock;
  /** Outbox rows written by this unit of work (scheduled ones too): the relay is woken at commit when > 0. */
  enqueued = 0;
  #ended = false;
  /** Events appended in this unit (or under way): at most {@link MAX_TRANSACTION_EVENTS}. */
  #events = 0;
  /** Calls under way (see {@link untilCallsSettled}). */
  readonly #calls = new Set<Call>();
  /** The first call of the unit to fail, awaited or not, caught or not. */
  #failure: { readonly error: unknown } | undefined = undefined;

  /** @internal Use `outbox.unitOfWork`. */
  constructor(tx: StorageTransaction, bus: Bus<C>, clock: Clock) {
    this.tx = tx;
    this.#bus = bus;
    this.#clock = clock;
  }

  /** @internal */
  end(): void {
    this.#ended = true;
  }

  /** @internal Whether the unit has ended (committed, rolled back, or given up on): calls are refused. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * @internal Waits, once the callback resolved, for the calls it made and did not wait for (a
   * forgotten `await`: `work.publish(…)` just before returning), and for any they make in turn, so
   * that they belong to the commit instead of being refused after it (state kept, message lost).
   * Resolves the first call of the unit that failed, if any, which the caller turns into a rollback:
   * awaited and caught, chained (`.then`, `Promise.all`) or never looked at, a call that failed is
   * part of the unit that failed, as a write's failure dooms it.
   */
  async untilCallsSettled(): Promise<{ readonly error: unknown } | undefined> {
    // Every call awaited (the usual case): nothing to wait for, not even a turn.
    while (this.#calls.size > 0) {
      while (this.#calls.size > 0) await Promise.all([...this.#calls].map((call) => call.settled));
      // What those calls' continuations call next (`.then(() => work.publish(…))`) is called in
      // promise continuations, every one of which has run by the end of this turn.
      await endOfTurn();
    }
    return this.#failure;
  }

  /** Counts `promise` among the calls under way until it settles, and resolves what it does. */
  #track<T>(promise: Promise<T>): Promise<T> {
    // Made once the unit ended: refused (see #assertOpen), and the caller's to see, as any rejection.
    if (this.#ended) return promise;
    let settle!: () => void;
    const call: Call = {
      settled: new Promise<void>((resolve) => {
        settle = resolve;
      }),
    };
    this.#calls.add(call);
    const tracked = promise.then(
      (value) => {
        this.#calls.delete(call);
        settle();
        return value;
      },
      (error: unknown) => {
        this.#failure ??= { error };
        this.#calls.delete(call);
        settle();
        throw error;
      },
    );
    // Its failure is the unit's (it rolls back, or rejects with the callback's own error), never an
    // unhandled rejection beside it, even while the callback awaits something else (which ended the
    // process).
    tracked.catch(() => {});
    return tracked;
  }

  #assertOpen(): void {
    if (this.#ended) {
      throw new InvalidOptionsError(
        'this unit of work has ended: use the work object only inside its callback, and await every call',
      );
    }
    // One of its calls failed (one of Ferry's own checks included): the unit is doomed, and every
    // later call rejects at once, as after a failed write.
    if (this.#failure !== undefined) throw doomedBy(this.#failure.error);
  }

  /** The driver's transaction handle: a `pg` client on PostgreSQL, a `better-sqlite3` database on SQLite. */
  get client(): unknown {
    return this.tx.client;
  }

  /**
   * Appends events to a stream in this transaction, checked as `EventStore.append` checks them; the
   * expected version is enforced now (`ConcurrencyError` rejects here, and the unit of work should
   * then be rolled back by letting the error propagate).
   */
  append(
    streamId: string,
    events: readonly EventData[],
    options: AppendOptions = {},
  ): Promise<UnitOfWorkAppendResult> {
    return this.#track(this.#append(streamId, events, options));
  }

  async #append(
    streamId: string,
    events: readonly EventData[],
    options: AppendOptions,
  ): Promise<UnitOfWorkAppendResult> {
    this.#assertOpen();
    checkOptions('work.append', options, ['expectedVersion']);
    const prepared = prepareAppend(streamId, events, options.expectedVersion);
    const adding = prepared.events.length;
    // Every backend as PostgreSQL, whose transaction cannot hold more: a unit of work that commits
    // embedded commits there too.
    if (this.#events + adding > MAX_TRANSACTION_EVENTS) throw tooManyTransactionEvents(this.#events, adding);
    this.#events += adding;
    const { repeated, ...result } = await this.tx.append(streamId, prepared.events, prepared.expected);
    if (repeated === true) {
      this.#events -= adding;
      // Sent again: nothing was written. The events as stored (their versions, their data), not as
      // sent this time, perhaps in another order or with other data.
      const ids = new Set(prepared.events.map((e) => e.id));
      const stored = (await this.tx.readStream(streamId, {})).filter((e) => ids.has(e.id));
      return {
        ...result,
        events: stored.map(
          (e): PendingEvent => ({
            streamId,
            version: e.version,
            id: e.id,
            type: e.type,
            data: e.data,
            metadata: e.metadata,
          }),
        ),
      };
    }
    const first = result.nextExpectedVersion - prepared.events.length + 1;
    return {
      ...result,
      events: prepared.events.map(
        (e, i): PendingEvent => ({
          streamId,
          version: first + i,
          id: e.id,
          type: e.type,
          data: e.data,
          metadata: e.metadata,
        }),
      ),
    };
  }

  /**
   * The events of a stream as this unit of work sees them: committed ones and its own appends, read on
   * the transaction's own connection (on PostgreSQL `store.readStream` would take a second pooled
   * connection, which units of work in flight can exhaust). Checked as `store.readStream`.
   */
  readStream(streamId: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    return this.#track(this.#readStream(streamId, options));
  }

  async #readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    this.#assertOpen();
    checkOptions('work.readStream', options, ['fromVersion', 'limit', 'direction']);
    assertReadStream(streamId, options);
    return this.tx.readStream(streamId, options);
  }

  /**
   * Runs the service's own SQL in this transaction (`?` placeholders on SQLite, `$1` on PostgreSQL)
   * and resolves its rows. Not available on the memory store (`UNIT_OF_WORK_UNSUPPORTED`).
   */
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
  ): Promise<R[]> {
    // Refused as the other calls are, with a rejection (it threw at the call).
    return this.#track(
      (async () => {
        this.#assertOpen();
        return (await this.tx.query(sql, params)) as R[];
      })(),
    );
  }

  /**
   * Holds `keys` until this unit of work ends: a unit of work of any process locking one of them
   * meanwhile waits for this one to commit or roll back, so units that read, decide and write the
   * same thing (a hot aggregate's stream) take turns instead of losing races to each other
   * (`ConcurrencyError` and a rerun). Lock before reading what the keys guard, and everything in one
   * call: keys are taken in a fixed order, so units locking several cannot wait for each other in a
   * circle. PostgreSQL: transaction-level advisory locks per store schema. Memory and SQLite: units of
   * work already run one at a time, so there is nothing to wait for. Keys are non-empty strings of at
   * most 1,000 characters without NUL (PostgreSQL text has none), at most 1,000 per call
   * (`InvalidOptionsError` otherwise, on every backend).
   */
  lock(...keys: readonly string[]): Promise<void> {
    return this.#track(this.#lock(keys));
  }

  async #lock(keys: readonly string[]): Promise<void> {
    this.#assertOpen();
    if (keys.length === 0 || keys.length > MAX_LOCK_KEYS) {
      throw new InvalidOptionsError(`lock takes 1 to ${MAX_LOCK_KEYS} keys, not ${keys.length}`);
    }
    for (const key of keys) {
      if (
        typeof key !== 'string' ||
        key.length === 0 ||
        key.length > MAX_LOCK_KEY_LENGTH ||
        key.includes('\u0000')
      ) {
        throw new InvalidOptionsError(
          `a lock key must be a non-empty string of at most ${MAX_LOCK_KEY_LENGTH} characters, without NUL`,
        );
      }
    }
    await this.tx.lock([...new Set(keys)].sort());
  }

  /**
   * Writes a message to the outbox: published by the relay once this unit of work has committed,
   * never if it rolls back. Checked now as `bus.publish` checks it (contract, options, limits); its
   * envelope (id, time, correlation and causation from the ambient context) is fixed now, so a
   * re-send is the same message to consumers' inboxes. Resolves the message id.
   */
  publish<K extends TypeOf<C>>(
    type: K,
    data: DataIn<C, K>,
    options: OutboxPublishOptions = {},
  ): Promise<string> {
    return this.#track(this.#enqueue(type, data, options, this.#clock.now()));
  }

  /**
   * Writes a message to the outbox to be published later (`delayMs` or `at`): a durable timer that
   * survives restarts and fires once, on whichever instance's relay gets to it first. Cancel it with
   * {@link cancel} (in a later unit of work) until a relay attempts it. A `ttlMs` counts from the due
   * time; the envelope's `time` is now, as `publish` fixes it. Resolves the message id.
   */
  schedule<K extends TypeOf<C>>(type: K, data: DataIn<C, K>, options: ScheduleOptions): Promise<string> {
    return this.#track(this.#schedule(type, data, options));
  }

  async #schedule(type: string, data: unknown, options: ScheduleOptions): Promise<string> {
    const now = this.#clock.now();
    const { delayMs, at } = options ?? {};
    if ((delayMs === undefined) === (at === undefined)) {
      throw new InvalidOptionsError('schedule needs exactly one of delayMs and at');
    }
    let dueAt: number;
    if (delayMs !== undefined) {
      if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > MAX_TIMER_MS) {
        throw new InvalidOptionsError(`delayMs must be an integer from 0 to ${MAX_TIMER_MS}`);
      }
      dueAt = now + delayMs;
    } else {
      if (!(at instanceof Date) || Number.isNaN(at.getTime())) {
        throw new InvalidOptionsError('at must be a valid Date');
      }
      dueAt = at.getTime();
    }
    // Due at once (`delayMs: 0`, an `at` past): due now, and written as created 1 ms before, since a
    // row is scheduled, so cancellable until attempted, by `dueAt > createdAt` (no column of its own):
    // otherwise it looked like a plain message, which `cancel` leaves alone.
    dueAt = Math.max(dueAt, now);
    const createdAt = dueAt > now ? now : now - 1;
    const { delayMs: _d, at: _a, ...publishOptions } = options;
    return this.#enqueue(type, data, expiringFromDue(publishOptions, dueAt), dueAt, createdAt);
  }

  /**
   * Cancels scheduled messages not yet attempted, due or not (in this transaction: a rollback keeps
   * them). Resolves the ids cancelled; an id already sent, being sent, waiting for a retry, of a plain
   * message, or unknown is left out.
   */
  cancel(ids: readonly string[]): Promise<string[]> {
    return this.#track(this.#cancel(ids));
  }

  async #cancel(ids: readonly string[]): Promise<string[]> {
    this.#assertOpen();
    return this.tx.cancel(lookupIds('cancel', ids), this.#clock.now());
  }

  async #enqueue(
    type: string,
    data: unknown,
    options: OutboxPublishOptions,
    dueAt: number,
    createdAt = this.#clock.now(),
  ): Promise<string> {
    this.#assertOpen();
    const row = await outboxRow(this.#bus, type, data, options, dueAt, createdAt);
    this.#assertOpen();
    await this.tx.enqueue([row]);
    this.enqueued++;
    return row.id;
  }
}

/**
 * A scheduled message is published when due: its `ttlMs` counts from then, not from now (a ttlMs
 * below the delay expired it before it went out), given to the envelope as the `expiresAt` it makes.
 */
function expiringFromDue(options: OutboxPublishOptions, dueAt: number): OutboxPublishOptions {
  if (options.ttlMs === undefined) return options;
  const { ttlMs: _t, ...rest } = options;
  const expiresAt = expiryOf(options, dueAt);
  return expiresAt === undefined ? rest : { ...rest, expiresAt };
}

/** A call of a unit of work under way (see {@link UnitOfWork.untilCallsSettled}). */
interface Call {
  readonly settled: Promise<void>;
}
