import { InvalidOptionsError } from '../errors/ferry-error.js';

/** Options shared by the durable inboxes. */
export interface DurableInboxOptions {
  /**
   * How long a claim holds a key before another delivery may take it over (its holder is presumed
   * dead). Renewed while the handler runs. A positive integer, at most 2^31 - 1. @default 30000
   */
  readonly leaseMs?: number | undefined;
  /** How long processed keys are remembered; a positive integer. @default 604800000 (7 days) */
  readonly retentionMs?: number | undefined;
}

export const DEFAULT_DURABLE_INBOX_OPTIONS = Object.freeze({
  leaseMs: 30_000,
  retentionMs: 7 * 24 * 3_600_000,
} satisfies Required<DurableInboxOptions>);

/** The largest delay a Node timer keeps (longer ones fire at once). */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * A positive integer option, at most `max`; `undefined` (given or left out) means `fallback`.
 * @throws InvalidOptionsError for anything else.
 */
export function positiveIntegerOption(
  name: string,
  value: number | undefined,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > max) {
    throw new InvalidOptionsError(
      `${name} must be a positive integer of at most ${max} (got ${String(value)})`,
    );
  }
  return value;
}

/** Durable inbox options with defaults applied and values checked. @throws InvalidOptionsError */
export function resolveDurableInboxOptions(
  options: DurableInboxOptions = {},
): Required<{ [K in keyof DurableInboxOptions]: number }> {
  const d = DEFAULT_DURABLE_INBOX_OPTIONS;
  return {
    leaseMs: positiveIntegerOption('leaseMs', options.leaseMs, d.leaseMs, MAX_TIMER_MS),
    retentionMs: positiveIntegerOption('retentionMs', options.retentionMs, d.retentionMs),
  };
}

/** Runs `renew` every third of the lease until stopped, so a slow handler keeps its claim. */
export function keepLease(leaseMs: number, renew: () => Promise<unknown>): () => void {
  const timer = setInterval(
    () => {
      renew().catch(() => {
        // The next renewal tries again; if the lease lapses, a duplicate may run: at least once.
      });
    },
    Math.max(10, Math.floor(leaseMs / 3)),
  );
  timer.unref();
  return () => clearInterval(timer);
}

/** Waits between looks at a key another delivery holds. */
export function holdBackoff(round: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.min(500, 20 * 2 ** round)));
}
