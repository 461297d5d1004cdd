import { type Inbox, MemoryInbox } from '../../inbox/inbox.js';
import { endOfTurn } from '../../time/end-of-turn.js';
import type { EventStoreBackend, ParkedEvent, ReadAfterResult, Snapshot } from '../backend.js';
import { ConcurrencyError, DuplicateEventIdError } from '../errors.js';
import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../types.js';
import { expectedVersionHolds, selectStreamEvents } from '../versions.js';

const stores = new Map<string, MemoryEventStoreBackend>();

/** One batch of {@link MemoryEventStoreBackend.appendAll}. */
export interface MemoryAppend {
  readonly streamId: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ExpectedVersion;
}

/** An event as kept in memory: data and metadata as JSON text, as a database keeps them. */
interface StoredEvent extends Omit<RecordedEvent, 'data' | 'metadata'> {
  readonly data: string;
  readonly metadata: string;
}

/** A parked event as kept in memory, its event as {@link StoredEvent}. */
interface StoredParkedEvent extends Omit<ParkedEvent, 'event'> {
  readonly event: StoredEvent;
}

/** A fresh copy for each reader, as a database hands out: readers may change theirs freely. */
function materialize(event: StoredEvent): RecordedEvent {
  return { ...event, data: JSON.parse(event.data), metadata: JSON.parse(event.metadata) };
}

/**
 * Events in process memory: the embedded default for tests and demos. Appends are synchronous, so
 * positions (1, 2, 3…) follow commit order. Data and metadata are kept as JSON text, as a database
 * keeps them, and every read parses a fresh copy: neither the appender's objects nor a reader
 * changing what it read can change history, and values read back have the types SQLite and
 * PostgreSQL give (a Date appended reads back as its ISO string). The checks of what can be stored
 * are `EventStore`'s, the same for every backend.
 */
export class MemoryEventStoreBackend implements EventStoreBackend {
  readonly name = 'memory';
  readonly #all: StoredEvent[] = [];
  readonly #streams = new Map<string, StoredEvent[]>();
  readonly #checkpoints = new Map<string, bigint>();
  readonly #leases = new Map<string, { owner: string; expiresAt: number }>();
  /** Parked events by subscription and position, their events kept as JSON text (see {@link listParked}). */
  readonly #parked = new Map<string, Map<bigint, StoredParkedEvent>>();
  readonly #snapshots = new Map<string, string>();
  readonly #watchers = new Set<() => void>();
  readonly #leaseWatchers = new Set<(subscription: string) => void>();
  #inbox: MemoryInbox | undefined;

  /** The process-wide store called `name` (`memory://name`), created on first use. */
  static named(name: string): MemoryEventStoreBackend {
    let store = stores.get(name);
    if (store === undefined) {
      store = new MemoryEventStoreBackend();
      stores.set(name, store);
    }
    return store;
  }

  async open(): Promise<void> {}

