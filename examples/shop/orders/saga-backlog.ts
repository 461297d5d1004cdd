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
  /** When orders placed here were placed, oldest first; those up to `#head` are answered. */
  #placed: number[] = [];
  #head = 0;
  /** When the last order answered was placed (answers come roughly in that order). */
  #frontier = Number.NEGATIVE_INFINITY;
  /** When answers were heard, within the last `windowMs`, oldest first. */
  #answers: number[] = [];
  /** When the answers heard since the last spell of `windowMs` without any began to come. */
  #answeringSince = 0;

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

  /** An order was placed here at `at` (from {@link now}, before its commit). */
  placed(at: number): void {
    this.#placed.push(at);
  }

  /** The stock of an order placed at `placedAt` (ms since the epoch) was answered, or its deadline came. */
  answered(placedAt: number): void {
    if (!Number.isFinite(placedAt)) return;
    this.#forget();
    const now = this.#now();
    if (this.#answers.length === 0) this.#answeringSince = now;
    this.#answers.push(now);
    if (placedAt > this.#frontier) this.#frontier = placedAt;
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
    return this.waiting === 0 ? 0 : this.#now() - (this.#placed[this.#head] as number);
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

  #forget(): void {
    while (this.#head < this.#placed.length && (this.#placed[this.#head] as number) <= this.#frontier)
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
