import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import type { Inbox } from '../inbox/inbox.js';
import { DURABLE_INBOX_OPTION_NAMES, type DurableInboxOptions } from '../inbox/lease.js';
import { type Logger, stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import { keepingAlive } from '../time/keep-alive.js';
import type { EventStoreBackend, Snapshot } from './backend.js';
import { closingInbox } from './closing-inbox.js';
import { EventStoreClosedError, InvalidEventError, UnitOfWorkUnsupportedError } from './errors.js';
import { encodeJson, JsonEncodingProblem } from './event-encoding.js';
import { insideHandlerOf } from './handler-frame.js';
import { insideUnitOnBackend } from './open-units.js';
import { OwnAppends } from './own-appends.js';
import { assertReadStream, assertStreamId, isCount, prepareAppend } from './prepare-append.js';
import { type EventHandler, EventSubscription, type EventSubscriptionOptions } from './subscription.js';
import { assertEventTypes } from './subscription-options.js';
import type {
  AppendOptions,
  AppendResult,
  EventData,
  ReadAllOptions,
  ReadStreamOptions,
  RecordedEvent,
} from './types.js';

// Positions are PostgreSQL bigints.
const MAX_POSITION = 2n ** 63n - 1n;

/** Options of {@link EventStore}. */
export interface EventStoreOptions {
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

/**
 * An event store: streams of events with versions and optimistic concurrency, a global order, and
 * durable catch-up subscriptions, over a backend (memory, SQLite, PostgreSQL). Create it with
 * `createEventStore`.
 *
 * @example
 * const { nextExpectedVersion } = await store.append('order-42', [{ type: 'OrderPlaced', data: { total: 10 } }], { expectedVersion: 'no_stream' });
 * const events = await store.readStream('order-42');
 */
export class EventStore {
  readonly backend: EventStoreBackend;
  readonly #logger: Logger;
  readonly #subscriptions = new Set<EventSubscription>();
  readonly #dependents = new Set<CloseDependent>();
  #closing: Promise<void> | undefined;
  /** readAll() calls under way: close() ends their waits. */
  readonly #reads = new Set<AbortController>();
  /** While close() waits for the subscriptions' handlers in progress, which may still use the store. */
  #drainingSubscriptions = false;
  /** Appends through this store, for `from: 'end'` subscriptions fixing their start. */
  readonly #ownAppends = new OwnAppends();

  constructor(backend: EventStoreBackend, options: EventStoreOptions = {}) {
    this.backend = backend;
    this.#logger = loggerOption('the event store', options.logger) ?? stderrLogger;
  }

  #assertOpen(): void {
    if (this.refusing) throw new EventStoreClosedError();
  }

  /**
   * @internal Whether a call now is refused: once `close()` has been called, except from inside a
   * handler of this store's subscriptions while close() waits for them.
   */
  get refusing(): boolean {
    return this.#closing !== undefined && !(this.#drainingSubscriptions && insideHandlerOf(this.backend));
  }

  /**
   * Appends events atomically to the end of a stream. With `expectedVersion` the append succeeds only
   * if the stream is in that state, checked inside the database; otherwise it rejects with
   * `ConcurrencyError` and writes nothing. Re-appending events whose ids the stream already holds
   * writes nothing and returns the original result, so a retried append is safe.
   *
   * Checked before any backend sees them, the same on every backend (else `InvalidEventError`, code
   * `INVALID_EVENT`, naming the field and the reason, and nothing is written): the stream id and each
   * type are non-empty, well-formed strings (no lone surrogate) without NUL, of at most 500 and 200
   * UTF-16 code units; `expectedVersion` is absent, `'any'`, `'no_stream'`, `'stream_exists'` or a
   * safe integer ≥ -1 (-1: no stream); data and metadata are stored as their JSON round trip (what a
   * reader gets back, on every backend), so they must have one: no BigInt, cycle, top-level function
   * or symbol, NUL or lone surrogate in a string or key, nesting deeper than 100; metadata is a plain
   * object once its `toJSON`, if any, has run (not an array, Date, Map or class instance).
   */
  async append(
    streamId: string,
    events: readonly EventData[],
    options: AppendOptions = {},
  ): Promise<AppendResult> {
    this.#assertOpen();
    checkOptions('append', options, ['expectedVersion']);
    const prepared = prepareAppend(streamId, events, options.expectedVersion);
    if (insideUnitOnBackend(this.backend)) {
      throw new UnitOfWorkUnsupportedError(
        'store.append inside a unit of work on the same store would commit apart from it, whether or not the unit of work commits (on SQLite it would wait for the lock the unit of work holds): append through the unit of work (work.append, or handleIn)',
      );
    }
    const result = this.backend.append(streamId, prepared.events, prepared.expected);
    this.#ownAppends.begun(result, prepared.events.length);
    return result;
  }

  /**
   * Events of one stream in version order (or backward). An absent stream reads as empty. A bad
   * stream id, `fromVersion` or `limit` (non-negative safe integers) or `direction` rejects with
   * `INVALID_EVENT`.
   */
  async readStream(streamId: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    this.#assertOpen();
    checkOptions('readStream', options, ['fromVersion', 'limit', 'direction']);
    assertReadStream(streamId, options);
    return this.backend.readStream(streamId, options);
  }

  /**
   * Every event committed before the call, in global order, fetched in batches. Only final positions
   * are returned: an event still being committed by another transaction at an earlier position is
   * waited for, never skipped. On PostgreSQL a transaction with an id open anywhere in the cluster
   * (even in another database) holds back the events committed after it began, since it might still
   * commit below them: those committed before it began are yielded at once, then the read waits up
   * to the backend's `horizonWaitMs` for it to end, and rejects with `ReadHeldBackError`
   * (`READ_HELD_BACK`, naming it) rather than end early. Memory and SQLite never hold a read back.
   * Invalid options reject the first `next()` with `InvalidOptionsError` (code `INVALID_OPTIONS`):
   * `fromPosition` is a bigint from 0n (0n and 1n both mean the beginning) to 2^63-1, `types` an
   * array of valid event types, `batchSize` a positive safe integer.
   */
  async *readAll(options: ReadAllOptions = {}): AsyncGenerator<RecordedEvent, void, undefined> {
    this.#assertOpen();
    checkOptions('readAll', options, ['fromPosition', 'types', 'batchSize']);
    const batchSize = options.batchSize ?? 500;
    if (!isCount(batchSize) || batchSize < 1)
      throw new InvalidOptionsError(
        `batchSize must be a positive safe integer, not ${describeValue(batchSize)}`,
      );
    const from = options.fromPosition;
    if (from !== undefined && (typeof from !== 'bigint' || from < 0n || from > MAX_POSITION)) {
      throw new InvalidOptionsError(
        `fromPosition must be a bigint from 0n to 2^63-1, not ${describeValue(from)}`,
      );
    }
    if (options.types !== undefined) assertEventTypes(options.types);
    let after = from === undefined || from === 0n ? 0n : from - 1n;
    // The end is fixed now (the backend's horizon(): every event committed before this call is at or
    // below it) but waited for only when needed: what readAfter returns is final and is yielded at
    // once. Only when it says later positions exist but are held back (PostgreSQL: a transaction open
    // somewhere in the cluster may still commit below them) does the read wait for the end to be
    // final, up to the backend's horizonWaitMs; then it rejects with ReadHeldBackError
    // (READ_HELD_BACK) naming the oldest such transaction, rather than end early as if complete.
    // Events committed before that transaction began are read before it is waited for.
    const stop = new AbortController();
    // close() aborts it too: a read waiting for held-back positions ends with the store.
    this.#reads.add(stop);
    const endCall = this.backend.horizon({ fresh: true, signal: stop.signal });
    let end: bigint | undefined;
    let endError: unknown;
    let endSettled = false;
    endCall.then(
      (position) => {
        end = position;
        endSettled = true;
      },
      (error: unknown) => {
        endError = error;
        endSettled = true;
      },
    );
    try {
      for (;;) {
        // An iterator begun before close() reads no further batch after it, on every backend.
        this.#assertOpen();
        const { events, held } = await this.backend.readAfter(after, batchSize, options.types, stop.signal);
        for (const event of events) {
          if (end !== undefined && event.position > end) return;
          this.#assertOpen();
          yield event;
        }
        if (events.length > 0) after = events[events.length - 1]!.position;
        if (events.length === batchSize) continue;
        // Nothing held back: every event stored has been read. Once the end is final, so is every
        // position up to it: what is held back lies beyond it.
        if (!held || end !== undefined) return;
        if (!endSettled) await endCall.catch(() => {});
        if (endError !== undefined) throw endError;
      }
    } catch (error) {
      // Whatever the backend made of a close under way (pg: "Cannot use a pool after calling end"),
      // the read ends as every call on a closed store does.
      if (this.closed) throw new EventStoreClosedError();
      throw error;
    } finally {
      // Done (or given up by the caller) before the end was needed: stop waiting for it.
      stop.abort();
      this.#reads.delete(stop);
    }
  }

  /**
   * Starts a named, durable catch-up subscription: every event after its checkpoint, in global order,
   * then new ones as they are appended. The handler runs at least once per event; one that keeps
   * failing parks its event and the subscription goes on.
   */
  subscribe(options: EventSubscriptionOptions, handler: EventHandler): EventSubscription {
    // Refused from a handler close() waits for too: close() would never stop what starts now, which
    // ran on against the closed backend and kept the process alive.
    if (this.closed) throw new EventStoreClosedError();
    const subscription = new EventSubscription(
      this.backend,
      options,
      handler,
      this.#logger,
      () => this.refusing,
      this.#ownAppends,
    );
    this.#subscriptions.add(subscription);
    void subscription.done.finally(() => this.#subscriptions.delete(subscription));
    return subscription;
  }

  /** The latest snapshot of a stream, if any. */
  async loadSnapshot<S>(streamId: string): Promise<Snapshot<S> | undefined> {
    this.#assertOpen();
    assertStreamId(streamId);
    return this.backend.loadSnapshot(streamId) as Promise<Snapshot<S> | undefined>;
  }

  /**
   * Stores a snapshot of a stream's state as of `version`, replacing the previous one unless that one
   * is of the same `schemaVersion` and a later `version` (then it is kept: a slow save of an older
   * state never replaces a newer one). The state is stored as its JSON round trip, with the rules of
   * event data (else `INVALID_EVENT`).
   */
  async saveSnapshot<S>(snapshot: Omit<Snapshot<S>, 'time'>): Promise<void> {
    this.#assertOpen();
    if (typeof snapshot !== 'object' || snapshot === null || Array.isArray(snapshot)) {
      throw new InvalidOptionsError(
        `saveSnapshot needs { streamId, version, schemaVersion, state }, not ${describeValue(snapshot)}`,
      );
    }
    assertStreamId(snapshot.streamId);
    if (!isCount(snapshot.version))
      throw new InvalidEventError(
        `snapshot version must be a non-negative safe integer, not ${describeValue(snapshot.version)}`,
      );
    // PostgreSQL keeps it in an integer column: the same range on every backend, from 0 as
    // CommandHandler's `snapshots.schemaVersion`.
    if (
      !Number.isInteger(snapshot.schemaVersion) ||
      snapshot.schemaVersion < 0 ||
      snapshot.schemaVersion > 2_147_483_647
    )
      throw new InvalidEventError(
        `snapshot schemaVersion must be an integer from 0 to 2147483647, not ${describeValue(snapshot.schemaVersion)}`,
      );
    const state = encodeJson(snapshot.state ?? null);
    if (state instanceof JsonEncodingProblem)
      throw new InvalidEventError(
        `snapshot state of stream ${describeValue(snapshot.streamId)}: ${state.message}`,
        { cause: state.cause },
      );
    return this.backend.saveSnapshot({
      streamId: snapshot.streamId,
      version: snapshot.version,
      schemaVersion: snapshot.schemaVersion,
      state,
      time: new Date().toISOString(),
    });
  }

  /**
   * An inbox for idempotent consumers of the message bus, kept in this store's database: processed
   * message ids survive restarts and are shared by every instance on SQLite and PostgreSQL (in
   * process memory for the memory backend).
   *
   * @example
   * const bus = await createBus({ url, service: 'payments', inbox: store.inbox() });
   */
  inbox(options?: DurableInboxOptions): Inbox {
    // Not from a handler close() waits for either: an inbox outlives the close, which it cannot.
    if (this.closed) throw new EventStoreClosedError();
    // Here too, not only where a durable backend reads them: the memory inbox takes none of them,
    // and a misspelt option must fail in tests on memory as it would in production on SQLite.
    checkOptions('store.inbox', options, DURABLE_INBOX_OPTION_NAMES);
    return closingInbox(this.backend.inbox(options), () => this.closed);
  }

  /**
   * @internal What `close()` ends before it closes the backend (an outbox: its units of work called
   * before close(), then its relay), and asks first whether it may close at all (not from inside one
   * of those units of work, which it would wait for).
   */
  closeWith(dependent: CloseDependent): void {
    this.#dependents.add(dependent);
  }

  /** True once `close()` has been called: every later call rejects with `EventStoreClosedError`. */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Stops every subscription (after the event each is handling), closes the outboxes made on this
   * store (after the units of work called before, retries included), then closes the backend.
   * Idempotent. Rejects, closing nothing, when called inside a unit of work of one of its outboxes.
   */
  close(): Promise<void> {
    for (const dependent of this.#dependents) {
      const refusal = dependent.refuseClose();
      if (refusal !== undefined) return Promise.reject(refusal);
    }
    this.#closing ??= keepingAlive(async () => {
      for (const read of this.#reads) read.abort(new EventStoreClosedError());
      this.#drainingSubscriptions = true;
      try {
        await Promise.all([...this.#subscriptions].map((s) => s.close()));
      } finally {
        this.#drainingSubscriptions = false;
      }
      await Promise.all([...this.#dependents].map((d) => d.close()));
      await this.backend.close();
    });
    return this.#closing;
  }
}

/** @internal Something made on a store that must end before its backend closes: see `EventStore.closeWith`. */
export interface CloseDependent {
  /** Why the store may not close now (`undefined`: it may). */
  refuseClose(): Error | undefined;
  close(): Promise<void>;
}
