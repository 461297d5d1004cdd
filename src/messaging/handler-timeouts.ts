import type { FerryContext } from '../context/context.js';
import { errorGuard, FerryError } from '../errors/ferry-error.js';

/** A handler ran past its subscription's `handlerTimeoutMs`; the attempt failed and its slot was freed. */
export class HandlerTimeoutError extends FerryError {
  readonly timeoutMs: number;
  constructor(timeoutMs: number) {
    super('HANDLER_TIMEOUT', `the handler did not finish within ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}
export const isHandlerTimeoutError = errorGuard<HandlerTimeoutError>('HANDLER_TIMEOUT');

const NEVER_ABORTED = new AbortController().signal;

/**
 * One handler run under a time limit, and the ambient context it runs in (`currentContext()`), so
 * that a delivery allocates one object for both. Its `AbortSignal` is created only when someone asks
 * for it: most handlers never look, and an AbortController per message costs more than the rest of
 * an in-memory delivery.
 */
export class HandlerRun implements FerryContext {
  readonly correlationId: string;
  readonly messageId: string;
  readonly deadline: number;
  #controller: AbortController | undefined;
  #reason: HandlerTimeoutError | undefined;
  #resolve: ((value: unknown) => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;
  #decide: ((failure: { readonly error: unknown } | undefined) => unknown) | undefined;

  constructor(correlationId: string, messageId: string, deadline: number) {
    this.correlationId = correlationId;
    this.messageId = messageId;
    this.deadline = deadline;
  }

  get signal(): AbortSignal {
    if (this.#reason !== undefined) return AbortSignal.abort(this.#reason);
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  /** Settles the run's race with the outcome `decide` gives; later calls do nothing. */
  settle(failure: { readonly error: unknown } | undefined): void {
    const resolve = this.#resolve;
    if (resolve === undefined) return;
    this.#resolve = undefined;
    const reject = this.#reject!;
    const decide = this.#decide!;
    this.#decide = undefined;
    this.#reject = undefined;
    try {
      resolve(decide(failure));
    } catch (error) {
      // The transport treats a rejected outcome as a broken handler chain.
      reject(error);
    }
  }

  /** The promise of the race; called once, by {@link HandlerTimeouts.race}. */
  outcome<T>(decide: (failure: { readonly error: unknown } | undefined) => T): Promise<T> {
    this.#decide = decide;
    return new Promise<T>((resolve, reject) => {
      this.#resolve = resolve as (value: unknown) => void;
      this.#reject = reject;
    });
  }

  expire(timeoutMs: number): void {
    this.#reason = new HandlerTimeoutError(timeoutMs);
    this.#controller?.abort(this.#reason);
    this.settle({ error: this.#reason });
  }
}

/**
 * The time limit of one subscription's handlers. Every run has the same limit, so runs expire in
 * the order they started: one timer for the oldest run serves them all, instead of a timer per
 * message.
 */
export class HandlerTimeouts {
  readonly timeoutMs: number;
  readonly #pending = new Set<HandlerRun>();
  #timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
  }

  start(correlationId: string, messageId: string): HandlerRun {
    return new HandlerRun(correlationId, messageId, Date.now() + this.timeoutMs);
  }

  /**
   * Resolves with `decide(undefined)` when `work` succeeds, `decide({ error })` when it fails or
   * when the run's limit passes first (with a `HandlerTimeoutError`, its signal aborted), whether
   * or not the handler heeds the signal. Rejects only if `decide` throws.
   */
  race<T>(
    run: HandlerRun,
    work: PromiseLike<unknown>,
    decide: (failure: { readonly error: unknown } | undefined) => T,
  ): Promise<T> {
    const outcome = run.outcome(decide);
    this.#pending.add(run);
    if (this.#timer === undefined) this.#arm(run.deadline);
    work.then(
      () => {
        this.#pending.delete(run);
        run.settle(undefined);
      },
      (error: unknown) => {
        this.#pending.delete(run);
        run.settle({ error });
      },
    );
    return outcome;
  }

  #arm(deadline: number): void {
    // Unref'd: a hung handler must not keep a closing process alive on its own.
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, deadline - Date.now())).unref();
  }

  #expire(): void {
    this.#timer = undefined;
    const now = Date.now();
    for (const run of this.#pending) {
      if (run.deadline > now) {
        this.#arm(run.deadline);
        return;
      }
      this.#pending.delete(run);
      run.expire(this.timeoutMs);
    }
  }
}

/** The signal of a run without a time limit. */
export function neverAbortedSignal(): AbortSignal {
  return NEVER_ABORTED;
}
