/**
 * Whether the order saga is behind, so that `POST /orders` refuses new orders (503, `Retry-After`)
 * instead of taking orders it would not carry out before their deadline. Unpaced load on the
 * distributed shop showed why: it took orders five times faster than its saga carried them out, and
 * a third of them ended cancelled `timeout`.
 *
 * What it watches is the wait for an order's stock: from its placing until the saga hears the
 * reservation's answer (or the order's deadline comes first). That is where a backlog shows (the
 * saga's queue, inventory's, their replies), and it holds none of the time the saga spends on
 * purpose (the payment provider's retries come after it). The wait an order placed now would have
 * is foretold, not measured once it is over (a backlog is seen late that way: by the time an answer
 * comes 10 s late, orders are taken for far more than 10 s more): the orders placed here and not
 * yet answered, over the rate answers come. Answers come roughly in the order the orders were
 * placed, so an order is taken as answered once one placed after it is. With no answer heard for
 * `windowMs` there is no rate: the wait of the oldest order not answered stands for it. And the rate
 * answers came at is what the saga was asked for, not all it can do: orders are refused only once
 * the oldest of them has waited `minWaitMs` (a fifth of the limit), so that a burst a saga answers
 * promptly is not taken for a backlog.
 *
 * Each process keeps its own: instances of orders compete for the saga's messages, so each hears a
 * fair share of the answers, as the gateway gives each a fair share of the orders. Times are
 * wall-clock (an order's placing time may come from another instance): machines whose clocks
 * disagree by seconds foretell wrong.
 */

/** How long an order found waiting is believed to wait still, ms. */
const RECHECK_MS = 250;

export interface SagaBacklogOptions {
  /** New orders are refused while one placed now would wait longer than this for its stock (ms, > 0). */
  readonly limitMs: number;
  /**
   * Orders are refused only once the oldest order not answered has waited this long (ms, > 0): the
   * rate answers came at is what the saga was asked for, not all it can do, so a burst after a quiet
   * spell foretells long waits that a saga answering promptly never makes. @default limitMs / 5
   */
  readonly minWaitMs?: number;
  /** The span over which the rate of answers is counted (ms, > 0). @default 2000 */
  readonly windowMs?: number;
  /** Wall-clock time, ms since the epoch. @default Date.now */
  readonly now?: () => number;
}

export class SagaBacklog {
  readonly limitMs: number;
  readonly minWaitMs: number;
  readonly windowMs: number;
  readonly #now: () => number;
  /** Orders placed here and when, oldest first; those up to `#head` are answered. */
  #placed: { readonly id: string; readonly at: number }[] = [];
  #head = 0;
  /** When the last order answered was placed (answers come roughly in that order). */
  #frontier = Number.NEGATIVE_INFINITY;
  /** When answers were heard, within the last `windowMs`, oldest first. */
  #answers: number[] = [];
  /** When the answers heard since the last spell of `windowMs` without any began to come. */
  #answeringSince = 0;
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
    this.#now = options.now ?? Date.now;
  }

  /**
   * The time to give an order about to be placed here (before its commit: at or before the time its
   * `order.created` will carry).
   */
  now(): number {
    return this.#now();
  }

  /** Order `id` was placed here at `at` (from {@link now}, before its commit). */
  placed(id: string, at: number): void {
    this.#placed.push({ id, at });
  }

  /** The stock of an order placed at `placedAt` (ms since the epoch) was answered, or its deadline came. */
  answered(placedAt: number): void {
    if (!Number.isFinite(placedAt)) return;
    this.#forget();
    const now = this.#now();
    if (this.#answers.length === 0) this.#answeringSince = now;
    this.#answers.push(now);
    this.passed(placedAt);
  }

  /**
   * An order placed at `placedAt` is no longer waiting, as learned other than by its answer (an
   * answer another process heard): the orders placed up to then are taken as answered, and the rate
   * of answers is left as it is.
   */
  passed(placedAt: number): void {
    if (Number.isFinite(placedAt) && placedAt > this.#frontier) this.#frontier = placedAt;
  }

  /** The oldest order placed here that is taken as waiting still. */
  oldest(): { readonly id: string; readonly at: number } | undefined {
    this.#forget();
    return this.#placed[this.#head];
  }

  /**
   * Orders placed here not answered yet (taken as answered once one placed later is; placing times
   * the wall clock stepped back to may be taken as answered early).
   */
  get waiting(): number {
    this.#forget();
    return this.#placed.length - this.#head;
  }

  /** The wait an order placed now would have for its stock, foretold, ms. */
  foretold(): number {
    const waiting = this.waiting;
    if (waiting === 0) return 0;
    const now = this.#now();
    if (this.#answers.length === 0) return this.oldestWait();
    // Answers that began to come less than a window ago are counted over the time since (answers
    // just resumed after a pause: the first of them foretell short waits, not long ones).
    const span = Math.max(1, Math.min(this.windowMs, now - this.#answeringSince));
    return (waiting / this.#answers.length) * span;
  }

  /** How long the oldest order not answered has waited, ms (0 with none waiting). */
  oldestWait(): number {
    const oldest = this.oldest();
    return oldest === undefined ? 0 : this.#now() - oldest.at;
  }

  /**
   * While behind (the oldest order waiting has waited `minWaitMs`, and one placed now is foretold to
   * wait longer than `limitMs`): how long a client should wait before sending the order again, ms
   * (at most 5 s); else undefined.
   */
  behindFor(): number | undefined {
    if (this.oldestWait() < this.minWaitMs) return undefined;
    const foretold = this.foretold();
    return foretold > this.limitMs ? Math.min(foretold - this.limitMs, 5000) : undefined;
  }

  /**
   * As {@link behindFor}, once `stillWaiting` has confirmed that the oldest order taken as waiting
   * still is. Its answer may have gone to another process (instances of orders compete for the
   * saga's messages: with few orders, one may hear none of its own orders' answers), and an order its
   * customer cancelled while it waited gets none: left to the answers heard here, such an order would
   * keep the shop refusing orders, and with none taken, none answered, for good. One found no longer
   * waiting is passed by and the next oldest asked, up to 8 a call; one found waiting is believed
   * for 250 ms, so that a backlog costs one question a quarter second, not one a request. A question
   * that fails counts as waiting.
   */
  async behindForChecked(stillWaiting: (orderId: string) => Promise<boolean>): Promise<number | undefined> {
    for (let asked = 0; asked < 8; asked++) {
      const behind = this.behindFor();
      const oldest = this.oldest();
      if (behind === undefined || oldest === undefined) return behind;
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
        return this.behindFor();
      }
      this.passed(oldest.at);
    }
    return this.behindFor();
  }

  #forget(): void {
    while (this.#head < this.#placed.length && (this.#placed[this.#head]?.at as number) <= this.#frontier)
      this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#placed.length) {
      this.#placed = this.#placed.slice(this.#head);
      this.#head = 0;
    }
    const since = this.#now() - this.windowMs;
    let old = 0;
    while (old < this.#answers.length && (this.#answers[old] as number) <= since) old++;
    if (old > 0) this.#answers.splice(0, old);
  }
}
