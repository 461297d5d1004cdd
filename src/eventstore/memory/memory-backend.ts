import { type Inbox, MemoryInbox } from '../../inbox/inbox.js';
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

/** An event as kept in memory: data and metadata as JSON text, as a database keeps them. */
interface StoredEvent extends Omit<RecordedEvent, 'data' | 'metadata'> {
  readonly data: string;
  readonly metadata: string;
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
  readonly #parked = new Map<string, Map<bigint, ParkedEvent>>();
  readonly #snapshots = new Map<string, string>();
  readonly #watchers = new Set<() => void>();
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
    const stream = this.#streams.get(streamId) ?? [];
    const existing = events.map((e) => stream.find((r) => r.id === e.id));
    if (existing.every((r) => r !== undefined)) {
      const last = existing[existing.length - 1]!;
      return { nextExpectedVersion: last.version, position: last.position };
    }
    const duplicates = existing.filter((r) => r !== undefined).map((r) => r.id);
    if (duplicates.length > 0) throw new DuplicateEventIdError(streamId, duplicates);
    const current = stream.length - 1;
    if (!expectedVersionHolds(expected, current)) throw new ConcurrencyError(streamId, expected, current);
    const time = new Date().toISOString();
    const recorded = events.map(
      (e, i): StoredEvent => ({
        streamId,
        version: current + 1 + i,
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
    queueMicrotask(() => {
      for (const watcher of this.#watchers) watcher();
    });
    return { nextExpectedVersion: last.version, position: last.position };
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
    if (this.#leases.get(subscription)?.owner === owner) this.#leases.delete(subscription);
  }

  async park(parked: ParkedEvent): Promise<void> {
    let list = this.#parked.get(parked.subscription);
    if (list === undefined) {
      list = new Map();
      this.#parked.set(parked.subscription, list);
    }
    list.set(parked.event.position, parked);
  }

  async listParked(subscription: string, limit: number): Promise<ParkedEvent[]> {
    return [...(this.#parked.get(subscription)?.values() ?? [])]
      .sort((a, b) => (a.event.position < b.event.position ? -1 : 1))
      .slice(0, limit);
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
    this.#snapshots.set(snapshot.streamId, JSON.stringify(snapshot));
  }

  /** A process-memory inbox, one per store (options of durable inboxes do not apply). */
  inbox(): Inbox {
    this.#inbox ??= new MemoryInbox();
    return this.#inbox;
  }

  async close(): Promise<void> {
    this.#watchers.clear();
  }
}
