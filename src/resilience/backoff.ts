import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { knownOptions } from '../errors/options-object.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';

/** Exponential backoff without jitter: `initialDelayMs * factor^(n-1)`, capped at `maxDelayMs`. */
export interface ExponentialBackoffOptions {
  /** Delay before the first retry. @default 1000 */
  readonly initialDelayMs?: number;
  /** Growth per retry. @default 2 */
  readonly factor?: number;
  /** Cap on any single delay. @default 60000 */
  readonly maxDelayMs?: number;
}

export const DEFAULT_EXPONENTIAL_BACKOFF = Object.freeze({
  initialDelayMs: 1000,
  factor: 2,
  maxDelayMs: 60_000,
} satisfies Required<ExponentialBackoffOptions>);

const EXPONENTIAL_BACKOFF_KEYS = Object.keys(DEFAULT_EXPONENTIAL_BACKOFF);

/**
 * `options` over `defaults` over {@link DEFAULT_EXPONENTIAL_BACKOFF}, every key filled, as a frozen
 * copy (the caller's object changed later changes nothing). Refuses a key none of them reads; the
 * values are checked by {@link exponentialDelays}.
 * @throws InvalidOptionsError
 */
export function exponentialBackoffOf(
  options: ExponentialBackoffOptions | undefined,
  defaults: ExponentialBackoffOptions = DEFAULT_EXPONENTIAL_BACKOFF,
): Readonly<Required<ExponentialBackoffOptions>> {
  // A string, or a misspelt key (`initialDelay`), would otherwise leave every delay at its default.
  return Object.freeze({
    ...DEFAULT_EXPONENTIAL_BACKOFF,
    ...knownOptions('backoff', defaults, EXPONENTIAL_BACKOFF_KEYS),
    ...knownOptions('backoff', options, EXPONENTIAL_BACKOFF_KEYS),
  });
}

/**
 * The delays before retries 1..`retries`, e.g. 1s, 2s, 4s, 8s with the defaults and 4 retries. A key
 * `options` leaves out (or all of them, `undefined`) is taken from `defaults`, then from
 * {@link DEFAULT_EXPONENTIAL_BACKOFF}: a subscription given `{ maxDelayMs }` keeps its own first delay
 * (an event store subscription's 100 ms, a bus's `subscriptionDefaults`), not 1 s. A value refused is
 * named, and one taken from the defaults says so.
 */
export function exponentialDelays(
  options: ExponentialBackoffOptions | undefined,
  retries: number,
  defaults: ExponentialBackoffOptions = DEFAULT_EXPONENTIAL_BACKOFF,
): number[] {
  const backoff = exponentialBackoffOf(options, defaults);
  const { initialDelayMs, factor, maxDelayMs } = backoff;
  const named = (key: keyof ExponentialBackoffOptions) =>
    `${key} ${describeValue(backoff[key])}${
      options !== undefined && options[key] !== undefined ? '' : ' (not given: the default)'
    }`;
  const problem = !(typeof initialDelayMs === 'number' && initialDelayMs >= 0)
    ? `${named('initialDelayMs')} must be a number >= 0`
    : !(typeof factor === 'number' && factor >= 1)
      ? `${named('factor')} must be a number >= 1`
      : !(typeof maxDelayMs === 'number' && maxDelayMs >= initialDelayMs)
        ? `${named('maxDelayMs')} must be a number >= initialDelayMs, here ${named('initialDelayMs')}`
        : undefined;
  if (problem !== undefined) throw new InvalidOptionsError(`backoff ${problem}`);
  const delays: number[] = [];
  for (let n = 0; n < retries; n++) {
    delays.push(Math.round(Math.min(maxDelayMs, initialDelayMs * factor ** n)));
  }
  return delays;
}

/**
 * Throws `INVALID_OPTIONS` unless every retry delay is a whole number of ms that a timer takes as
 * given, 0 to 2^31-1: Node fires a longer timer at once, so a retry meant to wait days ran
 * immediately and the message or event was given up on (and RabbitMQ refuses such an
 * `x-message-ttl`). Checked on the delays {@link exponentialDelays} computed, so `maxDelayMs:
 * Infinity` with few retries is fine. Bus and event store subscriptions check theirs with it.
 */
export function assertRetryDelays(delays: readonly number[]): void {
  const retry = delays.findIndex((delay) => !Number.isInteger(delay) || delay < 0 || delay > MAX_TIMER_MS);
  if (retry === -1) return;
  throw new InvalidOptionsError(
    `backoff gives retry ${retry + 1} a delay of ${String(delays[retry])} ms, but retry delays must be whole ms from 0 to ${MAX_TIMER_MS} (2^31-1, about 24.8 days): lower backoff.maxDelayMs or initialDelayMs`,
  );
}

/**
 * A backoff strategy for the retry policy: the delay in ms before retry number `attempt` (1 for the
 * first retry), given the delay this strategy returned for the previous retry (0 before the first).
 * Strategies keep no state of their own, so one instance can serve any number of executions.
 */
export type Backoff = (attempt: number, previousDelayMs: number) => number;

