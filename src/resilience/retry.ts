import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError, isFerryError } from '../errors/ferry-error.js';
import { knownOptions } from '../errors/options-object.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { type Backoff, exponentialBackoff } from './backoff.js';
import type { RetryBudget } from './budget.js';

/** What a retry policy asks of its budget: a {@link RetryBudget}, or a view of one. */
export type RetryBudgetLike = Pick<RetryBudget, 'recordRequest' | 'tryRetry'>;

import { type DeadlineContext, invoke, NEVER_ABORTED } from './compose.js';
import { RetryBudgetExhaustedError } from './errors.js';
import type { ExecuteOptions, Policy, PolicyContext } from './policy.js';

/** What {@link RetryOptions.onRetry} is told before each wait. */
export interface RetryInfo {
  /** The attempt that failed, which is also the number of the coming retry (1 for the first). */
  readonly attempt: number;
  /** How long the policy waits before the next attempt. */
  readonly delayMs: number;
  /** The error of the failed attempt. */
  readonly error: unknown;
}

/** Options of {@link retry}. */
export interface RetryOptions {
  /** Attempts in all, the first included: 1 never retries. An integer in 1..100. @default 3 */
  readonly maxAttempts?: number;
  /** Delay before each retry. @default exponentialBackoff() (100 ms doubling to 10 s, full jitter) */
  readonly backoff?: Backoff;
  /**
   * Whether the error of attempt `attempt` is worth another attempt. Never asked once the caller's
   * signal is aborted. @default {@link defaultShouldRetry}: every error except a refused call
   */
  readonly shouldRetry?: (error: unknown, attempt: number) => boolean;
  /**
   * Shared cap on retries across executions: each execution records one request, each retry needs
   * `budget.tryRetry()`, else the execution rejects with {@link RetryBudgetExhaustedError}.
   * Any object with those two methods will do (a view that records nothing, when the caller
   * records its requests itself). @default undefined (no budget)
   */
  readonly budget?: RetryBudgetLike;
  /**
   * Cap on any wait, including one raised by an error's `retryAfterMs` hint (a server asking for
   * an hour does not park the caller for an hour).
   * @default 30000
   */
  readonly maxDelayMs?: number;
  /** Called before each wait, e.g. to log or count retries. @default undefined */
  readonly onRetry?: (info: RetryInfo) => void;
  /**
   * Called instead of `onRetry` when a retry is given up because its wait (`delayMs`, a Retry-After
   * hint included) would end past the caller's deadline; the execution then rejects with `error`,
   * the last attempt's. @default undefined
   */
  readonly onDeadlineReached?: (info: RetryInfo) => void;
  /**
   * What the execution rejects with when the budget refuses a retry, given the failed attempt and its
   * error. Return that error itself to hand the caller the outcome it really got (as Envoy does);
   * count or log the refusal here. @default a {@link RetryBudgetExhaustedError} whose cause is the error
   */
  readonly onBudgetExhausted?: (info: { readonly attempt: number; readonly error: unknown }) => unknown;
  /**
   * What the execution rejects with when a policy inside this one refused a retry before it ran
   * (`CIRCUIT_OPEN`, `BULKHEAD_FULL`, `RETRY_BUDGET_EXHAUSTED`: say a breaker that other calls'
   * failures opened during the wait), given that retry's attempt number, the refusal and the error
   * of the attempt before it. Return that error to hand the caller what its attempts really got,
   * rather than a refusal saying the call was not made; the execution ends either way. A first
   * attempt refused is not a retry: it ends with its refusal.
   * @default undefined (the refusal, which the default `shouldRetry` does not retry)
   */
  readonly onRetryRefused?: (info: {
    readonly attempt: number;
    readonly refusal: unknown;
    readonly error: unknown;
  }) => unknown;
}

const REFUSED_CODES: ReadonlySet<string> = new Set([
  'CIRCUIT_OPEN',
  'BULKHEAD_FULL',
  'RETRY_BUDGET_EXHAUSTED',
]);