  async append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    // Written at the end of the turn it was called in, as SQLite commits the appends of a turn (and as
    // PostgreSQL's is seen a round trip later): a read called meanwhile does not see it on any
    // backend, so code that reads before its append resolved fails here as it would there.
    await endOfTurn();
    const [result] = this.appendAll([{ streamId, events, expected }]);
    return result!;
  }

  /**
   * Appends several batches all or none, in order (a unit of work's appends at its commit): each is
   * checked as `append` checks it, against the streams as the earlier ones of the call leave them,
   * and nothing is written unless every one passes. Synchronous, so no other append interleaves.
   * @throws ConcurrencyError, DuplicateEventIdError
   */
  appendAll(appends: readonly MemoryAppend[]): AppendResult[] {
    // Checked first against the streams plus what earlier batches of this call add to them.
    const added = new Map<string, { ids: Set<string>; count: number }>();
    const plans: (
      | { readonly written: false; readonly result: AppendResult }
      | { readonly written: true; readonly current: number }
    )[] = [];
    for (const { streamId, events, expected } of appends) {
      const pending = added.get(streamId);
      const plan = this.#plan(streamId, events, expected, pending);
      plans.push(plan);
      if (!plan.written) continue;
      const entry = pending ?? { ids: new Set<string>(), count: 0 };
      for (const e of events) entry.ids.add(e.id);
      entry.count += events.length;
      added.set(streamId, entry);
    }
    const time = new Date().toISOString();
    const results = appends.map(({ streamId, events }, n): AppendResult => {
      const plan = plans[n]!;
      if (!plan.written) return plan.result;
      const stream = this.#streams.get(streamId) ?? [];
      const recorded = events.map(
        (e, i): StoredEvent => ({
          streamId,
          version: plan.current + 1 + i,
          position: BigInt(this.#all.length + 1 + i),
          id: e.id,
          type: e.type,
          data: JSON.stringify(e.data ?? null),
          metadata: JSON.stringify(e.metadata),
          time,
        }),
      );
      this.#all.push(...recorded);
      stream.push(...recorded);
      this.#streams.set(streamId, stream);
      const last = recorded[recorded.length - 1]!;
      return { nextExpectedVersion: last.version, position: last.position };
    });
    if (plans.some((p) => p.written)) {
      queueMicrotask(() => {
        for (const watcher of this.#watchers) watcher();
      });
    }
    return results;
  }

  /**
   * What appending would do now, without writing: the recorded result when every id is stored (a
   * retry, which writes nothing), `undefined` when the append would write. Throws what the append
   * would throw (`DuplicateEventIdError`, `ConcurrencyError`).
   */
  checkAppend(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): AppendResult | undefined {
    const plan = this.#plan(streamId, events, expected, undefined);
    return plan.written ? undefined : plan.result;
  }

  /** One append of {@link appendAll} checked against the stream plus `pending`, what the call adds before it. */
  #plan(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    pending: { readonly ids: ReadonlySet<string>; readonly count: number } | undefined,
  ):
    | { readonly written: false; readonly result: AppendResult }
    | { readonly written: true; readonly current: number } {
    const stream = this.#streams.get(streamId) ?? [];
    const existing = events.map((e) => stream.find((r) => r.id === e.id));
    if (pending === undefined && existing.every((r) => r !== undefined)) {
      // The latest of them: what their append returned, in whatever order they come again.
      const last = existing.reduce((a, b) => (b!.version > a!.version ? b : a))!;
      return { written: false, result: { nextExpectedVersion: last.version, position: last.position } };
    }
    const duplicates = events
      .filter((e, i) => existing[i] !== undefined || pending?.ids.has(e.id) === true)
      .map((e) => e.id);
    if (duplicates.length > 0) throw new DuplicateEventIdError(streamId, duplicates);
    const current = stream.length - 1 + (pending?.count ?? 0);
    if (!expectedVersionHolds(expected, current)) throw new ConcurrencyError(streamId, expected, current);
    return { written: true, current };
  }

  /** Position of the last event appended, 0n when there is none. */
  lastPosition(): bigint {
    return BigInt(this.#all.length);
  }

  /** Version of a stream's last event, -1 when there is none. */
  currentVersion(streamId: string): number {
    return (this.#streams.get(streamId)?.length ?? 0) - 1;
  }

  async readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    return selectStreamEvents(this.#streams.get(streamId) ?? [], options).map(materialize);
  }

  async readAfter(
    after: bigint,
    limit: number,
    types: readonly string[] | undefined,
  ): Promise<ReadAfterResult> {
    const events: RecordedEvent[] = [];
    const wanted = types === undefined ? undefined : new Set(types);
    // Positions are 1-based indexes into #all.
    for (let i = Number(after); i < this.#all.length && events.length < limit; i++) {
      const event = this.#all[i]!;
      if (wanted === undefined || wanted.has(event.type)) events.push(materialize(event));
    }
    return { events, held: false };
  }

  async horizon(): Promise<bigint> {
    return BigInt(this.#all.length);
  }

  async countAfter(position: bigint): Promise<number> {
    return Math.max(0, this.#all.length - Number(position));
  }

  watch(listener: () => void): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  async loadCheckpoint(subscription: string): Promise<bigint | undefined> {
    return this.#checkpoints.get(subscription);
  }

  async saveCheckpoint(subscription: string, position: bigint): Promise<void> {
    this.#checkpoints.set(subscription, position);
  }

  async claimSubscription(
    subscription: string,
    owner: string,
    ttlMs: number,
    replacing?: string,
  ): Promise<string> {
    const now = Date.now();
    const lease = this.#leases.get(subscription);
    if (lease !== undefined && lease.owner !== owner && lease.owner !== replacing && lease.expiresAt > now) {
      return lease.owner;
    }
    this.#leases.set(subscription, { owner, expiresAt: now + ttlMs });
    return owner;
  }

  async releaseSubscription(subscription: string, owner: string): Promise<void> {
    if (this.#leases.get(subscription)?.owner !== owner) return;
    this.#leases.delete(subscription);
    for (const listener of this.#leaseWatchers) listener(subscription);
  }

  watchLeases(listener: (subscription: string) => void): () => void {
    this.#leaseWatchers.add(listener);
    return () => this.#leaseWatchers.delete(listener);
  }

  async park(parked: ParkedEvent): Promise<void> {
    let list = this.#parked.get(parked.subscription);
    if (list === undefined) {
      list = new Map();
      this.#parked.set(parked.subscription, list);
    }
    const { event } = parked;
    list.set(event.position, {
      ...parked,
      event: { ...event, data: JSON.stringify(event.data), metadata: JSON.stringify(event.metadata) },
    });
  }

  /**
   * Fresh copies, as for every read: a handler replaying a parked event and writing to it changed
   * the parked event itself (what the next listing and replay handed out), and a `position` written
   * to made a replay that failed look done.
   */
  async listParked(subscription: string, limit: number): Promise<ParkedEvent[]> {
    return [...(this.#parked.get(subscription)?.values() ?? [])]
      .sort((a, b) => (a.event.position < b.event.position ? -1 : 1))
      .slice(0, limit)
      .map((parked) => ({ ...parked, event: materialize(parked.event) }));
  }

  async unpark(subscription: string, position: bigint): Promise<void> {
    this.#parked.get(subscription)?.delete(position);
  }

  async loadSnapshot(streamId: string): Promise<Snapshot | undefined> {
    const json = this.#snapshots.get(streamId);
    // A copy each time: the caller may evolve the state in place.
    return json === undefined ? undefined : JSON.parse(json);
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    const json = this.#snapshots.get(snapshot.streamId);
    if (json !== undefined && !replacesSnapshot(snapshot, JSON.parse(json) as Snapshot)) return;
    this.#snapshots.set(snapshot.streamId, JSON.stringify(snapshot));
  }

  /** A process-memory inbox, one per store (options of durable inboxes do not apply). */
  inbox(): Inbox {
    this.#inbox ??= new MemoryInbox();
    return this.#inbox;
  }

  /**
   * Nothing to release. A named backend is shared by every store opened on `memory://name` in the
   * process: closing one store leaves the others' watchers (each subscription removes its own when
   * it closes), so their subscriptions still wake at once.
   */
  async close(): Promise<void> {}
}

/** Whether `snapshot` takes the place of `stored` (see {@link EventStoreBackend.saveSnapshot}). */
function replacesSnapshot(snapshot: Snapshot, stored: Snapshot): boolean {
  return snapshot.schemaVersion !== stored.schemaVersion || snapshot.version >= stored.version;
}
