import type { Logger } from '../logging/logger.js';
import type { Clock } from '../time/clock.js';
import type { OutboxRow, OutboxStorage } from './storage.js';

/** Most seqs per statement when held rows are renewed or deleted. */
const HELD_BATCH = 1000;

export interface HeldRowsOptions {
  readonly storage: OutboxStorage;
  /** The relay holding the rows (their lease owner). */
  readonly owner: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly leaseMs: number;
  /** A row is no longer held (deleted, or taken over by another relay): the relay forgets its publish. */
  readonly released: (seq: bigint) => void;
}

/**
 * The rows a relay keeps after their confirm, until the transport says their messages were settled
 * (`RelayOptions.holdUntilSettled`): their leases renewed every third of `leaseMs`, the settled ones
 * deleted in batches.
 */
export class HeldRows {
  readonly #o: HeldRowsOptions;
  readonly #renewEveryMs: number;
  /** Rows held until their messages are settled: seq to message id. */
  readonly #held = new Map<bigint, string>();
  /** Held rows whose messages were settled, deleted by the next {@link removeSettled}. */
  readonly #settled = new Set<bigint>();
  /**
   * Rows whose messages were settled while they were not held: before their hold (a quick handler),
   * or while waiting for another attempt after one that timed out before its confirm. They are
   * deleted once their row is confirmed and held; until then they cannot be (not leased).
   */
  readonly #settledEarly = new Set<bigint>();
  /** When the held rows' leases are renewed next. */
  #renewAt = 0;

  constructor(options: HeldRowsOptions) {
    this.#o = options;
    this.#renewEveryMs = Math.max(1, Math.floor(options.leaseMs / 3));
  }

  /** How many rows are held. */
  get size(): number {
    return this.#held.size;
  }

  /** Whether settled rows wait to be deleted. */
  get anySettled(): boolean {
    return this.#settled.size > 0;
  }

  /** When the leases are renewed next (of the clock). */
  get renewAt(): number {
    return this.#renewAt;
  }

  /**
   * Holds confirmed rows until their messages are settled; those settled already (leased by this
   * round's claim) are deleted by the next {@link removeSettled} with the others.
   */
  async hold(confirmed: readonly OutboxRow[]): Promise<void> {
    const now = this.#o.clock.now();
    if (this.#held.size === 0) this.#renewAt = now + this.#renewEveryMs;
    const rows: OutboxRow[] = [];
    for (const row of confirmed) {
      if (this.#settledEarly.delete(row.seq)) {
        this.#held.set(row.seq, row.id);
        this.#settled.add(row.seq);
      } else rows.push(row);
    }
    if (rows.length === 0) return;
    const held = new Set(
      await this.#o.storage.hold(
        this.#o.owner,
        rows.map((row) => row.seq),
        now + this.#o.leaseMs,
      ),
    );
    for (const row of rows) {
      if (held.has(row.seq)) {
        this.#held.set(row.seq, row.id);
        // Settled while the hold was being written.
        if (this.#settledEarly.delete(row.seq)) this.#settled.add(row.seq);
      } else {
        // Taken over by another relay (our lease ran out): it publishes it again.
        this.#o.released(row.seq);
        this.#settledEarly.delete(row.seq);
      }
    }
  }

  /**
   * A row's message was settled everywhere. Returns whether the row is held (it goes at the next
   * {@link removeSettled}); one not held yet is deleted once it is.
   */
  settle(seq: bigint): boolean {
    if (!this.#held.has(seq)) {
      this.#settledEarly.add(seq);
      return false;
    }
    this.#settled.add(seq);
    return true;
  }

  /** The relay no longer remembers the publish of `seq`: a settlement seen early is dropped too. */
  forget(seq: bigint): void {
    this.#settledEarly.delete(seq);
  }

  /** Deletes the rows whose messages were settled, in batches; resolves how many were deleted. */
  async removeSettled(): Promise<number> {
    if (this.#settled.size === 0) return 0;
    const seqs = [...this.#settled];
    this.#settled.clear();
    let deleted = 0;
    for (let i = 0; i < seqs.length; i += HELD_BATCH) {
      const batch = seqs.slice(i, i + HELD_BATCH);
      try {
        deleted += await this.#o.storage.delivered(this.#o.owner, batch);
      } catch (error) {
        // Deleted next time; held meanwhile.
        for (const seq of seqs.slice(i)) this.#settled.add(seq);
        throw error;
      }
      for (const seq of batch) {
        this.#held.delete(seq);
        this.#o.released(seq);
      }
    }
    return deleted;
  }

  /** Renews the lease of the rows held, every third of `leaseMs`. */
  async renew(): Promise<void> {
    if (this.#held.size === 0) return;
    const now = this.#o.clock.now();
    if (now < this.#renewAt) return;
    this.#renewAt = now + this.#renewEveryMs;
    const seqs = [...this.#held.keys()];
    for (let i = 0; i < seqs.length; i += HELD_BATCH) {
      const batch = seqs.slice(i, i + HELD_BATCH);
      const kept = new Set(await this.#o.storage.hold(this.#o.owner, batch, now + this.#o.leaseMs));
      for (const seq of batch) {
        if (kept.has(seq)) continue;
        // Taken over after our lease ran out (this process stalled): the other relay sends it again.
        this.#o.logger.warn(
          `outbox relay: held message ${this.#held.get(seq)} was taken over by another relay`,
        );
        this.#held.delete(seq);
        this.#o.released(seq);
      }
    }
  }

  /** Forgets every row (the relay has stopped: they go out again once their lease ends). */
  clear(): void {
    this.#held.clear();
    this.#settled.clear();
    this.#settledEarly.clear();
  }
}