/**
 * Retries every error except a call that a breaker, bulkhead or budget refused: retrying those at once
 * would only be refused again, and adds load where the system is shedding it.
 */
export function defaultShouldRetry(error: unknown): boolean {
  return !isRefusal(error);
}

/** A call that a breaker, bulkhead or budget refused: it never ran. */
function isRefusal(error: unknown): boolean {
  return isFerryError(error) && REFUSED_CODES.has(error.code);
}

/** Defaults of {@link retry}: 3 attempts, full-jitter exponential backoff from 100 ms to 10 s. */
export const DEFAULT_RETRY = Object.freeze({
  maxAttempts: 3,
  backoff: exponentialBackoff(),
  shouldRetry: defaultShouldRetry as (error: unknown, attempt: number) => boolean,
  maxDelayMs: 30_000,
});

/** What {@link RetryPolicy} reads: any other key is refused. */
const RETRY_OPTION_NAMES = [
  'maxAttempts',
  'backoff',
  'shouldRetry',
  'budget',
  'maxDelayMs',
  'onRetry',
  'onDeadlineReached',
  'onBudgetExhausted',
  'onRetryRefused',
] as const satisfies readonly (keyof RetryOptions)[];

/**
 * Runs a function again when it fails, after a backoff wait: at most `maxAttempts` attempts, never
 * past the caller's deadline, within a shared {@link RetryBudget} if given, and never once the
 * caller's signal is aborted (the wait itself rejects with the signal's reason). An error with a
 * numeric `retryAfterMs` property (an HTTP `Retry-After`) makes the wait at least that long.
 */
export class RetryPolicy implements Policy {
  readonly #maxAttempts: number;
  readonly #backoff: Backoff;
  readonly #shouldRetry: (error: unknown, attempt: number) => boolean;
  readonly #budget: RetryBudgetLike | undefined;
  readonly #maxDelayMs: number;
  readonly #onRetry: ((info: RetryInfo) => void) | undefined;
  readonly #onDeadlineReached: ((info: RetryInfo) => void) | undefined;
  readonly #onBudgetExhausted: ((info: { attempt: number; error: unknown }) => unknown) | undefined;
  readonly #onRetryRefused:
    | ((info: { attempt: number; refusal: unknown; error: unknown }) => unknown)
    | undefined;

