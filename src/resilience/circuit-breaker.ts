import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { notifyListeners } from '../errors/notify-listeners.js';
import { knownOptions } from '../errors/options-object.js';
import { contextOf } from './compose.js';
import { CircuitOpenError } from './errors.js';
import type { ExecuteOptions, Policy, PolicyContext } from './policy.js';

/**
 * `closed`: calls go through and are counted. `open`: calls are refused until the reset timeout.
 * `half-open`: a few probe calls decide between closing and opening again. `isolated`: held open by
 * hand until `reset()`.
 */
export type CircuitState = 'closed' | 'open' | 'half-open' | 'isolated';

/** Options of {@link CircuitBreaker}. */
export interface CircuitBreakerOptions {
  /** Names the breaker in its errors (e.g. the target origin). @default 'circuit-breaker' */
  readonly name?: string;
  /** Length of the rolling window calls are counted over. @default 10000 */
  readonly windowMs?: number;
  /** Buckets the window is split into; the window slides one bucket at a time. @default 10 */
  readonly buckets?: number;
  /** Calls the window must hold before the breaker may open. @default 20 */
  readonly minimumVolume?: number;
  /** Failure percentage of the window's calls that opens the breaker. @default 50 */
  readonly errorThresholdPercentage?: number;
  /**
   * Slow-call percentage of the window's calls that opens the breaker; 100 turns slow-call
   * detection off (calls are then not timed, which keeps the hot path cheaper). @default 100
   */
  readonly slowCallThresholdPercentage?: number;
  /** A call is slow when it takes longer than this; a slow success counts as slow, not failed. @default 5000 */
  readonly slowCallDurationMs?: number;
  /** Time the breaker stays open before letting probe calls through. @default 30000 */
  readonly resetTimeoutMs?: number;
  /** Probe calls let through when half-open; all must succeed to close the breaker. @default 1 */
  readonly halfOpenMaxCalls?: number;
  /**
   * Whether an error counts as a failure; other errors count as successes (the dependency did
   * answer), e.g. an HTTP client ignores 4xx responses. @default every error is a failure
   */
  readonly isFailure?: (error: unknown) => boolean;
  /**
   * Whether an error says nothing of the dependency's health (the caller gave up, a deadline the
   * caller chose ran out, a request that could not be sent): it is counted neither as a failure nor
   * as a success, and a half-open probe that ends with it leaves its place to the next call.
   * Asked before `isFailure`. @default no error is ignored
   */
  readonly isIgnored?: (error: unknown) => boolean;
  /** Clock, replaceable in tests. @default Date.now */
  readonly now?: () => number;
  /** State to start from, as returned by {@link CircuitBreaker.toJSON}. @default undefined (closed, empty) */
  readonly initialState?: CircuitBreakerSnapshot;
}

/** Defaults of {@link CircuitBreaker}. */
export const DEFAULT_CIRCUIT_BREAKER = Object.freeze({
  name: 'circuit-breaker',
  windowMs: 10_000,
  buckets: 10,
  minimumVolume: 20,
  errorThresholdPercentage: 50,
  slowCallThresholdPercentage: 100,
  slowCallDurationMs: 5000,
  resetTimeoutMs: 30_000,
  halfOpenMaxCalls: 1,
  isFailure: (_error: unknown): boolean => true,
  isIgnored: (_error: unknown): boolean => false,
  // Not `Date.now` itself: fake clocks replace `Date` after this module is loaded.
  now: (): number => Date.now(),
});

/** A state change, as told to {@link CircuitBreaker.onStateChange} listeners. */
export interface CircuitStateChange {
  /** The state left. */
  readonly from: CircuitState;
  /** The state entered. */
  readonly to: CircuitState;
  /** When it happened (epoch ms, from the breaker's clock). */
  readonly at: number;
}

