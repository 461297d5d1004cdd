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

  /** Settles the run's race; later calls do nothing. */
  settle(ok: boolean, value: unknown): void {
    const settle = ok ? this.#resolve : this.#reject;
    this.#resolve = undefined;
    this.#reject = undefined;
    settle?.(value);
  }

  /** The promise of the race; called once, by {@link HandlerTimeouts.race}. */
  outcome(): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  expire(timeoutMs: number): void {
    this.#reason = new HandlerTimeoutError(timeoutMs);
    this.#controller?.abort(this.#reason);
    this.settle(false, this.#reason);
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
   * Resolves as `work` settles, or rejects with `HandlerTimeoutError` once the run's limit passes
   * (aborting its signal), whether or not the handler heeds the signal.
   */
  race(run: HandlerRun, work: PromiseLike<unknown>): Promise<unknown> {
    const outcome = run.outcome();
    this.#pending.add(run);
    if (this.#timer === undefined) this.#arm(run.deadline);
    work.then(
      (value) => {
        this.#pending.delete(run);
        run.settle(true, value);
      },
      (error: unknown) => {
        this.#pending.delete(run);
        run.settle(false, error);
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
