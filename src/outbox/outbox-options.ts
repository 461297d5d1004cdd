import { InvalidOptionsError } from '../errors/ferry-error.js';
import { integerOption, positiveIntegerOption } from '../errors/integer-option.js';
import { isStorableText } from '../errors/storable-text.js';
import type { EventStore } from '../eventstore/store.js';
import type { Logger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts, NoContracts } from '../messaging/contracts.js';
import type { Clock } from '../time/clock.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { DEFAULT_HELD_LEASE_MS, DEFAULT_RELAY_OPTIONS, type RelayOptions } from './relay-options.js';

/** Options of {@link createOutbox}. */
export interface OutboxOptions<C extends Contracts = NoContracts> {
  /** The store whose database holds the outbox (memory, SQLite or PostgreSQL). */
  readonly store: EventStore;
  /** The bus the relay publishes to; its `service` and `contracts` shape and check the messages. */
  readonly bus: Bus<C>;
  /**
   * The relay that publishes committed messages, or `false` to run none in this process (another
   * process of the service relays). @default a relay with {@link DEFAULT_RELAY_OPTIONS}
   */
  readonly relay?: RelayOptions | false;
  /**
   * How many times a unit of work is run again after it lost a race: a `ConcurrencyError` from an
   * append or a `SagaConcurrencyError`; then the error is rethrown. Each run is a new transaction.
   * @default 3
   */
  readonly maxRetries?: number;
  /**
   * How long the transactional inbox remembers handled messages (a redelivery older than this runs
   * again). Older marks are deleted in small batches. @default 604800000 (7 days)
   */
  readonly inboxRetentionMs?: number;
  /** Time of due dates, leases and relay timers; a `VirtualClock` in tests. @default systemClock */
  readonly clock?: Clock;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

export const DEFAULT_OUTBOX_OPTIONS = Object.freeze({
  maxRetries: 3,
  inboxRetentionMs: 7 * 24 * 3_600_000,
});

/**
 * Relay options with defaults applied and values checked; `tracked`: the transport tracks settlements
 * (`Transport.publishTracked`), which makes the default lease shorter when rows are held.
 * @throws InvalidOptionsError
 */
export function relayOptions(options: RelayOptions, tracked: boolean): Required<RelayOptions> {
  const d = DEFAULT_RELAY_OPTIONS;
  if (options.holdUntilSettled !== undefined && typeof options.holdUntilSettled !== 'boolean') {
    throw new InvalidOptionsError('relay.holdUntilSettled must be a boolean');
  }
  const holdUntilSettled = options.holdUntilSettled ?? d.holdUntilSettled;
  const leaseMs = holdUntilSettled && tracked ? DEFAULT_HELD_LEASE_MS : d.leaseMs;
  return {
    batchSize: positiveIntegerOption('relay.batchSize', options.batchSize, d.batchSize, 10_000),
    leaseMs: positiveIntegerOption('relay.leaseMs', options.leaseMs, leaseMs, MAX_TIMER_MS),
    publishTimeoutMs: positiveIntegerOption(
      'relay.publishTimeoutMs',
      options.publishTimeoutMs,
      d.publishTimeoutMs,
      MAX_TIMER_MS,
    ),
    pollIntervalMs: positiveIntegerOption(
      'relay.pollIntervalMs',
      options.pollIntervalMs,
      d.pollIntervalMs,
      MAX_TIMER_MS,
    ),
    maxAttempts: positiveIntegerOption('relay.maxAttempts', options.maxAttempts, d.maxAttempts, 1000),
    retryDelayMs: positiveIntegerOption(
      'relay.retryDelayMs',
      options.retryDelayMs,
      d.retryDelayMs,
      MAX_TIMER_MS,
    ),
    holdUntilSettled,
    lingerMs: integerOption('relay.lingerMs', options.lingerMs, d.lingerMs, 0, 1000),
    settleOnCloseMs: integerOption(
      'relay.settleOnCloseMs',
      options.settleOnCloseMs,
      d.settleOnCloseMs,
      0,
      MAX_TIMER_MS,
    ),
  };
}

export function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
    throw new InvalidOptionsError('limit must be an integer from 1 to 10000');
  }
}

/**
 * The message ids of `ids` a store can hold: an array of strings (`INVALID_OPTIONS` naming `call`
 * otherwise, holes of a sparse array included), without those that name nothing (see
 * {@link namesNothing}), alike on every store.
 */
export function lookupIds(call: string, ids: readonly string[]): string[] {
  if (!Array.isArray(ids)) throw new InvalidOptionsError(`${call} takes an array of message ids`);
  const kept: string[] = [];
  // A loop, not some(): some() skips the holes of a sparse array.
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (typeof id !== 'string') throw new InvalidOptionsError(`${call} takes an array of message ids`);
    if (!namesNothing(id)) kept.push(id);
  }
  return kept;
}

/**
 * An id or key holding NUL or a lone surrogate names nothing: publishing refuses such ids and the
 * outbox such keys, PostgreSQL text cannot hold NUL, and it would take a lone surrogate as U+FFFD,
 * finding (and cancelling) a message whose id holds that character instead.
 */
export function namesNothing(key: string): boolean {
  return !isStorableText(key);
}
