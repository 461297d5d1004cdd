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
 * One handler run under a time limit. Its `AbortSignal` is created only when someone asks for it:
 * most handlers never look, and an AbortController per message costs more than the rest of an
 * in-memory delivery.
 */
export class HandlerRun {
  readonly deadline: number;
  #controller: AbortController | undefined;
  #reason: HandlerTimeoutError | undefined;
  /** Settles the race when the limit passes. */
  expire: (() => void) | undefined;

  constructor(deadline: number) {
    this.deadline = deadline;
  }

  get signal(): AbortSignal {
    if (this.#reason !== undefined) return AbortSignal.abort(this.#reason);
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  abort(reason: HandlerTimeoutError): void {
    this.#reason = reason;
    this.#controller?.abort(reason);
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

  start(): HandlerRun {
    return new HandlerRun(Date.now() + this.timeoutMs);
  }

  /**
   * Resolves as `work` settles, or rejects with `HandlerTimeoutError` once the run's limit passes
   * (aborting its signal), whether or not the handler heeds the signal.
   */
  race(run: HandlerRun, work: PromiseLike<unknown>): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      run.expire = () => {
        const error = new HandlerTimeoutError(this.timeoutMs);
        run.abort(error);
        reject(error);
      };
      this.#pending.add(run);
      if (this.#timer === undefined) this.#arm(run.deadline);
      work.then(
        (value) => {
          this.#pending.delete(run);
          resolve(value);
        },
        (error: unknown) => {
          this.#pending.delete(run);
          reject(error);
        },
      );
    });
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
      run.expire?.();
    }
  }
}

/** The signal of a run without a time limit. */
export function neverAbortedSignal(): AbortSignal {
  return NEVER_ABORTED;
}
