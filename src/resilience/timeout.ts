import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { knownOptions } from '../errors/options-object.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { type DeadlineContext, invoke } from './compose.js';
import { TimeoutError } from './errors.js';
import type { ExecuteOptions, Policy, PolicyContext } from './policy.js';

/** Options of {@link timeout}. */
export interface TimeoutOptions {
  /** Time allowed to each execution, in ms (no default: a timeout is chosen per dependency). */
  readonly ms: number;
}

/**
 * Bounds the time of each execution. The function gets a signal that aborts with a
 * {@link TimeoutError} when the time is up (and with the caller's reason when the caller aborts);
 * the execution rejects at that moment, without waiting for the function to notice. An
 * `ExecuteOptions.deadline` shortens the time to what is left before it.
 */
export class TimeoutPolicy implements Policy {
  readonly #ms: number;

  /** @throws {@link InvalidOptionsError} unless `ms` is in (0, 2^31 - 1]. */
  constructor(options: TimeoutOptions) {
    const { ms } = knownOptions('timeout', options, ['ms']);
    if (typeof ms !== 'number' || !(ms > 0) || ms > MAX_TIMER_MS) {
      throw new InvalidOptionsError(
        `timeout ms must be a number in (0, ${MAX_TIMER_MS}], not ${describeValue(ms)}`,
      );
    }
    this.#ms = ms;
  }

  /** Time allowed to each execution, in ms. */
  get ms(): number {
    return this.#ms;
  }

  /**
   * Runs `fn` with a signal that aborts after `ms` (or at the deadline, if sooner).
   * @throws {@link TimeoutError} when the time is up, at once if the deadline has already passed.
   */
  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    const callerSignal = options?.signal;
    if (callerSignal?.aborted) return Promise.reject(callerSignal.reason);
    const start = Date.now();
    let ms = this.#ms;
    const deadline = options?.deadline;
    if (deadline !== undefined) {
      const left = deadline - start;
      if (!(left > 0)) return Promise.reject(new TimeoutError(0, 'the operation (its deadline had passed)'));
      if (left < ms) ms = left;
    }

    return new Promise<T>((resolve, reject) => {
      const controller = new AbortController();
      const onCallerAbort = (): void => {
        clearTimeout(timer);
        reject(callerSignal!.reason);
        controller.abort(callerSignal!.reason);
      };
      const timer = setTimeout(() => {
        callerSignal?.removeEventListener('abort', onCallerAbort);
        const error = new TimeoutError(ms);
        // Reject first: the function may react to the abort with an error of its own.
        reject(error);
        controller.abort(error);
      }, ms);
      callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
      const settle = (): void => {
        clearTimeout(timer);
        callerSignal?.removeEventListener('abort', onCallerAbort);
      };
      const context: DeadlineContext = {
        signal: controller.signal,
        attempt: options?.attempt ?? 1,
        deadline: start + ms,
      };
      invoke(fn, context).then(
        (value) => {
          settle();
          resolve(value);
        },
        (error: unknown) => {
          settle();
          reject(error);
        },
      );
    });
  }
}

/**
 * A policy that gives each execution `ms` milliseconds.
 *
 * @example
 * const user = await timeout({ ms: 2000 }).execute(({ signal }) => fetch(url, { signal }));
 */
export function timeout(options: TimeoutOptions): TimeoutPolicy {
  return new TimeoutPolicy(options);
}
