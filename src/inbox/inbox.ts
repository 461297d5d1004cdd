import { positiveIntegerOption } from '../errors/integer-option.js';
import { checkOptions } from '../errors/options-object.js';
import { assertStorableKey } from '../errors/storable-text.js';
import { ClaimLostError } from './claim-lost-error.js';

/**
 * Deduplicates deliveries for an idempotent consumer: a key (subscription + message id) is processed
 * once; a redelivered or re-sent copy is recognised and skipped.
 */
export interface Inbox {
  /**
   * Claims `key` for processing. Resolves a claim when the caller should run the handler, or `null`
   * when the key was already processed. While another delivery holds the key, waits for its outcome.
   */
  begin(key: string): Promise<InboxClaim | null>;
}

/**
 * A held inbox key: `complete` after the handler succeeded, `abandon` after it failed. Every operation
 * acts on this holder's own claim only: once the claim is lost (its lease lapsed and another delivery
 * took the key over), nothing it does touches the new holder's claim.
 */
export interface InboxClaim {
  /**
   * Aborted (reason: a `ClaimLostError`) as soon as the holder learns its claim is lost, from a lease
   * renewal or from `complete`. A handler that stops on it limits, but cannot rule out, overlap with
   * the new holder: a frozen process learns it only once it runs again.
   */
  readonly signal: AbortSignal;
  /**
   * Records the key as processed.
   * @throws ClaimLostError when the claim is no longer this holder's; nothing was recorded.
   */
  complete(): Promise<void>;
  /** Releases the key for another delivery, if this holder still has it; otherwise does nothing. */
  abandon(): void;
}

/** Bounds of the in-memory inbox. */
export interface MemoryInboxOptions {
  /** Processed keys remembered at most (a positive integer); the oldest are forgotten first. @default 100000 */
  readonly maxEntries?: number | undefined;
  /** How long a processed key is remembered (a positive integer). @default 86400000 (24 h) */
  readonly ttlMs?: number | undefined;
}

export const DEFAULT_MEMORY_INBOX_OPTIONS = Object.freeze({
  maxEntries: 100_000,
  ttlMs: 86_400_000,
} satisfies Required<MemoryInboxOptions>);

interface Held {
  readonly done: Promise<boolean>;
  settle(processed: boolean): void;
}

const NEVER_ABORTED = new AbortController().signal;

/**
 * An inbox in process memory: duplicates are caught within one process for `ttlMs`, which covers
 * redeliveries after a connection loss. Keys held by a running handler make duplicates wait for it.
 */
export class MemoryInbox implements Inbox {
  readonly #processed = new Map<string, number>();
  readonly #held = new Map<string, Held>();
  readonly #maxEntries: number;
  readonly #ttlMs: number;

  constructor(options: MemoryInboxOptions = {}) {
    checkOptions('MemoryInbox', options, ['maxEntries', 'ttlMs']);
    const d = DEFAULT_MEMORY_INBOX_OPTIONS;
    this.#maxEntries = positiveIntegerOption('maxEntries', options.maxEntries, d.maxEntries);
    this.#ttlMs = positiveIntegerOption('ttlMs', options.ttlMs, d.ttlMs);
  }

  /** Number of processed keys remembered. */
  get size(): number {
    return this.#processed.size;
  }

  async begin(key: string): Promise<InboxClaim | null> {
    assertStorableKey('an inbox key', key);
    for (;;) {
      const at = this.#processed.get(key);
      if (at !== undefined) {
        if (Date.now() - at < this.#ttlMs) return null;
        this.#processed.delete(key);
      }
      const held = this.#held.get(key);
      if (held === undefined) return this.#claim(key);
      if (await held.done) return null;
    }
  }

  #claim(key: string): InboxClaim {
    let settle!: (processed: boolean) => void;
    const done = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    const held: Held = { done, settle };
    this.#held.set(key, held);
    // Memory claims have no lease: only their holder ends them, so they are lost only once released.
    return {
      signal: NEVER_ABORTED,
      complete: async () => {
        if (this.#held.get(key) !== held) throw new ClaimLostError(key);
        this.#held.delete(key);
        this.#remember(key);
        settle(true);
      },
      abandon: () => {
        if (this.#held.get(key) !== held) return;
        this.#held.delete(key);
        settle(false);
      },
    };
  }

  #remember(key: string): void {
    this.#processed.set(key, Date.now());
    if (this.#processed.size > this.#maxEntries) {
      const oldest = this.#processed.keys().next();
      if (!oldest.done) this.#processed.delete(oldest.value);
    }
  }
}
