import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { assertReadStream, prepareAppend } from '../eventstore/prepare-append.js';
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
  /** Calls under way (see {@link untilCallsSettled}). */
  readonly #calls = new Set<Call>();
  /** The callback has returned, and its calls not awaited are being waited for. */
  #settling = false;
  /** The first of those calls to fail. */
  #unwaitedFailure: { readonly error: unknown } | undefined = undefined;
  /** Calls that failed while the callback ran, to look at once it returned. */
  readonly #failedEarly: { readonly promise: CallPromise<unknown>; readonly error: unknown }[] = [];

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
   * Resolves the first of their failures, if any, which the caller turns into a rollback: the
   * callback never saw it. Their own promises are then marked handled, the error reaching the caller
   * through the unit of work's rejection instead of as an unhandled rejection.
   */
  async untilCallsSettled(): Promise<{ readonly error: unknown } | undefined> {
    // A call that failed before the callback returned, its promise never looked at (`void
    // work.lock('')`, an argument refused at once): nobody saw it fail.
    for (const failed of this.#failedEarly) {
      if (failed.promise.observed) continue;
      this.#unwaitedFailure ??= { error: failed.error };
      failed.promise.catch(() => {});
    }
    this.#failedEarly.length = 0;
    this.#settling = true;
    // Every call awaited (the usual case): nothing to wait for, not even a turn.
    if (this.#calls.size === 0) return this.#unwaitedFailure;
    do {
      while (this.#calls.size > 0) {
        const unwaited = [...this.#calls];
        for (const call of unwaited) call.promise.catch(() => {});
        await Promise.all(unwaited.map((call) => call.settled));
      }
      // What those calls' continuations call next (`.then(() => work.publish(…))`) is called in
      // promise continuations, every one of which has run by the end of this turn.
      await endOfTurn();
    } while (this.#calls.size > 0);
    return this.#unwaitedFailure;
  }

  /**
   * @internal Once the unit of work ended otherwise (its callback threw, a write doomed it): the
   * calls still under way fail as calls on an ended unit, and that is no news to anyone; their
   * promises are marked handled, so that a forgotten `await` does not end the process with an
   * unhandled rejection beside the unit of work's own.
   */
  forgetCalls(): void {
    for (const call of this.#calls) call.promise.catch(() => {});
    for (const failed of this.#failedEarly) failed.promise.catch(() => {});
  }

  /** Counts `promise` among the calls under way until it settles, and resolves what it does. */
  #track<T>(promise: Promise<T>): Promise<T> {
    let settle!: () => void;
    const call: Call = {
      settled: new Promise<void>((resolve) => {
        settle = resolve;
      }),
      promise: undefined as unknown as CallPromise<unknown>,
    };
    this.#calls.add(call);
    const tracked: CallPromise<T> = new CallPromise<T>((resolve, reject) => {
      promise.then(
        (value) => {
          this.#calls.delete(call);
          settle();
          resolve(value);
        },
        (error: unknown) => {
          // Failed once the callback had returned: the callback cannot have seen it. Failed before:
          // seen if the callback looked at the call's promise (see untilCallsSettled).
          if (this.#settling) this.#unwaitedFailure ??= { error };
          else this.#failedEarly.push({ promise: tracked, error });
          this.#calls.delete(call);
          settle();
          reject(error);
        },
      );
    });
    call.promise = tracked;
    // Its failure is the unit's (see untilCallsSettled), never an unhandled rejection, even while the
    // callback, not looking at it, awaits something else (which ended the process). Through
    // Promise's own `then`, so that the call still counts as not looked at.
    Promise.prototype.then.call(tracked, undefined, () => {});
    // Made by a continuation of a call the callback did not await: reported through the unit.
    if (this.#settling) tracked.catch(() => {});
    return tracked;
  }

  #assertOpen(): void {
    if (this.#ended) {
      throw new InvalidOptionsError(
        'this unit of work has ended: use the work object only inside its callback, and await every call',
      );
    }
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
    const { repeated, ...result } = await this.tx.append(streamId, prepared.events, prepared.expected);
    if (repeated === true) {
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
  /** The promise the caller got. */
  promise: CallPromise<unknown>;
}

/**
 * The promise a call of a unit of work resolves: it knows whether anyone looked at it (`await`,
 * `then`, `catch`, `finally` and `Promise.all` all call `then`), so that a call that failed unseen
 * rolls the unit of work back instead of its failure going by as an unhandled rejection after the
 * commit. What `then` makes is a plain promise.
 */
class CallPromise<T> extends Promise<T> {
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  observed = false;

  // biome-ignore lint/suspicious/noThenProperty: a promise itself, which only notes that it was looked at
  override then<R1 = T, R2 = never>(
    onFulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    this.observed = true;
    return super.then(onFulfilled, onRejected);
  }
}
