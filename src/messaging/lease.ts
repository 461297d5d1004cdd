/** Options shared by the durable inboxes. */
export interface DurableInboxOptions {
  /**
   * How long a claim holds a key before another delivery may take it over (its holder is presumed
   * dead). Renewed while the handler runs. @default 30000
   */
  readonly leaseMs?: number;
  /** How long processed keys are remembered. @default 604800000 (7 days) */
  readonly retentionMs?: number;
}

export const DEFAULT_DURABLE_INBOX_OPTIONS = Object.freeze({
  leaseMs: 30_000,
  retentionMs: 7 * 24 * 3_600_000,
} satisfies Required<DurableInboxOptions>);

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