/** Options of {@link exponentialBackoff}. */
export interface ExponentialBackoffStrategyOptions {
  /** Upper bound of the delay before the first retry. @default 100 */
  readonly initialDelayMs?: number;
  /** Growth of the upper bound per retry. @default 2 */
  readonly factor?: number;
  /** Cap on any single delay. @default 10000 */
  readonly maxDelayMs?: number;
  /**
   * `'full'` picks each delay uniformly in [0, capped exponential] (AWS "full jitter"), which
   * spreads the retries of many clients that failed together; `'none'` waits the capped exponential.
   * @default 'full'
   */
  readonly jitter?: 'full' | 'none';
  /** Source of randomness in [0, 1), replaceable for deterministic tests. @default Math.random */
  readonly random?: () => number;
}

/** Defaults of {@link exponentialBackoff}: 100 ms doubling up to 10 s, full jitter. */
export const DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY = Object.freeze({
  initialDelayMs: 100,
  factor: 2,
  maxDelayMs: 10_000,
  jitter: 'full',
  random: () => Math.random(),
} satisfies Required<ExponentialBackoffStrategyOptions>);

/**
 * Exponential backoff, full jitter by default: retry n waits a uniform random delay in
 * [0, min(maxDelayMs, initialDelayMs * factor^(n-1))], rounded to whole ms.
 *
 * @example
 * retry({ backoff: exponentialBackoff({ initialDelayMs: 200, maxDelayMs: 5000 }) });
 */
export function exponentialBackoff(options: ExponentialBackoffStrategyOptions = {}): Backoff {
  const { initialDelayMs, factor, maxDelayMs, jitter, random } = {
    ...DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY,
    ...knownOptions('exponentialBackoff', options, Object.keys(DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY)),
  };
  if (
    !areNumbers(initialDelayMs, factor, maxDelayMs) ||
    !(initialDelayMs >= 0) ||
    !(factor >= 1) ||
    !(maxDelayMs >= initialDelayMs) ||
    !Number.isFinite(maxDelayMs) ||
    !Number.isFinite(factor)
  ) {
    throw new InvalidOptionsError(
      'exponentialBackoff needs initialDelayMs >= 0, a finite factor >= 1 and a finite maxDelayMs >= initialDelayMs',
    );
  }
  if (jitter !== 'full' && jitter !== 'none') {
    throw new InvalidOptionsError(
      `exponentialBackoff jitter must be 'full' or 'none', not ${describeValue(jitter)}`,
    );
  }
  if (typeof random !== 'function') {
    throw new InvalidOptionsError(
      `exponentialBackoff random must be a function, not ${describeValue(random)}`,
    );
  }
  return (attempt) => {
    const capped = Math.min(maxDelayMs, initialDelayMs * factor ** Math.max(0, attempt - 1));
    return Math.round(jitter === 'full' ? random() * capped : capped);
  };
}

/** Options of {@link decorrelatedJitter}. */
export interface DecorrelatedJitterOptions {
  /** Smallest delay, and the base the first retry's delay grows from. @default 100 */
  readonly initialDelayMs?: number;
  /** Cap on any single delay. @default 10000 */
  readonly maxDelayMs?: number;
  /** Source of randomness in [0, 1), replaceable for deterministic tests. @default Math.random */
  readonly random?: () => number;
}

/** Defaults of {@link decorrelatedJitter}. */
export const DEFAULT_DECORRELATED_JITTER = Object.freeze({
  initialDelayMs: 100,
  maxDelayMs: 10_000,
  random: () => Math.random(),
} satisfies Required<DecorrelatedJitterOptions>);

/**
 * AWS "decorrelated jitter": each delay is `min(maxDelayMs, random between initialDelayMs and
 * previous * 3)`, rounded to whole ms; the first retry treats the previous delay as initialDelayMs.
 * Grows about as fast as exponential backoff while keeping clients apart.
 */
export function decorrelatedJitter(options: DecorrelatedJitterOptions = {}): Backoff {
  const { initialDelayMs, maxDelayMs, random } = {
    ...DEFAULT_DECORRELATED_JITTER,
    ...knownOptions('decorrelatedJitter', options, Object.keys(DEFAULT_DECORRELATED_JITTER)),
  };
  if (
    !areNumbers(initialDelayMs, maxDelayMs) ||
    !(initialDelayMs >= 0) ||
    !(maxDelayMs >= initialDelayMs) ||
    !Number.isFinite(maxDelayMs)
  ) {
    throw new InvalidOptionsError(
      'decorrelatedJitter needs initialDelayMs >= 0 and a finite maxDelayMs >= initialDelayMs',
    );
  }
  if (typeof random !== 'function') {
    throw new InvalidOptionsError(
      `decorrelatedJitter random must be a function, not ${describeValue(random)}`,
    );
  }
  return (_attempt, previousDelayMs) => {
    const upper = Math.max(initialDelayMs, previousDelayMs) * 3;
    return Math.round(Math.min(maxDelayMs, initialDelayMs + random() * (upper - initialDelayMs)));
  };
}

/** Numbers only: a string passes the range checks by coercion, and `'100' * 2` is a number again. */
function areNumbers(...values: unknown[]): boolean {
  return values.every((value) => typeof value === 'number');
}

/** The same delay before every retry. */
export function constantBackoff(delayMs: number): Backoff {
  if (!Number.isFinite(delayMs) || !(delayMs >= 0)) {
    throw new InvalidOptionsError(`constantBackoff needs a finite delay >= 0, not ${describeValue(delayMs)}`);
  }
  return () => delayMs;
}
