/** Options of the relay that publishes committed outbox rows. */
export interface RelayOptions {
  /** Rows taken per round (one per key). @default 256 */
  readonly batchSize?: number;
  /**
   * How long a taken row is this relay's alone; past it (a relay that died), another relay takes
   * it over and publishes it again (a duplicate consumers' inboxes drop). A row held until its
   * message is settled (see `holdUntilSettled`) has its lease renewed every third of it while this
   * relay lives: after a crash its message goes out again once the lease ends, within `leaseMs`.
   * @default 30000, or 10000 ({@link DEFAULT_HELD_LEASE_MS}) when rows are held until settled
   */
  readonly leaseMs?: number;
  /** Longest wait for one publish to be confirmed before it counts as a failed attempt. @default 10000 */
  readonly publishTimeoutMs?: number;
  /**
   * Safety net: how often the relay looks for rows it was not told about (rows committed by a process
   * whose wake-up it missed). Commits of this process wake it at once, and so do commits of other
   * processes where the database can say so (PostgreSQL LISTEN/NOTIFY, SQLite's data version).
   * @default 1000
   */
  readonly pollIntervalMs?: number;
  /**
   * Attempts of a message the broker refuses (unroutable, too large, nacked, or any error that is
   * not the broker being unreachable) before it is set aside as failed; a broker that cannot be
   * reached is waited for without limit, with backoff. @default 10
   */
  readonly maxAttempts?: number;
  /** First retry delay of a refused message, doubled each attempt (with jitter) up to 60 s. @default 1000 */
  readonly retryDelayMs?: number;
  /**
   * With a transport that holds messages in process memory only (the memory transport: see
   * `Transport.publishTracked`), keep each row after the confirm, held, until its message is settled
   * by every subscription it reached (handled and acked, dead-lettered, or its queue deleted); held
   * rows are deleted in batches as their settlements arrive. A process that dies first leaves the
   * row in the outbox, and a relay publishes it again once its lease ends (consumers' inboxes drop
   * the duplicate). The round does not wait for settlements, and a held row does not hold back the
   * next row of its key: that one goes out after the confirm, in commit order. `false` deletes rows
   * at the confirm, as with a durable broker; unused with such a broker. @default true
   */
  readonly holdUntilSettled?: boolean;
  /**
   * How long a woken relay lets commits gather before its next round, when the last round did not
   * find a full batch waiting: under load, one round takes the messages of many commits instead of
   * one each, and each round's bookkeeping (a claim, a hold, a delete: a commit each) is shared by
   * all of them. Adds at most this much to a message's way out. `0` starts a round at every wake-up.
   * @default 2
   */
  readonly lingerMs?: number;
  /**
   * With rows held until settled (see `holdUntilSettled`): how long `outbox.close()` waits, after the
   * relay's last round, for the messages this relay published to be settled, deleting their rows as
   * the settlements arrive (leases still renewed), so that an orderly shutdown leaves nothing handled
   * to be sent again after the restart. What is still unsettled then (a handler that does not end, a
   * message nobody consumes any more) stays in the outbox, logged, and goes out again once its lease
   * ends. Time of the outbox's clock, and never more than this much real time. `0` does not wait.
   * @default 5000
   */
  readonly settleOnCloseMs?: number;
}

export const DEFAULT_RELAY_OPTIONS = Object.freeze({
  batchSize: 256,
  leaseMs: 30_000,
  publishTimeoutMs: 10_000,
  pollIntervalMs: 1000,
  maxAttempts: 10,
  retryDelayMs: 1000,
  holdUntilSettled: true,
  lingerMs: 2,
  settleOnCloseMs: 5000,
} satisfies Required<RelayOptions>);

/**
 * The default lease when rows are held until settled: shorter than a durable broker's, since it is how
 * long the messages of a process that died wait before they go out again; a live relay renews it.
 */
export const DEFAULT_HELD_LEASE_MS = 10_000;