/** A snapshot of a {@link CircuitBreaker}'s counts over its current window. */
export interface CircuitBreakerStats {
  /** The state now (an expired open state already turned half-open). */
  readonly state: CircuitState;
  /** Calls counted in the window (successes + failures). */
  readonly calls: number;
  /** Calls that succeeded, or failed with an error `isFailure` does not count. */
  readonly successes: number;
  /** Calls that failed with an error `isFailure` counts. */
  readonly failures: number;
  /** Slow calls in the window (0 while slow-call detection is off). */
  readonly slowCalls: number;
  /** 0..100; 0 when the window is empty. */
  readonly failurePercentage: number;
  /** 0..100; 0 when the window is empty. */
  readonly slowCallPercentage: number;
  /** When an open breaker lets a probe through (epoch ms); undefined unless open or half-open. */
  readonly retryAt: number | undefined;
}

/** The exportable state of a breaker (JSON-safe), to restore it e.g. across restarts. */
export interface CircuitBreakerSnapshot {
  /** Format version, for later changes of this shape. */
  readonly version: 1;
  /** The state; a restored `half-open` breaker starts a new probe round. */
  readonly state: CircuitState;
  /** For `open`: when it lets a probe through (epoch ms). */
  readonly retryAt?: number;
  /** The window's buckets; restored only into a breaker with the same bucket length and count. */
  readonly window?: {
    /** Length of one bucket (windowMs / buckets). */
    readonly bucketMs: number;
    /** Absolute number (time / bucketMs) of the newest bucket. */
    readonly bucket: number;
    /** Per-bucket counts, indexed by bucket number modulo the bucket count. */
    readonly successes: readonly number[];
    /** Per-bucket counts, as `successes`. */
    readonly failures: readonly number[];
    /** Per-bucket counts, as `successes`. */
    readonly slow: readonly number[];
  };
}

const CLOSED = 0;
const OPEN = 1;
const HALF_OPEN = 2;
const ISOLATED = 3;
const STATE_NAMES: readonly CircuitState[] = ['closed', 'open', 'half-open', 'isolated'];

/**
 * A circuit breaker: stops calling a dependency that fails (or is slow) for most calls of a rolling
 * window, so that it can recover and callers fail fast meanwhile with {@link CircuitOpenError}.
 *
 * Built to sit on every call: it owns no timer and allocates no listener or closure per call (slow-call
 * detection, which is off by default, adds one pair per call). Open becomes half-open when a call
 * arrives after `resetTimeoutMs`; the window's buckets are rotated as calls are counted.
 *
 * @example
 * const breaker = circuitBreaker({ name: 'payments', isFailure: (e) => !isClientError(e) });
 * breaker.onStateChange(({ from, to }) => log.warn(`payments breaker ${from} -> ${to}`));
 * const receipt = await breaker.execute(({ signal }) => payments.charge(order, { signal }));
 */
export class CircuitBreaker implements Policy {
  readonly #name: string;
  readonly #minimumVolume: number;
  readonly #errorThreshold: number;
  readonly #slowThreshold: number;
  readonly #slowCallDurationMs: number;
  readonly #resetTimeoutMs: number;
  readonly #halfOpenMaxCalls: number;
  readonly #isFailure: (error: unknown) => boolean;
  readonly #isIgnored: (error: unknown) => boolean;
  readonly #now: () => number;
  /** Slow-call detection on: calls are timed. */
  readonly #timed: boolean;
  readonly #listeners = new Set<(change: CircuitStateChange) => void>();

  #state = CLOSED;
  /** Open: when the breaker turns half-open. Half-open: when a stuck probe round may be restarted. */
  #retryAt = 0;
  /** Bumped on every state change and probe round, so that a late probe result is ignored. */
  #epoch = 0;
  #probesStarted = 0;
  #probesSucceeded = 0;

  readonly #bucketMs: number;
  readonly #successes: Float64Array;
  readonly #failures: Float64Array;
  readonly #slow: Float64Array;
  /** Absolute number of the newest bucket, and its slot in the arrays. */
  #bucket: number;
  #slot: number;
  #successTotal = 0;
  #failureTotal = 0;
  #slowTotal = 0;

