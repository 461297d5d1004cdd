import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { knownOptions } from '../errors/options-object.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { contextOf, invoke } from './compose.js';
import { BulkheadFullError, TimeoutError } from './errors.js';
import type { ExecuteOptions, Policy, PolicyContext } from './policy.js';

/** Options of {@link bulkhead}. */
export interface BulkheadOptions {
  /** Executions allowed to run at the same time. @default 10 */
  readonly maxConcurrent?: number;
  /** Executions allowed to wait (first in, first out) for a free slot; 0 rejects at once. @default 0 */
  readonly maxQueue?: number;
}

/** Defaults of {@link bulkhead}: 10 running, none waiting. */
export const DEFAULT_BULKHEAD = Object.freeze({
  maxConcurrent: 10,
  maxQueue: 0,
} satisfies Required<BulkheadOptions>);

/** A snapshot of a {@link Bulkhead}. */
export interface BulkheadStats {
  /** Executions running now. */
  readonly running: number;
  /** Executions waiting for a slot. */
  readonly queued: number;
}

interface Waiter {
  readonly start: () => void;
  /** Takes the waiter out of the queue and detaches its abort listener and deadline timer. */
  readonly leave: () => void;
}

/**
 * Limits how many executions run at once, so that one slow dependency cannot take every socket,
 * connection or worker of the process. Beyond `maxConcurrent` running and `maxQueue` waiting,
 * executions reject at once with {@link BulkheadFullError}; a waiting execution whose signal aborts
 * leaves the queue and rejects with the signal's reason, and one whose deadline passes while it
 * waits leaves it with a {@link TimeoutError}: the wait is part of the execution's time.
 *
 * A slot is held until the function it runs settles. Compose it inside any timeout
 * (`compose(timeout, bulkhead)`): a timeout outside gives up on the work while it still runs, and a
 * bulkhead outside that timeout would free the slot then.
 */
export class Bulkhead implements Policy {
  readonly #maxConcurrent: number;
  readonly #maxQueue: number;
  /** Insertion-ordered: the first entry is the oldest waiter; deleting an aborted one is O(1). */
  readonly #queue = new Set<Waiter>();
  #running = 0;
  readonly #release = (): void => {
    this.#running--;
    const next = this.#queue.values().next();
    if (!next.done) {
      next.value.leave();
      this.#running++;
      next.value.start();
    }
  };

  readonly #releaseWith = <T>(value: T): T => {
    this.#release();
    return value;
  };
  readonly #releaseAndThrow = (error: unknown): never => {
    this.#release();
    throw error;
  };

  /** @throws {@link InvalidOptionsError} when an option is out of range. */
  constructor(options: BulkheadOptions = {}) {
    const { maxConcurrent, maxQueue } = {
      ...DEFAULT_BULKHEAD,
      ...knownOptions('bulkhead', options, Object.keys(DEFAULT_BULKHEAD)),
    };
    if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1) {
      throw new InvalidOptionsError(
        `bulkhead maxConcurrent must be an integer >= 1, not ${describeValue(maxConcurrent)}`,
      );
    }
    if (!(Number.isInteger(maxQueue) || maxQueue === Number.POSITIVE_INFINITY) || maxQueue < 0) {
      throw new InvalidOptionsError(
        `bulkhead maxQueue must be an integer >= 0, not ${describeValue(maxQueue)}`,
      );
    }
    this.#maxConcurrent = maxConcurrent;
    this.#maxQueue = maxQueue;
  }

  /** Running and waiting executions now. */
  stats(): BulkheadStats {
    return { running: this.#running, queued: this.#queue.size };
  }

  /**
   * Runs `fn` when a slot is free.
   * @throws {@link BulkheadFullError} at once when every slot and queue place is taken.
   */
  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#running < this.#maxConcurrent) {
      this.#running++;
      return this.#run(fn, options);
    }
    if (this.#queue.size >= this.#maxQueue) {
      return Promise.reject(new BulkheadFullError(this.#maxConcurrent, this.#maxQueue));
    }
    const deadline = options?.deadline;
    if (deadline !== undefined && deadline <= Date.now()) {
      return Promise.reject(new TimeoutError(0, 'waiting for a bulkhead slot (its deadline had passed)'));
    }
    return new Promise<T>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => {
        waiter.leave();
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        start: () => this.#run(fn, options).then(resolve, reject),
        leave: () => {
          this.#queue.delete(waiter);
          signal?.removeEventListener('abort', onAbort);
          if (timer !== undefined) clearTimeout(timer);
        },
      };
      this.#queue.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      const waitMs = deadline === undefined ? undefined : deadline - Date.now();
      if (waitMs !== undefined && waitMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => {
          waiter.leave();
          reject(new TimeoutError(waitMs, 'waiting for a bulkhead slot until the deadline'));
        }, waitMs);
      }
    });
  }

  #run<T>(
    fn: (context: PolicyContext) => PromiseLike<T> | T,
    options: ExecuteOptions | undefined,
  ): Promise<T> {
    // Two settle callbacks rather than finally(): finally() chains two more promises per call.
    return invoke(fn, contextOf(options)).then(this.#releaseWith, this.#releaseAndThrow) as Promise<T>;
  }
}

/**
 * A policy that lets at most `maxConcurrent` executions run at once, and `maxQueue` wait.
 *
 * @example
 * const pool = bulkhead({ maxConcurrent: 8, maxQueue: 100 });
 * await pool.execute(({ signal }) => render(page, { signal }));
 */
export function bulkhead(options: BulkheadOptions = {}): Bulkhead {
  return new Bulkhead(options);
}
