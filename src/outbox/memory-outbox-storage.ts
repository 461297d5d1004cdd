import { storableText } from '../errors/storable-text.js';
import { ConcurrencyError, DuplicateEventIdError } from '../eventstore/errors.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import type {
  AppendResult,
  ExpectedVersion,
  PreparedEvent,
  ReadStreamOptions,
  RecordedEvent,
} from '../eventstore/types.js';
import { expectedVersionHolds, selectStreamEvents } from '../eventstore/versions.js';
import { DuplicateMessageIdError, SagaConcurrencyError, UnitOfWorkUnsupportedError } from './errors.js';
import type {
  OutboxBacklog,
  OutboxInsert,
  OutboxRow,
  OutboxStorage,
  SagaRow,
  SagaStatus,
  StorageAppendResult,
  StorageTransaction,
} from './storage.js';

interface StoredRow {
  readonly seq: bigint;
  readonly id: string;
  readonly key: string;
  readonly envelope: string;
  state: 'pending' | 'failed';
  attempts: number;
  readonly createdAt: number;
  dueAt: number;
  leaseOwner: string | undefined;
  leaseUntil: number;
  /** Published and held by `leaseOwner` until its message is settled (see `OutboxStorage.hold`). */
  held: boolean;
  lastError: string | undefined;
}

/** Held by a relay whose lease runs: published, and no longer holding back the rows of its key. */
function isHeld(row: StoredRow, now: number): boolean {
  return row.held && row.leaseUntil >= now;
}

/**
 * A message scheduled for later (`work.schedule`) and not yet attempted: what `scheduled()` lists and
 * `cancel` may delete. A plain message, or one waiting for a retry, is not.
 */
function isScheduled(row: StoredRow): boolean {
  return row.dueAt > row.createdAt && row.lastError === undefined;
}

/** Scheduled for later and not yet due at `now`: it holds back nothing of its key until then. */
function isWaitingTimer(row: StoredRow, now: number): boolean {
  return isScheduled(row) && row.dueAt > now;
}

/** Being sent at `now` (leased, not held): the highest `seq` of each key that has such a row. */
function sending(rows: Iterable<StoredRow>, now: number): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const row of rows) {
    if (row.state === 'pending' && row.leaseOwner !== undefined && !row.held && row.leaseUntil >= now) {
      out.set(row.key, row.seq);
    }
  }
  return out;
}

/**
 * The rows of `rows` (in `seq` order) that may go once due: the oldest row of its key not held,
 * whatever its state, leaving out messages scheduled for later and not yet due, which are heads too.
 * A scheduled message takes its place in its key's order when it falls due: until then it holds
 * back nothing, and once due it waits for a message of its key committed after it that is being
 * sent (looked for only when a scheduled row comes up).
 */
function* keyHeads(rows: ReadonlyMap<bigint, StoredRow>, now: number): Generator<StoredRow> {
  const seenKeys = new Set<string>();
  let inFlight: Map<string, bigint> | undefined;
  for (const row of rows.values()) {
    if (seenKeys.has(row.key) || isHeld(row, now)) continue;
    if (!isWaitingTimer(row, now)) seenKeys.add(row.key);
    if (isScheduled(row)) {
      inFlight ??= sending(rows.values(), now);
      if ((inFlight.get(row.key) ?? -1n) > row.seq) continue;
    }
    yield row;
  }
}

const storages = new WeakMap<MemoryEventStoreBackend, MemoryOutboxStorage>();

function toRow(r: StoredRow): OutboxRow {
  return {
    seq: r.seq,
    id: r.id,
    key: r.key,
    envelope: r.envelope,
    state: r.state,
    attempts: r.attempts,
    createdAt: r.createdAt,
    dueAt: r.dueAt,
    lastError: r.lastError,
  };
}

/**
 * The outbox of a memory event store: for tests, the test harness and the embedded shop, with the
 * semantics of the SQL ones. Units of work run one at a time; their writes are buffered and applied
 * at commit, all at once (a synchronous step, so nothing interleaves), or dropped on rollback.
 */
export class MemoryOutboxStorage implements OutboxStorage {
  readonly name = 'memory';
  readonly #events: MemoryEventStoreBackend;
  /** Rows by seq, in seq order (a Map keeps insertion order). */
  readonly #rows = new Map<bigint, StoredRow>();
  readonly #byId = new Map<string, StoredRow>();
  readonly #handled = new Map<string, number>();
  readonly #sagas = new Map<string, SagaRow>();
  #seq = 0n;
  /** The tail of the queue of units of work. */
  #last: Promise<unknown> = Promise.resolve();