  /** @throws {@link InvalidOptionsError} when an option is out of range. */
  constructor(options: RetryOptions = {}) {
    const { maxAttempts, backoff, shouldRetry, maxDelayMs } = {
      ...DEFAULT_RETRY,
      ...knownOptions('retry', options, RETRY_OPTION_NAMES),
    };
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 100) {
      throw new InvalidOptionsError(
        `retry maxAttempts must be an integer in 1..100, not ${describeValue(maxAttempts)}`,
      );
    }
    if (typeof maxDelayMs !== 'number' || !(maxDelayMs >= 0)) {
      throw new InvalidOptionsError(
        `retry maxDelayMs must be a number >= 0, not ${describeValue(maxDelayMs)}`,
      );
    }
    if (typeof backoff !== 'function' || typeof shouldRetry !== 'function') {
      throw new InvalidOptionsError('retry backoff and shouldRetry must be functions');
    }
    // Checked now: each is called only once an attempt has failed, where a TypeError would replace
    // the attempt's error.
    for (const hook of ['onRetry', 'onDeadlineReached', 'onBudgetExhausted', 'onRetryRefused'] as const) {
      if (options[hook] !== undefined && typeof options[hook] !== 'function') {
        throw new InvalidOptionsError(
          `retry ${hook} must be a function, not ${describeValue(options[hook])}`,
        );
      }
    }
    const budget = options.budget as Partial<RetryBudget> | undefined;
    if (
      budget !== undefined &&
      (typeof budget?.recordRequest !== 'function' || typeof budget.tryRetry !== 'function')
    ) {
      throw new InvalidOptionsError(`retry budget must be a RetryBudget, not ${describeValue(budget)}`);
    }
    this.#maxAttempts = maxAttempts;
    this.#backoff = backoff;
    this.#shouldRetry = shouldRetry;
    this.#budget = options.budget;
    this.#maxDelayMs = Math.min(maxDelayMs, MAX_TIMER_MS);
    this.#onRetry = options.onRetry;
    this.#onDeadlineReached = options.onDeadlineReached;
    this.#onBudgetExhausted = options.onBudgetExhausted;
    this.#onRetryRefused = options.onRetryRefused;
  }

  /**
   * Runs `fn` until it succeeds or may not be retried; `fn` receives the attempt number (1 first).
   * @throws the last attempt's error; {@link RetryBudgetExhaustedError} (cause: that error) when
   * the budget refuses a retry; the signal's reason when the caller aborts before the call (`fn`
   * does not run) or during a wait.
   */
  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    const signal = options?.signal ?? NEVER_ABORTED;
    // The caller gave up before the call: nothing is tried (as `timeout` and `bulkhead` refuse it).
    if (signal.aborted) return Promise.reject(signal.reason);
    const deadline = options?.deadline;
    this.#budget?.recordRequest();
    // The first attempt outside an async frame: most calls succeed, and an async function would add
    // promise hops to every one of them.
    const context: DeadlineContext =
      deadline === undefined ? { signal, attempt: 1 } : { signal, attempt: 1, deadline };
    return invoke(fn, context).then(undefined, (error: unknown) =>
      this.#afterFailure(fn, signal, deadline, error),
    );
  }

  async #afterFailure<T>(
    fn: (context: PolicyContext) => PromiseLike<T> | T,
    signal: AbortSignal,
    deadline: number | undefined,
    firstError: unknown,
  ): Promise<T> {
    let error = firstError;
    let previousBackoff = 0;
    for (let attempt = 1; ; attempt++) {
      if (attempt >= this.#maxAttempts || signal.aborted || !this.#shouldRetry(error, attempt)) throw error;
      previousBackoff = this.#backoff(attempt, previousBackoff);
      const delayMs = this.#delay(previousBackoff, error);
      if (deadline !== undefined && Date.now() + delayMs > deadline) {
        this.#onDeadlineReached?.({ attempt, delayMs, error });
        throw error;
      }
      if (this.#budget !== undefined && !this.#budget.tryRetry()) {
        if (this.#onBudgetExhausted !== undefined) throw this.#onBudgetExhausted({ attempt, error });
        throw new RetryBudgetExhaustedError(attempt, error);
      }
      this.#onRetry?.({ attempt, delayMs, error });
      await wait(delayMs, signal);
      const context: DeadlineContext =
        deadline === undefined
          ? { signal, attempt: attempt + 1 }
          : { signal, attempt: attempt + 1, deadline };
      try {
        return await invoke(fn, context);
      } catch (next) {
        if (this.#onRetryRefused !== undefined && isRefusal(next)) {
          throw this.#onRetryRefused({ attempt: attempt + 1, refusal: next, error });
        }
        error = next;
      }
    }
  }

  /** The wait before the next attempt: the backoff, raised to a Retry-After hint, capped. */
  #delay(backoffMs: number, error: unknown): number {
    // A strategy returning NaN or less than 0 means "at once".
    let delayMs = Number.isNaN(backoffMs) ? 0 : Math.max(0, backoffMs);
    const hint = (error as { retryAfterMs?: unknown } | null)?.retryAfterMs;
    if (typeof hint === 'number' && hint > delayMs) delayMs = hint;
    return Math.min(delayMs, this.#maxDelayMs);
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
function wait(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    // Nothing can abort the shared signal: no listener to add (and to remove) then.
    if (signal !== NEVER_ABORTED) signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A policy that retries failed executions.
 *
 * @example
 * const budget = new RetryBudget();
 * const policy = retry({ maxAttempts: 4, budget, onRetry: ({ attempt, delayMs }) => log(attempt, delayMs) });
 * const order = await policy.execute(({ signal, attempt }) => client.get(`/orders/${id}`, { signal }));
 */
export function retry(options: RetryOptions = {}): RetryPolicy {
  return new RetryPolicy(options);
}
