import { exponentialBackoff, InvalidOptionsError } from 'ferry';

/** How long a supervisor waits before it starts a crashed instance again. */
export interface RestartBackoffOptions {
  /** Delay before the first restart after a crash. @default 250 */
  readonly initialDelayMs?: number;
  /** Growth of the delay per consecutive crash. @default 2 */
  readonly factor?: number;
  /** Cap on any single delay: a crash loop restarts at this pace forever. @default 10000 */
  readonly maxDelayMs?: number;
  /**
   * Share of each delay taken off at random, so instances that crashed together (a lost database,
   * say) do not all restart in the same millisecond: a delay d becomes a uniform pick in
   * [d × (1 − jitter), d]. Never longer than the cap, never 0 unless jitter is 1. @default 0.2
   */
  readonly jitter?: number;
  /** An instance that ran at least this long before it exited counts as healthy: its next delay starts again from `initialDelayMs`. @default 30000 */
  readonly resetAfterMs?: number;
  /** Source of randomness in [0, 1), replaceable for deterministic tests. @default Math.random */
  readonly random?: () => number;
}

/** Defaults of {@link RestartBackoffOptions}: 250 ms doubling up to 10 s, 20 % jitter, reset after 30 s up. */
export const DEFAULT_RESTART_BACKOFF = Object.freeze({
  initialDelayMs: 250,
  factor: 2,
  maxDelayMs: 10_000,
  jitter: 0.2,
  resetAfterMs: 30_000,
  random: () => Math.random(),
} satisfies Required<RestartBackoffOptions>);

/** The restart pace of one supervisor, options checked. */
export interface RestartBackoff {
  /** The delay before restart number `crash` of a crash streak (1 for the first), in whole ms. */
  delayMs(crash: number): number;
  /** Uptime after which an exit starts a new streak. */
  readonly resetAfterMs: number;
}

/** Checks `options` and builds the delays from them (Ferry's exponential backoff, then the jitter). */
export function restartBackoff(options: RestartBackoffOptions = {}): RestartBackoff {
  const { initialDelayMs, factor, maxDelayMs, jitter, resetAfterMs, random } = {
    ...DEFAULT_RESTART_BACKOFF,
    ...options,
  };
  if (!(jitter >= 0 && jitter <= 1)) {
    throw new InvalidOptionsError(`restart backoff jitter must be between 0 and 1, not ${jitter}`);
  }
  if (!(resetAfterMs >= 0) || !Number.isFinite(resetAfterMs)) {
    throw new InvalidOptionsError(
      `restart backoff resetAfterMs must be a finite number >= 0, not ${resetAfterMs}`,
    );
  }
  const exponential = exponentialBackoff({ initialDelayMs, factor, maxDelayMs, jitter: 'none' });
  return {
    resetAfterMs,
    delayMs: (crash) => {
      const delay = exponential(Math.max(1, crash), 0);
      return Math.round(delay * (1 - jitter * random()));
    },
  };
}
