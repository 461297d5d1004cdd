import { positiveIntegerOption } from '../../errors/integer-option.js';
import {
  assertStoredResponse,
  type IdempotencyBeginResult,
  type IdempotencyStore,
  type StoredResponse,
} from './idempotency.js';

/** Options of a {@link MemoryIdempotencyStore}. */
export interface MemoryIdempotencyStoreOptions {
  /** How long a completed key (its stored response) is remembered. @default 86_400_000 (24 h) */
  readonly ttlMs?: number | undefined;
  /**
   * How long a claimed key stays held without a response. The middleware holds a key until its
   * handler answers or fails, even when the client left; a handler that does neither within the
   * lease (it hangs, or never ends its response) stops blocking the key: the next request with it
   * runs, and the late answer of the first is not stored. Set it above your slowest handler.
   * @default 300_000 (5 min)
   */
  readonly leaseMs?: number | undefined;
  /**
   * Most answers kept; the oldest are forgotten first beyond it. A key whose handler is still
   * running is never forgotten before its lease ends. @default 10_000
   */
  readonly maxEntries?: number | undefined;
}

export const DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS = Object.freeze({
  ttlMs: 86_400_000,
  leaseMs: 300_000,
  maxEntries: 10_000,
});

interface Entry {
  readonly fingerprint: string;
  /** Names this claim of the key, so that a lapsed one cannot end the next. */
  readonly claim: string;
  response: StoredResponse | undefined;
  /** End of the lease while in flight, of the memory once completed. */
  expiresAt: number;
}

/**
 * An {@link IdempotencyStore} in process memory, bounded in time and size. Right for one instance;
 * several instances behind a load balancer need a shared store.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #entries = new Map<string, Entry>();
  readonly #ttlMs: number;
  readonly #leaseMs: number;
  readonly #maxEntries: number;
  #claims = 0;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    const d = DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS;
    this.#ttlMs = positiveIntegerOption('ttlMs', options.ttlMs, d.ttlMs);
    this.#leaseMs = positiveIntegerOption('leaseMs', options.leaseMs, d.leaseMs);
    this.#maxEntries = positiveIntegerOption('maxEntries', options.maxEntries, d.maxEntries);
  }

  /** Keys currently remembered (expired ones included until touched or evicted). */
  get size(): number {
    return this.#entries.size;
  }

  async begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult> {
    const now = Date.now();
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.expiresAt > now) {
      if (entry.fingerprint !== fingerprint) return { state: 'mismatch' };
      return entry.response === undefined
        ? { state: 'in-progress' }
        : { state: 'replay', response: entry.response };
    }
    this.#entries.delete(key);
    const claim = String(++this.#claims);
    this.#entries.set(key, { fingerprint, claim, response: undefined, expiresAt: now + this.#leaseMs });
    this.#evict(now);
    return { state: 'new', claim };
  }

  async complete(key: string, response: StoredResponse, claim?: string): Promise<void> {
    assertStoredResponse(response);
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.response !== undefined) return;
    // A lapsed claim still completes while nobody took the key over: its answer is the one to replay.
    if (claim !== undefined && entry.claim !== claim) return;
    entry.response = response;
    entry.expiresAt = Date.now() + this.#ttlMs;
    // Re-inserted, so that eviction (oldest first) reaches it last.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
  }

  async abandon(key: string, claim?: string): Promise<void> {
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.response !== undefined) return;
    if (claim === undefined || entry.claim === claim) this.#entries.delete(key);
  }

  /**
   * Drops expired entries from the oldest end and, beyond `maxEntries`, the oldest answers. A key
   * whose handler is still running is never dropped before its lease ends: forgetting it would let
   * a duplicate run the handler a second time, at once. Held keys are bounded by the requests in
   * flight and their lease, so they may take the store past `maxEntries` for that long.
   */
  #evict(now: number): void {
    for (const [key, entry] of this.#entries) {
      const held = entry.response === undefined && entry.expiresAt > now;
      if (entry.expiresAt > now && this.#entries.size <= this.#maxEntries) break;
      if (!held) this.#entries.delete(key);
    }
  }
}
