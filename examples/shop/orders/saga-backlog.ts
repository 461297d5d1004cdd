/**
 * Whether the order saga is behind, so that `POST /orders` refuses new orders (503, `Retry-After`)
 * instead of taking orders it would not carry out before their deadline. Unpaced load on the
 * distributed shop showed why: it took orders five times faster than its saga carried them out, and
 * a third of them ended cancelled `timeout`.
 *
 * What it watches is the wait for an order to end, confirmed or cancelled, from its placing: a
 * backlog anywhere on the way shows in it (the saga's queue, inventory's, payments', a payment
 * provider answering slowly). The wait an order placed now would have is foretold, not measured
 * once it is over (a backlog is seen late that way: by the time an order ends 10 s late, orders
 * have been taken for far more than 10 s more): the orders placed here and not yet ended, over the
 * rate orders end. Orders end roughly in the order they were placed, so an order is taken as ended
 * once one placed after it has. With no order ended for `windowMs` there is no rate: the wait of
 * the oldest order not ended stands for it. And the rate orders ended at is what the saga was asked
 * for, not all it can do: orders are refused only once the oldest of them has waited `minWaitMs` (a
 * fifth of the limit), so that a burst a saga carries out promptly is not taken for a backlog. Until
 * orders end there is no telling how fast they can: an idle shop takes a burst of `minPending` (128)
 * at most before any of it has ended, and at most as many orders pending as ended within the last
 * `limitMs`, when that is more.
 *
 * Each process keeps its own: instances of orders compete for the saga's messages, so each hears of
 * a fair share of the orders that end, as the gateway gives each a fair share of the orders (and
 * before refusing, it asks whether its oldest order has ended unheard: see `behindForChecked`).
 * Times are wall-clock (an order's placing time may come from another instance): machines whose
 * clocks disagree by seconds foretell wrong.
 */

/** How long an order found waiting is believed to wait still, ms. */
const RECHECK_MS = 250;

export interface SagaBacklogOptions {
  /** New orders are refused while one placed now would wait longer than this to end (ms, > 0). */
  readonly limitMs: number;
  /**
   * Orders are refused only once the oldest order not ended has waited this long (ms, > 0): the
   * rate orders ended at is what the saga was asked for, not all it can do, so a burst after a quiet
   * spell foretells long waits that a saga carrying orders out promptly never makes. @default limitMs / 5
   */
  readonly minWaitMs?: number;
  /** The span over which the rate orders end at is counted (ms, > 0). @default 2000 */
  readonly windowMs?: number;
  /**
   * Orders that may be pending here at once, at least (an integer > 0): more are refused while fewer
   * than that many ended within the last `limitMs` (what the shop showed it carries out in that
   * time). It bounds what an idle shop takes in a burst before any order of it ends and tells the
   * rate. @default 128
   */
  readonly minPending?: number;
  /** Wall-clock time, ms since the epoch. @default Date.now */
  readonly now?: () => number;
}

export class SagaBacklog {
  readonly limitMs: number;
  readonly minWaitMs: number;
  readonly windowMs: number;
  readonly minPending: number;
  readonly #now: () => number;
  /** Orders placed here and when, oldest first; those up to `#head` have ended. */
  #placed: { readonly id: string; readonly at: number }[] = [];
  #head = 0;
  /** Orders let through by {@link admit} and not yet placed or dropped. */
  #placing = 0;
  /** When the last order heard of as ended was placed (orders end roughly in that order). */
  #frontier = Number.NEGATIVE_INFINITY;
  /**
   * When orders were heard of as ended, oldest first: from `#windowHead` on, those within the last
   * `windowMs` (the rate); from `#latelyHead` on, those within the last `limitMs` (the cap).
   */
  #endings: number[] = [];
  #windowHead = 0;
  #latelyHead = 0;
  /** When the endings heard since the last spell of `windowMs` without any began to come. */
  #endingSince = 0;
  /** The oldest order found waiting still, and until when that is believed. */
  #waitingStill: { readonly id: string; readonly until: number } | undefined;

