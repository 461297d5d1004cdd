import { positiveIntegerOption } from '../../errors/integer-option.js';
import { checkOptions } from '../../errors/options-object.js';
import { assertStorableKey } from '../../errors/storable-text.js';
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
   * Most answers kept; the oldest are forgotten first beyond it. Keys whose handler is still running
   * are not counted, and never forgotten before their lease ends. @default 10_000
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
  /** End of the lease while in flight, of the memory once completed. */
  readonly expiresAt: number;
}

interface Answer extends Entry {
  readonly response: StoredResponse;
}

/**
 * An {@link IdempotencyStore} in process memory, bounded in time and size. Right for one instance;
 * several instances behind a load balancer need a shared store.
 *
 * Keys in flight and answered keys are kept apart, each in the order its time began (every lease
 * lasts `leaseMs`, every answer `ttlMs`): both end in that order, so what has expired, or the oldest
 * answers beyond `maxEntries`, are dropped from the front without stepping over anything.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  /** Keys whose handler runs (or ran out its lease unanswered), oldest lease first. */
  readonly #held = new Map<string, Entry>();
  /** Answered keys, oldest answer first. */
  readonly #answers = new Map<string, Answer>();
  readonly #ttlMs: number;
  readonly #leaseMs: number;
  readonly #maxEntries: number;
  #claims = 0;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    checkOptions('MemoryIdempotencyStore', options, ['ttlMs', 'leaseMs', 'maxEntries']);
    const d = DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS;
    this.#ttlMs = positiveIntegerOption('ttlMs', options.ttlMs, d.ttlMs);
    this.#leaseMs = positiveIntegerOption('leaseMs', options.leaseMs, d.leaseMs);
    this.#maxEntries = positiveIntegerOption('maxEntries', options.maxEntries, d.maxEntries);
  }

  /** Keys currently remembered: answered, or held by a handler. */
  get size(): number {
    return this.#held.size + this.#answers.size;
  }

  async begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult> {
    assertStorableKey('an idempotency key', key);
    const now = Date.now();
    const answer = this.#answers.get(key);
    if (answer !== undefined && answer.expiresAt > now) {
      return answer.fingerprint === fingerprint
        ? { state: 'replay', response: answer.response }
        : { state: 'mismatch' };
    }
    const held = this.#held.get(key);
    if (held !== undefined && held.expiresAt > now) {
      return held.fingerprint === fingerprint ? { state: 'in-progress' } : { state: 'mismatch' };
    }
    this.#answers.delete(key);
    this.#held.delete(key);
    const claim = String(++this.#claims);
    this.#held.set(key, { fingerprint, claim, expiresAt: now + this.#leaseMs });
    this.#evict(now);
    return { state: 'new', claim };
  }

  async complete(key: string, response: StoredResponse, claim?: string): Promise<void> {
    assertStoredResponse(response);
    const entry = this.#held.get(key);
    if (entry === undefined) return;
    // A lapsed claim still completes while nobody took the key over: its answer is the one to replay.
    if (claim !== undefined && entry.claim !== claim) return;
    const now = Date.now();
    this.#held.delete(key);
    this.#answers.set(key, {
      fingerprint: entry.fingerprint,
      claim: entry.claim,
      response,
      expiresAt: now + this.#ttlMs,
    });
    this.#evict(now);
  }

  async abandon(key: string, claim?: string): Promise<void> {
    const entry = this.#held.get(key);
    if (entry === undefined) return;
    if (claim === undefined || entry.claim === claim) this.#held.delete(key);
  }

  /**
   * Forgets every expired key (answers past `ttlMs`, claims past their lease) now, rather than at the
   * next `begin` or `complete`. Resolves the number of keys forgotten.
   */
  async deleteExpired(): Promise<number> {
    const before = this.size;
    this.#evict(Date.now());
    return before - this.size;
  }

  /**
   * Drops the leases that ended and the answers that expired, then, beyond `maxEntries` answers, the
   * oldest answers. A key whose handler is still running is never dropped before its lease ends:
   * forgetting it would let a duplicate run the handler a second time, at once. Held keys are not
   * counted against `maxEntries` (were they, as many slow handlers as `maxEntries` would have every
   * fresh answer forgotten at once, and its retry run again): they are bounded by the requests in
   * flight and their lease.
   */
  #evict(now: number): void {
    for (const [key, entry] of this.#held) {
      if (entry.expiresAt > now) break;
      this.#held.delete(key);
    }
    for (const [key, answer] of this.#answers) {
      if (answer.expiresAt > now && this.#answers.size <= this.#maxEntries) break;
      this.#answers.delete(key);
    }
  }
}
