import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { knownOptions } from '../errors/options-object.js';

/** Options of {@link RetryBudget}. */
export interface RetryBudgetOptions {
  /** Retries allowed per request in the window: 0.2 lets retries add at most 20% to the traffic. @default 0.2 */
  readonly ratio?: number;
  /**
   * Retries always allowed per second, whatever the traffic, so that a client with few requests can
   * still retry. A rate, not a reserve: at most `max(1, minRetriesPerSecond)` at once, refilled
   * continuously (a burst of failures after a quiet spell gets 10 retries beyond the ratio, not the
   * 100 a whole window's worth would be). Retries the ratio grants use it up too, so that under
   * load the ratio alone bounds retries. @default 10
   */
  readonly minRetriesPerSecond?: number;
  /** Length of the sliding window requests and retries are counted over. @default 10000 */
  readonly windowMs?: number;
  /** Clock, replaceable in tests. @default Date.now */
  readonly now?: () => number;
}

/** Defaults of {@link RetryBudget}: retries add at most 20% of traffic over 10 s, or 10 per second when that is more. */
export const DEFAULT_RETRY_BUDGET = Object.freeze({
  ratio: 0.2,
  minRetriesPerSecond: 10,
  windowMs: 10_000,
  now: () => Date.now(),
} satisfies Required<RetryBudgetOptions>);

/** A snapshot of a {@link RetryBudget} over its current window. */
export interface RetryBudgetStats {
  /** Requests recorded in the window. */
  readonly requests: number;
  /** Retries granted in the window. */
  readonly retries: number;
  /** Retries the window allows in all now: those granted plus those still grantable. */
  readonly limit: number;
  /** Retries still grantable now. */
  readonly available: number;
}

/** Buckets are about a second long, but never more than this many (memory stays constant). */
const MAX_BUCKETS = 60;

/**
 * A retry budget shared by every retrying execution of one client (Envoy and Finagle have the
 * same): when a dependency fails everywhere at once, per-call retry limits would still multiply the
 * load by `maxAttempts`; the budget caps retries at a share of the traffic instead.
 *
 * Counts are kept in about one-second buckets of a sliding window, rotated when the budget is used:
 * no timer, constant memory.
 *
 * @example
 * const budget = new RetryBudget({ ratio: 0.1 });
 * const policy = retry({ maxAttempts: 4, budget }); // share `budget` by every call to one service
 */
export class RetryBudget {
  readonly #ratio: number;
  readonly #floor: number;
  readonly #now: () => number;
  readonly #bucketMs: number;
  readonly #requests: Float64Array;
  readonly #retries: Float64Array;
  #bucket: number;
  #requestTotal = 0;
  #retryTotal = 0;
  /** The floor as a token bucket: `#capacity` at most, refilled at `#floor` per second. */
  readonly #capacity: number;
  #tokens: number;
  #refilledAt: number;

  /** @throws {@link InvalidOptionsError} when an option is out of range. */
  constructor(options: RetryBudgetOptions = {}) {
    const { ratio, minRetriesPerSecond, windowMs, now } = {
      ...DEFAULT_RETRY_BUDGET,
      ...knownOptions('RetryBudget', options, Object.keys(DEFAULT_RETRY_BUDGET)),
    };
    if (!Number.isFinite(ratio) || !(ratio >= 0)) {
      throw new InvalidOptionsError(
        `RetryBudget ratio must be a finite number >= 0, not ${describeValue(ratio)}`,
      );
    }
    if (!Number.isFinite(minRetriesPerSecond) || !(minRetriesPerSecond >= 0)) {
      throw new InvalidOptionsError(
        `RetryBudget minRetriesPerSecond must be a finite number >= 0, not ${describeValue(minRetriesPerSecond)}`,
      );
    }
    if (!Number.isFinite(windowMs) || !(windowMs >= 1)) {
      throw new InvalidOptionsError(
        `RetryBudget windowMs must be a finite number >= 1, not ${describeValue(windowMs)}`,
      );
    }
    if (typeof now !== 'function') {
      throw new InvalidOptionsError(`RetryBudget now must be a function, not ${describeValue(now)}`);
    }
    const buckets = Math.min(MAX_BUCKETS, Math.max(1, Math.round(windowMs / 1000)));
    this.#ratio = ratio;
    this.#floor = minRetriesPerSecond;
    this.#capacity = minRetriesPerSecond === 0 ? 0 : Math.max(1, minRetriesPerSecond);
    this.#tokens = this.#capacity;
    this.#refilledAt = now();
    this.#now = now;
    this.#bucketMs = windowMs / buckets;
    this.#requests = new Float64Array(buckets);
    this.#retries = new Float64Array(buckets);
    this.#bucket = Math.floor(now() / this.#bucketMs);
  }

  /** Counts one request (one execution, not one attempt); the retry policy calls it. */
  recordRequest(): void {
    const slot = this.#rotate();
    this.#requests[slot]!++;
    this.#requestTotal++;
  }

  /** Grants one retry and counts it when the budget allows one; false means do not retry. */
  tryRetry(): boolean {
    const slot = this.#rotate();
    this.#refill();
    const byRatio = this.#retryTotal + 1 <= this.#ratio * this.#requestTotal;
    if (!byRatio && this.#tokens < 1) return false;
    // A retry the ratio grants uses the floor's token too, so that under load the ratio alone bounds retries.
    if (this.#tokens >= 1) this.#tokens--;
    this.#retries[slot]!++;
    this.#retryTotal++;
    return true;
  }

  /** Counts over the current window. */
  stats(): RetryBudgetStats {
    this.#rotate();
    this.#refill();
    // Ratio grants take floor tokens too: what is left is the larger of the two allowances.
    const available = Math.max(
      0,
      Math.floor(this.#ratio * this.#requestTotal - this.#retryTotal),
      Math.floor(this.#tokens),
    );
    return {
      requests: this.#requestTotal,
      retries: this.#retryTotal,
      limit: this.#retryTotal + available,
      available,
    };
  }

  #refill(): void {
    const now = this.#now();
    // A clock that steps back refills nothing until it passes the last refill again.
    if (now <= this.#refilledAt) return;
    this.#tokens = Math.min(this.#capacity, this.#tokens + ((now - this.#refilledAt) * this.#floor) / 1000);
    this.#refilledAt = now;
  }

  /** Clears the buckets that left the window since the last use; returns the current slot. */
  #rotate(): number {
    const size = this.#requests.length;
    const bucket = Math.floor(this.#now() / this.#bucketMs);
    // A clock that steps back keeps counting into the newest bucket rather than corrupting the ring.
    if (bucket > this.#bucket) {
      const stale = Math.min(size, bucket - this.#bucket);
      for (let i = 1; i <= stale; i++) {
        const slot = slotOf(this.#bucket + i, size);
        this.#requestTotal -= this.#requests[slot]!;
        this.#retryTotal -= this.#retries[slot]!;
        this.#requests[slot] = 0;
        this.#retries[slot] = 0;
      }
      this.#bucket = bucket;
    }
    return slotOf(this.#bucket, size);
  }
}

/** Ring position of an absolute bucket number, also for clocks before 1970 (tests). */
function slotOf(bucket: number, size: number): number {
  return ((bucket % size) + size) % size;
}