  constructor(options: SagaBacklogOptions) {
    for (const name of ['limitMs', 'minWaitMs', 'windowMs'] as const) {
      const value = options[name];
      if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
        throw new RangeError(`SagaBacklog ${name} must be a number of ms above 0, not ${String(value)}`);
      }
    }
    this.limitMs = options.limitMs;
    this.minWaitMs = options.minWaitMs ?? options.limitMs / 5;
    this.windowMs = options.windowMs ?? 2000;
    const minPending = options.minPending ?? 128;
    if (!(Number.isSafeInteger(minPending) && minPending > 0)) {
      throw new RangeError(
        `SagaBacklog minPending must be a whole number above 0, not ${String(minPending)}`,
      );
    }
    this.minPending = minPending;
    this.#now = options.now ?? Date.now;
  }

  /**
   * The time to give an order about to be placed here (before its commit: at or before the time its
   * `order.created` will carry).
   */
  now(): number {
    return this.#now();
  }

  /**
   * Order `id` was placed here at `at` (from {@link now}, before its commit); one let through by
   * {@link admit} is no longer counted as placing.
   */
  placed(id: string, at: number): void {
    this.#placed.push({ id, at });
    if (this.#placing > 0) this.#placing--;
  }

  /** An order let through by {@link admit} was not placed after all. */
  dropped(): void {
    if (this.#placing > 0) this.#placing--;
  }

  /**
   * {@link behindForChecked}, and when not behind the order is let through: counted as pending at
   * once (until {@link placed} or {@link dropped}), so that a burst let through together cannot pass
   * the cap on orders pending.
   */
  admit(stillWaiting: (orderId: string) => Promise<boolean>): Promise<number | undefined> {
    return this.#checked(stillWaiting, true);
  }

  /** An order placed at `placedAt` (ms since the epoch) ended: confirmed or cancelled. */
  ended(placedAt: number): void {
    if (!Number.isFinite(placedAt)) return;
    this.#forget();
    const now = this.#now();
    if (this.#inWindow() === 0) this.#endingSince = now;
    this.#endings.push(now);
    this.passed(placedAt);
  }

  /**
   * An order placed at `placedAt` has ended, as learned other than by hearing of it (another
   * process did): the orders placed up to then are taken as ended, and the rate of endings is left
   * as it is.
   */
  passed(placedAt: number): void {
    if (Number.isFinite(placedAt) && placedAt > this.#frontier) this.#frontier = placedAt;
  }

  /** The oldest order placed here that is taken as not ended yet. */
  oldest(): { readonly id: string; readonly at: number } | undefined {
    this.#forget();
    return this.#placed[this.#head];
  }

  /**
   * Orders placed here not ended yet (taken as ended once one placed later has; placing times the
   * wall clock stepped back to may be taken as ended early).
   */
  get waiting(): number {
    this.#forget();
    return this.#placed.length - this.#head + this.#placing;
  }

  /** The wait an order placed now would have until it ends, foretold, ms. */
  foretold(): number {
    const waiting = this.waiting;
    if (waiting === 0) return 0;
    const now = this.#now();
    const inWindow = this.#inWindow();
    if (inWindow === 0) return this.oldestWait();
    // Endings that began to come less than a window ago are counted over the time since (orders
    // ending again after a pause: the first of them foretell short waits, not long ones).
    const span = Math.max(1, Math.min(this.windowMs, now - this.#endingSince));
    return (waiting / inWindow) * span;
  }

  /** How long the oldest order not ended has waited, ms (0 with none waiting). */
  oldestWait(): number {
    const oldest = this.oldest();
    return oldest === undefined ? 0 : this.#now() - oldest.at;
  }

  /**
   * While behind (as many orders pending as {@link pendingCap}; or the oldest has waited
   * `minWaitMs` and one placed now is foretold to wait longer than `limitMs`): how long a client
   * should wait before sending the order again, ms (1 s over the cap; at most 5 s); else undefined.
   */
  behindFor(): number | undefined {
    if (this.waiting >= this.pendingCap()) return 1000;
    if (this.oldestWait() < this.minWaitMs) return undefined;
    const foretold = this.foretold();
    return foretold > this.limitMs ? Math.min(foretold - this.limitMs, 5000) : undefined;
  }

  /**
   * As {@link behindFor}, once `stillWaiting` has confirmed that the oldest order taken as waiting
   * still is. Another process may have heard of its end (instances of orders compete for the saga's
   * messages: with few orders, one may hear of none of its own orders' ends): left to what is heard
   * here, such an order would keep the shop refusing orders, and with none taken, none ending, for
   * good. One found no longer
   * waiting is passed by and the next oldest asked, as many as it takes; one found waiting is believed
   * for 250 ms, so that a backlog costs one question a quarter second, not one a request. A question
   * that fails counts as waiting.
   */
  behindForChecked(stillWaiting: (orderId: string) => Promise<boolean>): Promise<number | undefined> {
    return this.#checked(stillWaiting, false);
  }

  async #checked(
    stillWaiting: (orderId: string) => Promise<boolean>,
    admit: boolean,
  ): Promise<number | undefined> {
    // Let through in the same turn as the answer is worked out: no other request's check between.
    const settle = (behind: number | undefined) => {
      if (behind === undefined && admit) this.#placing++;
      return behind;
    };
    // Not bounded a call: each order passed by is gone for good, so the questions asked over time
    // are at most one an order placed (and one a quarter second while the oldest waits).
    for (;;) {
      const behind = this.behindFor();
      const oldest = this.oldest();
      if (behind === undefined || oldest === undefined) return settle(behind);
      const believed = this.#waitingStill;
      if (believed?.id === oldest.id && believed.until > this.#now()) return behind;
      let waiting: boolean;
      try {
        waiting = await stillWaiting(oldest.id);
      } catch {
        waiting = true;
      }
      if (waiting) {
        this.#waitingStill = { id: oldest.id, until: this.#now() + RECHECK_MS };
        return settle(this.behindFor());
      }
      this.passed(oldest.at);
    }
  }

  /** Orders that may be pending here at once: `minPending`, or as many as ended within the last `limitMs`. */
  pendingCap(): number {
    this.#forget();
    return Math.max(this.minPending, this.#endings.length - this.#latelyHead);
  }

  /** Endings heard within the last `windowMs` (as of the last `#forget`). */
  #inWindow(): number {
    return this.#endings.length - this.#windowHead;
  }

  #forget(): void {
    while (this.#head < this.#placed.length && (this.#placed[this.#head]?.at as number) <= this.#frontier)
      this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#placed.length) {
      this.#placed = this.#placed.slice(this.#head);
      this.#head = 0;
    }
    const now = this.#now();
    const endings = this.#endings;
    while (this.#windowHead < endings.length && (endings[this.#windowHead] as number) <= now - this.windowMs)
      this.#windowHead++;
    while (this.#latelyHead < endings.length && (endings[this.#latelyHead] as number) <= now - this.limitMs)
      this.#latelyHead++;
    const gone = Math.min(this.#windowHead, this.#latelyHead);
    if (gone > 1024 && gone * 2 > endings.length) {
      this.#endings = endings.slice(gone);
      this.#windowHead -= gone;
      this.#latelyHead -= gone;
    }
  }
}
