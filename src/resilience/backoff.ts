import { InvalidOptionsError } from '../errors/ferry-error.js';

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

/** The delays before retries 1..`retries`, e.g. 1s, 2s, 4s, 8s with the defaults and 4 retries. */
export function exponentialDelays(options: ExponentialBackoffOptions, retries: number): number[] {
  const { initialDelayMs, factor, maxDelayMs } = { ...DEFAULT_EXPONENTIAL_BACKOFF, ...options };
  if (!(initialDelayMs >= 0) || !(factor >= 1) || !(maxDelayMs >= initialDelayMs)) {
    throw new InvalidOptionsError(
      'backoff needs initialDelayMs >= 0, factor >= 1 and maxDelayMs >= initialDelayMs',
    );
  }
  const delays: number[] = [];
  for (let n = 0; n < retries; n++) {
    delays.push(Math.round(Math.min(maxDelayMs, initialDelayMs * factor ** n)));
  }
  return delays;
}
