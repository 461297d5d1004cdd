import type { Inbox } from '../inbox/inbox.js';
import type { DurableInboxOptions } from '../inbox/lease.js';
import type { OpenTransaction } from './held-back.js';
import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from './types.js';

/** A stored snapshot of an aggregate's state. */
export interface Snapshot<S = unknown> {
  readonly streamId: string;
  /** Version of the last event folded into `state`. */
  readonly version: number;
  /** Version of the state's shape; a snapshot of another shape is ignored. */
  readonly schemaVersion: number;
  readonly state: S;
  readonly time: string;
}

/** An event a subscription gave up on, kept for inspection and replay. */
export interface ParkedEvent {
  readonly subscription: string;
  readonly event: RecordedEvent;
  readonly error: string;
  readonly attempts: number;
  readonly parkedAt: string;
}

/** A batch read after a position. */
export interface ReadAfterResult {
  readonly events: RecordedEvent[];
  /**
   * True when events exist beyond what could be returned because a transaction that may still add
   * earlier positions is open (PostgreSQL): read again soon rather than wait for a notification.
   */
  readonly held: boolean;
}

/** Options of {@link EventStoreBackend.horizon}. */
export interface HorizonOptions {
  /**
   * An end of this call's own, covering every event committed before it (a read's end); without it a
   * backend may answer with an end it fixed for an earlier call still being retried (a subscription's
   * start). @default false
   */
  readonly fresh?: boolean;
  /** Stops waiting for the end to be final; the call then rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /**
   * `false`: no wait for transactions still open; the answer is the last position final now, before
   * the first event any of them could still add (an end no later than the waited one, so a
   * subscription starting there misses nothing). A backend whose end is always final at once may
   * ignore it. @default true
   */
  readonly wait?: boolean;
}

/**
 * Where an event store keeps its events, checkpoints, parked events and snapshots. Implemented by the
 * memory, SQLite and PostgreSQL backends, and checked by one contract suite (`testEventStore`).
 * Positions start above 0, so 0n means "before the first event".
 */
export interface EventStoreBackend {
  readonly name: string;
  /** Creates or migrates the storage. */
  open(): Promise<void>;
  /**
   * Appends `events` atomically at the end of the stream, enforcing `expected` inside the database.
   * When every event id is already in the stream, returns the recorded result without writing.
   * Throws `ConcurrencyError` or `DuplicateEventIdError`. Takes events already checked and encoded
   * (`prepareAppend`, by `EventStore.append`): it checks nothing itself, so user input goes through
   * an `EventStore`, or through a backend method that prepares it the same way (`appendInTransaction`).
   */
  append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult>;
  readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]>;
  /**
   * Up to `limit` events with a position above `after`, in position order, restricted to `types` when
   * given. Returns only final positions: no event can later appear at a position below the last one returned.
   * A backend that waits before answering (PostgreSQL, for this process's own commits to become
   * final) stops waiting when `signal` aborts, rejecting with its reason.
   */
  readAfter(
    after: bigint,
    limit: number,
    types: readonly string[] | undefined,
    signal?: AbortSignal,
  ): Promise<ReadAfterResult>;
  /** The highest position that is final now: a subscription from `'end'` starts after it. */
  horizon(options?: HorizonOptions): Promise<bigint>;
  /** Final events with a position above `position` (a subscription's lag). */
  countAfter(position: bigint): Promise<number>;
  /** The oldest open transaction, which holds reads in global order back: for readiness checks (PostgreSQL only). */
  oldestOpenTransaction?(): Promise<OpenTransaction | undefined>;
  /** Calls `listener` whenever events may have been appended, by this process or another. Returns an unsubscribe function. */
  watch(listener: () => void): () => void;

  loadCheckpoint(subscription: string): Promise<bigint | undefined>;
  saveCheckpoint(subscription: string, position: bigint): Promise<void>;

  /**
   * Takes the subscription's lease for `owner`, or extends the one `owner` holds, until `ttlMs` from
   * now. A lease another owner holds and has not let expire is left alone, unless that owner is
   * `replacing` (known to be dead). Resolves the owner holding the lease afterwards: `owner` when
   * the claim succeeded, `''` when unknown. The lease makes one instance at a time run a name.
   */
  claimSubscription(subscription: string, owner: string, ttlMs: number, replacing?: string): Promise<string>;
  /**
   * Gives up the lease if `owner` holds it, and then tells {@link watchLeases} listeners so (before
   * it resolves, where that takes a write: a NOTIFY).
   */
  releaseSubscription(subscription: string, owner: string): Promise<void>;
  /**
   * Calls `listener` with a subscription's name when its lease was given up by
   * {@link releaseSubscription}: through this backend, through others on the same storage in this
   * process, and through other processes where the backend can tell (PostgreSQL: LISTEN/NOTIFY).
   * Standbys claim the lease then instead of on their next poll. Returns an unsubscribe function.
   * Optional: without it, standbys find a released lease on their poll only.
   */
  watchLeases?(listener: (subscription: string) => void): () => void;

  park(parked: ParkedEvent): Promise<void>;
  listParked(subscription: string, limit: number): Promise<ParkedEvent[]>;
  unpark(subscription: string, position: bigint): Promise<void>;

  loadSnapshot(streamId: string): Promise<Snapshot | undefined>;
  /**
   * Stores `snapshot` in place of the stream's stored one, unless that one is of the same
   * `schemaVersion` and a later `version` (a slow save of an older state must not replace a newer
   * one): then it keeps the stored one.
   */
  saveSnapshot(snapshot: Snapshot): Promise<void>;

  /** An inbox for idempotent bus consumers kept in the same storage (durable where the backend is). */
  inbox(options?: DurableInboxOptions): Inbox;

  close(): Promise<void>;
}