  // Shared settle handlers of untimed closed-state calls: no closure per call.
  readonly #onValue = (value: unknown): unknown => {
    this.#record(false, false);
    return value;
  };
  readonly #onError = (error: unknown): never => {
    if (!this.#isIgnored(error)) this.#record(this.#isFailure(error), false);
    throw error;
  };

  /** @throws {@link InvalidOptionsError} when an option is out of range or `initialState` is malformed. */
  constructor(options: CircuitBreakerOptions = {}) {
    const o = {
      ...DEFAULT_CIRCUIT_BREAKER,
      ...knownOptions('circuit breaker', options, [...Object.keys(DEFAULT_CIRCUIT_BREAKER), 'initialState']),
    };
    validate(o);
    this.#name = o.name;
    this.#minimumVolume = o.minimumVolume;
    this.#errorThreshold = o.errorThresholdPercentage;
    this.#slowThreshold = o.slowCallThresholdPercentage;
    this.#slowCallDurationMs = o.slowCallDurationMs;
    this.#resetTimeoutMs = o.resetTimeoutMs;
    this.#halfOpenMaxCalls = o.halfOpenMaxCalls;
    this.#isFailure = o.isFailure;
    this.#isIgnored = o.isIgnored;
    this.#now = o.now;
    this.#timed = o.slowCallThresholdPercentage < 100;
    this.#bucketMs = o.windowMs / o.buckets;
    this.#successes = new Float64Array(o.buckets);
    this.#failures = new Float64Array(o.buckets);
    this.#slow = new Float64Array(o.buckets);
    this.#bucket = Math.floor(this.#now() / this.#bucketMs);
    this.#slot = slotOf(this.#bucket, o.buckets);
    if (options.initialState !== undefined) this.#restore(options.initialState);
  }

  /** A breaker in the state `snapshot` (from {@link CircuitBreaker.toJSON}) with `options`. */
  static restore(snapshot: CircuitBreakerSnapshot, options: CircuitBreakerOptions = {}): CircuitBreaker {
    return new CircuitBreaker({ ...options, initialState: snapshot });
  }

  /** The current state; an open breaker whose reset timeout has passed reports (and turns) half-open. */
  get state(): CircuitState {
    this.#refresh(this.#now());
    return STATE_NAMES[this.#state]!;
  }

  /**
   * Runs `fn` unless the breaker is open, and counts the outcome.
   * @throws {@link CircuitOpenError} at once, without running `fn`, while open, isolated, or
   * half-open with every probe taken.
   */
  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    if (this.#state !== CLOSED) return this.#executeNotClosed(fn, options);
    if (this.#timed) return this.#executeTimed(fn, options);
    let result: PromiseLike<T> | T;
    try {
      result = fn(contextOf(options));
    } catch (error) {
      if (!this.#isIgnored(error)) this.#record(this.#isFailure(error), false);
      return Promise.reject(error);
    }
    if (result instanceof Promise) return result.then(this.#onValue, this.#onError) as Promise<T>;
    return Promise.resolve(result).then(this.#onValue, this.#onError) as Promise<T>;
  }

  /** Holds the breaker open, whatever the calls, until {@link CircuitBreaker.reset}. */
  isolate(): void {
    this.#transition(ISOLATED, this.#now());
  }

  /** Closes the breaker and clears its window (also ends an isolation). */
  reset(): void {
    this.#clearWindow();
    this.#transition(CLOSED, this.#now());
  }

  /**
   * Calls `listener` on every state change, once per transition, synchronously. A listener that
   * throws affects neither the breaker nor the call; its error is rethrown from a microtask.
   * @returns a function that removes the listener.
   */
  onStateChange(listener: (change: CircuitStateChange) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Counts over the current window. */
  stats(): CircuitBreakerStats {
    const now = this.#now();
    this.#refresh(now);
    this.#rotate(now);
    const calls = this.#successTotal + this.#failureTotal;
    return {
      state: STATE_NAMES[this.#state]!,
      calls,
      successes: this.#successTotal,
      failures: this.#failureTotal,
      slowCalls: this.#slowTotal,
      failurePercentage: calls === 0 ? 0 : (this.#failureTotal * 100) / calls,
      slowCallPercentage: calls === 0 ? 0 : (this.#slowTotal * 100) / calls,
      retryAt: this.#state === OPEN || this.#state === HALF_OPEN ? this.#retryAt : undefined,
    };
  }

  /** The breaker's state, JSON-safe, for {@link CircuitBreaker.restore} or the `initialState` option. */
  toJSON(): CircuitBreakerSnapshot {
    const now = this.#now();
    this.#refresh(now);
    this.#rotate(now);
    const window = {
      bucketMs: this.#bucketMs,
      bucket: this.#bucket,
      successes: Array.from(this.#successes),
      failures: Array.from(this.#failures),
      slow: Array.from(this.#slow),
    };
    const state = STATE_NAMES[this.#state]!;
    return this.#state === OPEN
      ? { version: 1, state, retryAt: this.#retryAt, window }
      : { version: 1, state, window };
  }

  #executeNotClosed<T>(
    fn: (context: PolicyContext) => PromiseLike<T> | T,
    options?: ExecuteOptions,
  ): Promise<T> {
    const now = this.#now();
    if (this.#state === OPEN && now >= this.#retryAt) {
      this.#refresh(now);
      return this.execute(fn, options); // a listener may have changed the state again
    }
    if (this.#state === HALF_OPEN && this.#probesStarted >= this.#halfOpenMaxCalls && now >= this.#retryAt) {
      // Every probe taken and none answered within a reset timeout: a new round, or it stays half-open forever.
      this.#startProbeRound(now);
    }
    if (this.#state === HALF_OPEN && this.#probesStarted < this.#halfOpenMaxCalls) {
      this.#probesStarted++;
      return this.#probe(fn, options, this.#epoch, now);
    }
    return Promise.reject(
      new CircuitOpenError(this.#name, this.#state === ISOLATED ? undefined : this.#retryAt),
    );
  }

  #executeTimed<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    const start = this.#now();
    let result: PromiseLike<T> | T;
    try {
      result = fn(contextOf(options));
    } catch (error) {
      if (!this.#isIgnored(error)) {
        this.#record(this.#isFailure(error), this.#now() - start > this.#slowCallDurationMs);
      }
      return Promise.reject(error);
    }
    return (result instanceof Promise ? result : Promise.resolve(result)).then(
      (value: T) => {
        this.#record(false, this.#now() - start > this.#slowCallDurationMs);
        return value;
      },
      (error: unknown) => {
        if (!this.#isIgnored(error)) {
          this.#record(this.#isFailure(error), this.#now() - start > this.#slowCallDurationMs);
        }
        throw error;
      },
    );
  }

  #probe<T>(
    fn: (context: PolicyContext) => PromiseLike<T> | T,
    options: ExecuteOptions | undefined,
    epoch: number,
    start: number,
  ): Promise<T> {
    let result: PromiseLike<T> | T;
    try {
      result = fn(contextOf(options));
    } catch (error) {
      this.#probeFailed(epoch, error, start);
      return Promise.reject(error);
    }
    return Promise.resolve(result).then(
      (value) => {
        this.#probeSettled(epoch, false, start);
        return value;
      },
      (error: unknown) => {
        this.#probeFailed(epoch, error, start);
        throw error;
      },
    );
  }

  #probeFailed(epoch: number, error: unknown, start: number): void {
    if (!this.#isIgnored(error)) this.#probeSettled(epoch, this.#isFailure(error), start);
    else if (epoch === this.#epoch) this.#probesStarted--; // no verdict: the next call probes instead
  }

  #probeSettled(epoch: number, failed: boolean, start: number): void {
    if (epoch !== this.#epoch) return; // a probe of an earlier round, or the state changed meanwhile
    const now = this.#now();
    if (failed || (this.#timed && now - start > this.#slowCallDurationMs)) {
      this.#open(now);
    } else if (++this.#probesSucceeded >= this.#halfOpenMaxCalls) {
      this.#clearWindow();
      this.#transition(CLOSED, now);
    }
  }

  /** Counts one outcome in the window, and opens the breaker if it crosses a threshold. */
  #record(failed: boolean, slow: boolean): void {
    const now = this.#now();
    const slot = Math.floor(now / this.#bucketMs) === this.#bucket ? this.#slot : this.#rotate(now);
    if (failed) {
      this.#failures[slot]!++;
      this.#failureTotal++;
    } else {
      this.#successes[slot]!++;
      this.#successTotal++;
    }
    if (slow) {
      this.#slow[slot]!++;
      this.#slowTotal++;
    }
    if ((failed || slow) && this.#state === CLOSED) {
      const calls = this.#successTotal + this.#failureTotal;
      if (
        calls >= this.#minimumVolume &&
        (this.#failureTotal * 100 >= this.#errorThreshold * calls ||
          (this.#timed && this.#slowTotal * 100 >= this.#slowThreshold * calls))
      ) {
        this.#open(now);
      }
    }
  }

  /** Drops the buckets that left the window; returns the current slot. */
  #rotate(now: number): number {
    const bucket = Math.floor(now / this.#bucketMs);
    // A clock that steps back keeps counting into the newest bucket rather than corrupting the ring.
    if (bucket > this.#bucket) {
      const size = this.#successes.length;
      const stale = Math.min(size, bucket - this.#bucket);
      for (let i = 1; i <= stale; i++) {
        const slot = slotOf(this.#bucket + i, size);
        this.#successTotal -= this.#successes[slot]!;
        this.#failureTotal -= this.#failures[slot]!;
        this.#slowTotal -= this.#slow[slot]!;
        this.#successes[slot] = 0;
        this.#failures[slot] = 0;
        this.#slow[slot] = 0;
      }
      this.#bucket = bucket;
      this.#slot = slotOf(bucket, size);
    }
    return this.#slot;
  }

  #clearWindow(): void {
    this.#successes.fill(0);
    this.#failures.fill(0);
    this.#slow.fill(0);
    this.#successTotal = 0;
    this.#failureTotal = 0;
    this.#slowTotal = 0;
  }

  /** Applies the one transition that time alone causes: open to half-open. */
  #refresh(now: number): void {
    if (this.#state === OPEN && now >= this.#retryAt) {
      this.#startProbeRound(now);
      this.#transition(HALF_OPEN, now);
    }
  }

  #open(now: number): void {
    this.#retryAt = now + this.#resetTimeoutMs;
    this.#transition(OPEN, now);
  }

  #startProbeRound(now: number): void {
    this.#epoch++;
    this.#probesStarted = 0;
    this.#probesSucceeded = 0;
    this.#retryAt = now + this.#resetTimeoutMs;
  }

  #transition(to: number, now: number): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    this.#epoch++;
    if (this.#listeners.size === 0) return;
    const change: CircuitStateChange = { from: STATE_NAMES[from]!, to: STATE_NAMES[to]!, at: now };
    // A broken listener must not break the call that caused the transition, nor hide the bug.
    notifyListeners(this.#listeners, change);
  }

  #restore(snapshot: CircuitBreakerSnapshot): void {
    const state = STATE_NAMES.indexOf(snapshot?.state);
    if (snapshot?.version !== 1 || state < 0) {
      throw new InvalidOptionsError('circuit breaker initialState is not a version 1 snapshot from toJSON()');
    }
    const now = this.#now();
    const window = snapshot.window;
    const size = this.#successes.length;
    if (
      window !== undefined &&
      window.bucketMs === this.#bucketMs &&
      Number.isInteger(window.bucket) &&
      [window.successes, window.failures, window.slow].every(
        (counts) =>
          Array.isArray(counts) &&
          counts.length === size &&
          counts.every((n) => typeof n === 'number' && n >= 0 && Number.isFinite(n)),
      )
    ) {
      this.#successes.set(window.successes);
      this.#failures.set(window.failures);
      this.#slow.set(window.slow);
      this.#successTotal = window.successes.reduce((a, b) => a + b, 0);
      this.#failureTotal = window.failures.reduce((a, b) => a + b, 0);
      this.#slowTotal = window.slow.reduce((a, b) => a + b, 0);
      this.#bucket = window.bucket;
      this.#slot = slotOf(window.bucket, size);
      this.#rotate(now);
    }
    if (state === OPEN) {
      // NaN or Infinity would keep it open for ever, never half-open, refusing every call.
      if (typeof snapshot.retryAt !== 'number' || !Number.isFinite(snapshot.retryAt)) {
        throw new InvalidOptionsError(
          `circuit breaker initialState "open" needs a finite numeric retryAt (ms since the epoch), not ${describeValue(snapshot.retryAt)}`,
        );
      }
      // At most resetTimeoutMs from now: a retryAt far ahead (by hand, or another machine's clock)
      // kept it open for years, as NaN did.
      this.#retryAt = Math.min(snapshot.retryAt, now + this.#resetTimeoutMs);
    } else if (state === HALF_OPEN) {
      this.#startProbeRound(now); // probes in flight did not survive the export
    }
    this.#state = state;
  }
}

/** Ring position of an absolute bucket number, also for clocks before 1970 (tests). */
function slotOf(bucket: number, size: number): number {
  return ((bucket % size) + size) % size;
}

function validate(o: Required<Omit<CircuitBreakerOptions, 'initialState'>>): void {
  const check = (ok: boolean, what: string, value: unknown): void => {
    if (!ok) throw new InvalidOptionsError(`circuit breaker ${what}, not ${describeValue(value)}`);
  };
  // Numbers only: a string would pass the range checks by coercion, and be compared as a string.
  const isNumber = (value: unknown): value is number => typeof value === 'number';
  check(typeof o.name === 'string' && o.name !== '', 'name must be a non-empty string', o.name);
  check(
    isNumber(o.windowMs) && o.windowMs > 0 && Number.isFinite(o.windowMs),
    'windowMs must be a finite number > 0',
    o.windowMs,
  );
  check(
    Number.isInteger(o.buckets) && o.buckets >= 1 && o.buckets <= 1000,
    'buckets must be in 1..1000',
    o.buckets,
  );
  check(
    Number.isInteger(o.minimumVolume) && o.minimumVolume >= 1,
    'minimumVolume must be an integer >= 1',
    o.minimumVolume,
  );
  check(
    isNumber(o.errorThresholdPercentage) &&
      o.errorThresholdPercentage > 0 &&
      o.errorThresholdPercentage <= 100,
    'errorThresholdPercentage must be in (0, 100]',
    o.errorThresholdPercentage,
  );
  check(
    isNumber(o.slowCallThresholdPercentage) &&
      o.slowCallThresholdPercentage > 0 &&
      o.slowCallThresholdPercentage <= 100,
    'slowCallThresholdPercentage must be in (0, 100]',
    o.slowCallThresholdPercentage,
  );
  check(
    isNumber(o.slowCallDurationMs) && o.slowCallDurationMs >= 0,
    'slowCallDurationMs must be a number >= 0',
    o.slowCallDurationMs,
  );
  check(
    isNumber(o.resetTimeoutMs) && o.resetTimeoutMs >= 0 && Number.isFinite(o.resetTimeoutMs),
    'resetTimeoutMs must be finite and >= 0',
    o.resetTimeoutMs,
  );
  check(
    Number.isInteger(o.halfOpenMaxCalls) && o.halfOpenMaxCalls >= 1,
    'halfOpenMaxCalls must be an integer >= 1',
    o.halfOpenMaxCalls,
  );
  check(typeof o.isFailure === 'function', 'isFailure must be a function', o.isFailure);
  check(typeof o.isIgnored === 'function', 'isIgnored must be a function', o.isIgnored);
  check(typeof o.now === 'function', 'now must be a function', o.now);
}

/**
 * A circuit breaker policy (see {@link CircuitBreaker}).
 *
 * @example
 * const breaker = circuitBreaker({ minimumVolume: 10, resetTimeoutMs: 10_000 });
 */
export function circuitBreaker(options: CircuitBreakerOptions = {}): CircuitBreaker {
  return new CircuitBreaker(options);
}
