import { positiveIntegerOption } from '../errors/integer-option.js';
import { checkOptions } from '../errors/options-object.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { ClaimLostError } from './claim-lost-error.js';
import type { InboxClaim } from './inbox.js';

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

/** The keys of {@link DurableInboxOptions}. @internal */
export const DURABLE_INBOX_OPTION_NAMES: readonly string[] = ['leaseMs', 'retentionMs'];

/** Durable inbox options with defaults applied and values checked. @throws InvalidOptionsError */
export function resolveDurableInboxOptions(
  options: DurableInboxOptions = {},
): Required<{ [K in keyof DurableInboxOptions]: number }> {
  checkOptions('inbox', options, DURABLE_INBOX_OPTION_NAMES);
  const d = DEFAULT_DURABLE_INBOX_OPTIONS;
  return {
    leaseMs: positiveIntegerOption('leaseMs', options.leaseMs, d.leaseMs, MAX_TIMER_MS),
    retentionMs: positiveIntegerOption('retentionMs', options.retentionMs, d.retentionMs),
  };
}

/** What a durable inbox does to its storage for one claim; each resolves false when the claim is not the holder's. */
export interface ClaimStorage {
  /** Extends the lease of the holder's claim. */
  renew(): Promise<boolean>;
  /** Marks the key processed, if the holder still has it. */
  complete(): Promise<boolean>;
  /** Deletes the holder's claim, if it still has it. */
  release(): Promise<unknown>;
}

/**
 * A durable claim: renewed every third of the lease while held; a renewal or a completion that finds
 * the claim gone aborts `signal` and makes `complete` throw `ClaimLostError`. Storage operations of
 * one claim never overlap, so a renewal in flight cannot race a completion.
 */
export function leasedClaim(key: string, leaseMs: number, storage: ClaimStorage): InboxClaim {
  const controller = new AbortController();
  let last: Promise<unknown> = Promise.resolve();
  let ended = false;
  const serial = <T>(operation: () => Promise<T>): Promise<T> => {
    const next = last.then(operation, operation);
    last = next.catch(() => {});
    return next;
  };
  const lose = (): ClaimLostError => {
    const error = new ClaimLostError(key);
    if (!controller.signal.aborted) controller.abort(error);
    return error;
  };
  const timer = setInterval(
    () => {
      void serial(async () => {
        if (ended) return;
        if (!(await storage.renew())) {
          ended = true;
          clearInterval(timer);
          lose();
        }
      }).catch(() => {
        // The next renewal tries again; if the lease lapses meanwhile, that renewal finds the claim lost.
      });
    },
    Math.max(10, Math.floor(leaseMs / 3)),
  );
  timer.unref();
  const end = (): boolean => {
    clearInterval(timer);
    const wasEnded = ended;
    ended = true;
    return wasEnded;
  };
  return {
    signal: controller.signal,
    complete: () => {
      if (end() && controller.signal.aborted) return Promise.reject(lose());
      return serial(async () => {
        if (!(await storage.complete())) throw lose();
      });
    },
    abandon: () => {
      if (end()) return;
      serial(() => storage.release()).catch(() => {
        // The lease runs out instead.
      });
    },
  };
}

/** Waits between looks at a key another delivery holds. */
export function holdBackoff(round: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.min(500, 20 * 2 ** round)));
}