  constructor(events: MemoryEventStoreBackend = new MemoryEventStoreBackend()) {
    this.#events = events;
  }

  /** The one storage of a memory event store backend (every `memory://name` store shares it). */
  static of(events: MemoryEventStoreBackend): MemoryOutboxStorage {
    let storage = storages.get(events);
    if (storage === undefined) {
      storage = new MemoryOutboxStorage(events);
      storages.set(events, storage);
    }
    return storage;
  }

  transaction<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    const run = this.#last.then(() => this.#run(work));
    this.#last = run.catch(() => {});
    return run;
  }

  async #run<T>(work: (tx: StorageTransaction) => Promise<T>): Promise<T> {
    const tx = new MemoryTransaction(this, this.#events);
    const result = await work(tx);
    tx.close();
    this.#commit(tx);
    return result;
  }

  appendWithMessages(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    messages: readonly OutboxInsert[],
  ): Promise<AppendResult> {
    return this.transaction(async (tx) => {
      const stored = this.#events.checkAppend(streamId, events, expected);
      // Every id stored already: a retry, which writes and enqueues nothing.
      if (stored !== undefined) return stored;
      const result = await tx.append(streamId, events, expected);
      if (messages.length > 0) await tx.enqueue(messages);
      return result;
    });
  }

  #commit(tx: MemoryTransaction): void {
    // The appends first: the only step that can still fail, and nothing is applied before it passes.
    if (tx.appends.length > 0) this.#events.appendAll(tx.appends);
    for (const id of tx.cancelled) this.#delete(this.#byId.get(id));
    for (const m of tx.enqueued) {
      this.#seq += 1n;
      const row: StoredRow = {
        seq: this.#seq,
        id: m.id,
        key: m.key,
        envelope: m.envelope,
        state: 'pending',
        attempts: 0,
        createdAt: m.createdAt,
        dueAt: m.dueAt,
        leaseOwner: undefined,
        leaseUntil: 0,
        held: false,
        lastError: undefined,
      };
      this.#rows.set(row.seq, row);
      this.#byId.set(row.id, row);
    }
    for (const [key, at] of tx.marks) this.#handled.set(key, at);
    for (const [key, row] of tx.sagaWrites) this.#sagas.set(key, row);
  }

  #delete(row: StoredRow | undefined): void {
    if (row === undefined) return;
    this.#rows.delete(row.seq);
    this.#byId.delete(row.id);
  }

  /** @internal for {@link MemoryTransaction} */
  hasId(id: string): boolean {
    return this.#byId.has(id);
  }
  /** @internal */
  cancellable(id: string, now: number): boolean {
    const row = this.#byId.get(id);
    return (
      row !== undefined &&
      row.state === 'pending' &&
      isScheduled(row) &&
      !(row.leaseOwner !== undefined && row.leaseUntil >= now)
    );
  }
  /** @internal */
  handledAt(key: string): number | undefined {
    return this.#handled.get(key);
  }
  /** @internal */
  saga(key: string): SagaRow | undefined {
    return this.#sagas.get(key);
  }

  async claim(owner: string, now: number, limit: number, leaseMs: number): Promise<OutboxRow[]> {
    const out: OutboxRow[] = [];
    for (const row of keyHeads(this.#rows, now)) {
      if (out.length >= limit) break;
      if (row.state !== 'pending' || row.dueAt > now) continue;
      if (row.leaseOwner !== undefined && row.leaseOwner !== owner && row.leaseUntil >= now) continue;
      row.leaseOwner = owner;
      row.leaseUntil = now + leaseMs;
      row.held = false;
      out.push(toRow(row));
    }
    return out;
  }

  async delivered(owner: string, seqs: readonly bigint[]): Promise<number> {
    let count = 0;
    for (const seq of seqs) {
      const row = this.#rows.get(seq);
      if (row?.leaseOwner !== owner) continue;
      this.#delete(row);
      count++;
    }
    return count;
  }

  async hold(owner: string, seqs: readonly bigint[], until: number): Promise<bigint[]> {
    const held: bigint[] = [];
    for (const seq of seqs) {
      const row = this.#rows.get(seq);
      if (row?.leaseOwner !== owner || row.state !== 'pending') continue;
      row.held = true;
      row.leaseUntil = until;
      held.push(seq);
    }
    return held;
  }

  async retry(owner: string, seq: bigint, error: string, dueAt: number, counted: boolean): Promise<void> {
    const row = this.#rows.get(seq);
    if (row?.leaseOwner !== owner || row.held) return;
    if (counted) row.attempts++;
    row.lastError = storableText(error);
    row.dueAt = dueAt;
    row.leaseOwner = undefined;
    row.leaseUntil = 0;
  }

  async fail(owner: string, seq: bigint, error: string): Promise<void> {
    const row = this.#rows.get(seq);
    if (row?.leaseOwner !== owner || row.held) return;
    row.attempts++;
    row.lastError = storableText(error);
    row.state = 'failed';
    row.leaseOwner = undefined;
    row.leaseUntil = 0;
  }

  async failed(limit: number): Promise<OutboxRow[]> {
    const out: OutboxRow[] = [];
    for (const row of this.#rows.values()) {
      if (out.length >= limit) break;
      if (row.state === 'failed') out.push(toRow(row));
    }
    return out;
  }

  async redrive(ids: readonly string[], now: number): Promise<number> {
    let count = 0;
    for (const id of new Set(ids)) {
      const row = this.#byId.get(id);
      if (row?.state !== 'failed') continue;
      row.state = 'pending';
      row.attempts = 0;
      row.dueAt = now;
      count++;
    }
    return count;
  }

  async discard(ids: readonly string[]): Promise<number> {
    let count = 0;
    for (const id of new Set(ids)) {
      const row = this.#byId.get(id);
      if (row?.state !== 'failed') continue;
      this.#delete(row);
      count++;
    }
    return count;
  }

  async backlog(now: number): Promise<OutboxBacklog> {
    let pending = 0;
    let held = 0;
    let failed = 0;
    let scheduled = 0;
    let oldest: number | undefined;
    for (const row of this.#rows.values()) {
      if (isHeld(row, now)) {
        held++;
        continue;
      }
      if (row.state === 'failed') failed++;
      else if (isScheduled(row) && row.dueAt > now) {
        scheduled++;
        continue;
      } else pending++;
      const since = isScheduled(row) ? row.dueAt : row.createdAt;
      if (oldest === undefined || since < oldest) oldest = since;
    }
    return { pending, held, failed, scheduled, oldestWaitingSince: oldest };
  }

  async nextDue(now: number): Promise<number | undefined> {
    let next: number | undefined;
    for (const row of keyHeads(this.#rows, now)) {
      if (row.state !== 'pending') continue;
      if (row.leaseOwner !== undefined && row.leaseUntil >= now) continue;
      if (next === undefined || row.dueAt < next) next = row.dueAt;
    }
    return next;
  }

  async scheduled(now: number, limit: number, key?: string): Promise<OutboxRow[]> {
    return [...this.#rows.values()]
      .filter(
        (r) =>
          r.state === 'pending' && isScheduled(r) && r.dueAt > now && (key === undefined || r.key === key),
      )
      .sort((a, b) => a.dueAt - b.dueAt || (a.seq < b.seq ? -1 : 1))
      .slice(0, limit)
      .map(toRow);
  }

  async pruneHandled(before: number, limit: number): Promise<number> {
    let count = 0;
    for (const [key, at] of this.#handled) {
      if (count >= limit) break;
      if (at >= before) continue;
      this.#handled.delete(key);
      count++;
    }
    return count;
  }

  async sagas(saga: string, limit: number, status?: SagaStatus): Promise<SagaRow[]> {
    return [...this.#sagas.values()]
      .filter((r) => r.saga === saga && (status === undefined || r.status === status))
      .sort((a, b) => a.updatedAt - b.updatedAt || byCodePoint(a.id, b.id))
      .slice(0, limit);
  }

  watch(): () => void {
    return () => {};
  }
}

/** The order of SQLite's BINARY and PostgreSQL's "C" collation: UTF-8 bytes, so code points. */
function byCodePoint(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function sagaKey(saga: string, id: string): string {
  return JSON.stringify([saga, id]);
}

class MemoryTransaction implements StorageTransaction {
  readonly client = undefined;
  readonly appends: { streamId: string; events: readonly PreparedEvent[]; expected: ExpectedVersion }[] = [];
  readonly enqueued: OutboxInsert[] = [];
  readonly cancelled = new Set<string>();
  readonly marks = new Map<string, number>();
  readonly sagaWrites = new Map<string, SagaRow>();
  /** How many events this transaction appends, by stream: where its later appends land. */
  readonly #added = new Map<string, number>();
  readonly #storage: MemoryOutboxStorage;
  readonly #events: MemoryEventStoreBackend;
  #closed = false;
  #appended = 0;

  constructor(storage: MemoryOutboxStorage, events: MemoryEventStoreBackend) {
    this.#storage = storage;
    this.#events = events;
  }

  close(): void {
    this.#closed = true;
  }

  #open(): void {
    if (this.#closed) throw new UnitOfWorkUnsupportedError('this unit of work has ended');
  }

  async append(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
  ): Promise<StorageAppendResult> {
    this.#open();
    const added = this.#added.get(streamId);
    const current = this.#events.currentVersion(streamId) + (added ?? 0);
    if (added === undefined) {
      // Checked now as the database would (a retried append of stored ids is a no-op, duplicates and
      // version conflicts are refused), then checked again at commit against what landed meanwhile.
      const result = this.#events.checkAppend(streamId, events, expected);
      if (result !== undefined) return { ...result, repeated: true };
    } else {
      // The stream as this transaction sees it: the committed events and its own, as in a database.
      const visible = new Map((await this.readStream(streamId, {})).map((e) => [e.id, e]));
      const seen = events.filter((e) => visible.has(e.id)).map((e) => e.id);
      if (seen.length === events.length) {
        // A retry: what the append of the latest of them returned, as the databases answer.
        let last: RecordedEvent | undefined;
        for (const id of seen) {
          const e = visible.get(id)!;
          if (last === undefined || e.version > last.version) last = e;
        }
        return { nextExpectedVersion: last!.version, position: last!.position, repeated: true };
      }
      if (seen.length > 0) throw new DuplicateEventIdError(streamId, seen);
      if (!expectedVersionHolds(expected, current)) throw new ConcurrencyError(streamId, expected, current);
    }
    // At commit the stream must still be where this transaction saw it.
    this.appends.push({ streamId, events, expected: current });
    this.#added.set(streamId, (added ?? 0) + events.length);
    this.#appended += events.length;
    // Where the events land if no append outside a unit of work commits first.
    return {
      nextExpectedVersion: current + events.length,
      position: this.#events.lastPosition() + BigInt(this.#appended),
    };
  }

  async readStream(streamId: string, options: ReadStreamOptions): Promise<RecordedEvent[]> {
    this.#open();
    // The committed events, then this transaction's own appends, as a database shows them to it.
    const events = await this.#events.readStream(streamId, {});
    let position = this.#events.lastPosition();
    const time = new Date().toISOString();
    for (const append of this.appends) {
      const first = (append.expected as number) + 1;
      for (const [i, e] of append.events.entries()) {
        position += 1n;
        if (append.streamId !== streamId) continue;
        events.push({
          streamId,
          version: first + i,
          position,
          id: e.id,
          type: e.type,
          // A fresh copy, as every read gives.
          data: JSON.parse(JSON.stringify(e.data ?? null)),
          metadata: JSON.parse(JSON.stringify(e.metadata)),
          time,
        });
      }
    }
    return selectStreamEvents(events, options);
  }

  async query(): Promise<Record<string, unknown>[]> {
    throw new UnitOfWorkUnsupportedError(
      'the memory store has no SQL: work.query needs SQLite or PostgreSQL',
    );
  }

  async enqueue(messages: readonly OutboxInsert[]): Promise<void> {
    this.#open();
    for (const m of messages) {
      if (this.#storage.hasId(m.id) || this.enqueued.some((e) => e.id === m.id)) {
        throw new DuplicateMessageIdError(m.id);
      }
      this.enqueued.push(m);
    }
  }

  async cancel(ids: readonly string[], now: number): Promise<string[]> {
    this.#open();
    const out: string[] = [];
    for (const id of new Set(ids)) {
      const index = this.enqueued.findIndex((e) => e.id === id && e.dueAt > e.createdAt);
      if (index >= 0) {
        this.enqueued.splice(index, 1);
        out.push(id);
      } else if (this.#storage.cancellable(id, now)) {
        this.cancelled.add(id);
        out.push(id);
      }
    }
    return out;
  }

  /** Units of work run one at a time here: none can hold a key this one wants. */
  async lock(_keys: readonly string[]): Promise<void> {
    this.#open();
  }

  async markHandled(consumer: string, messageId: string, now: number): Promise<boolean> {
    this.#open();
    const key = JSON.stringify([consumer, messageId]);
    if (this.marks.has(key) || this.#storage.handledAt(key) !== undefined) return false;
    this.marks.set(key, now);
    return true;
  }

  async loadSaga(saga: string, id: string): Promise<SagaRow | undefined> {
    this.#open();
    const key = sagaKey(saga, id);
    return this.sagaWrites.get(key) ?? this.#storage.saga(key);
  }

  async saveSaga(row: SagaRow, expectedVersion: number): Promise<void> {
    this.#open();
    const key = sagaKey(row.saga, row.id);
    const stored = this.sagaWrites.get(key) ?? this.#storage.saga(key);
    if ((stored?.version ?? 0) !== expectedVersion) {
      throw new SagaConcurrencyError(row.saga, row.id, expectedVersion);
    }
    this.sagaWrites.set(key, row);
  }
}
