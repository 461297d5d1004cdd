import type { FerryContext } from '../context/context.js';
import { errorGuard, FerryError } from '../errors/ferry-error.js';
import type { Outcome, PendingOutcome } from './transport.js';

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

/** The ends of a list of handler runs linked through the runs themselves. */
interface RunList {
  oldest: HandlerRun | undefined;
  newest: HandlerRun | undefined;
}

type Decide = (failure: { readonly error: unknown } | undefined) => Outcome;

/**
 * One handler run under a time limit, the ambient context it runs in (`currentContext()`) and the
 * outcome the transport waits for, so that a delivery allocates one object for all three and no
 * promise of its own. Its `AbortSignal` is created only when someone asks for it: most handlers
 * never look, and an AbortController per message costs more than the rest of an in-memory delivery.
 */
export class HandlerRun implements FerryContext, PendingOutcome {
  readonly correlationId: string;
  readonly messageId: string;
  readonly deadline: number;
  /** Neighbours in a {@link RunList} (private: a handler reads this object as its context). */
  #older: HandlerRun | undefined;
  #newer: HandlerRun | undefined;
  #listed = false;
  #controller: AbortController | undefined;
  #reason: HandlerTimeoutError | undefined;
  #decide: Decide | undefined;
  /** Set once the run is decided: the outcome, or what broke while deciding it. */
  #decided: { readonly outcome: Outcome } | { readonly broken: unknown } | undefined;
  #onOutcome: ((outcome: Outcome) => void) | undefined;
  #onBroken: ((error: unknown) => void) | undefined;

  constructor(correlationId: string, messageId: string, deadline: number) {
    this.correlationId = correlationId;
    this.messageId = messageId;
    this.deadline = deadline;
  }

  /** Adds `run` as the newest of `list`. */
  static append(list: RunList, run: HandlerRun): void {
    run.#older = list.newest;
    run.#listed = true;
    if (list.newest === undefined) list.oldest = run;
    else list.newest.#newer = run;
    list.newest = run;
  }

  /** Takes `run` out of `list`, if it is there. */
  static unlink(list: RunList, run: HandlerRun): void {
    if (!run.#listed) return;
    run.#listed = false;
    if (run.#older === undefined) list.oldest = run.#newer;
    else run.#older.#newer = run.#newer;
    if (run.#newer === undefined) list.newest = run.#older;
    else run.#newer.#older = run.#older;
    run.#older = undefined;
    run.#newer = undefined;
  }

  get signal(): AbortSignal {
    if (this.#reason !== undefined) return AbortSignal.abort(this.#reason);
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  /** Decides the run with the outcome `decide` gives for `failure`; later calls do nothing. */
  settle(failure: { readonly error: unknown } | undefined): void {
    const decide = this.#decide;
    if (decide === undefined) return;
    this.#decide = undefined;
    try {
      this.#decided = { outcome: decide(failure) };
    } catch (error) {
      // The transport treats this as a broken handler chain.
      this.#decided = { broken: error };
    }
    this.#report();
  }

  whenDecided(onOutcome: (outcome: Outcome) => void, onBroken: (error: unknown) => void): void {
    this.#onOutcome = onOutcome;
    this.#onBroken = onBroken;
    this.#report();
  }

  /** Called once, by {@link HandlerTimeouts.race}. */
  begin(decide: Decide): void {
    this.#decide = decide;
  }

  expire(timeoutMs: number): void {
    this.#reason = new HandlerTimeoutError(timeoutMs);
    this.#controller?.abort(this.#reason);
    this.settle({ error: this.#reason });
  }

  /** Hands the decision to the transport once both are there, the decision and its callbacks. */
  #report(): void {
    const decided = this.#decided;
    const onOutcome = this.#onOutcome;
    if (decided === undefined || onOutcome === undefined) return;
    const onBroken = this.#onBroken!;
    this.#onOutcome = undefined;
    this.#onBroken = undefined;
    if ('outcome' in decided) onOutcome(decided.outcome);
    else onBroken(decided.broken);
  }
}

/**
 * The time limit of one subscription's handlers. Every run has the same limit, so runs expire in
 * the order they started: one timer for the oldest run serves them all, instead of a timer per
 * message.
 */
export class HandlerTimeouts {
  readonly timeoutMs: number;
  /** Runs not decided yet, oldest first: a list through the runs themselves, cheaper than a Set. */
  readonly #pending: RunList = { oldest: undefined, newest: undefined };
  #timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
  }

  start(correlationId: string, messageId: string): HandlerRun {
    return new HandlerRun(correlationId, messageId, Date.now() + this.timeoutMs);
  }

  /**
   * Decides `run` with `decide(undefined)` when `work` succeeds, `decide({ error })` when it fails
   * or when the run's limit passes first (with a `HandlerTimeoutError`, its signal aborted), whether
   * or not the handler heeds the signal; the run is broken only if `decide` throws.
   */
  race(run: HandlerRun, work: PromiseLike<unknown>, decide: Decide): PendingOutcome {
    run.begin(decide);
    HandlerRun.append(this.#pending, run);
    if (this.#timer === undefined) this.#arm(run.deadline);
    work.then(
      () => {
        HandlerRun.unlink(this.#pending, run);
        run.settle(undefined);
      },
      (error: unknown) => {
        HandlerRun.unlink(this.#pending, run);
        run.settle({ error });
      },
    );
    return run;
  }

  #arm(deadline: number): void {
    // Unref'd: a hung handler must not keep a closing process alive on its own.
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, deadline - Date.now())).unref();
  }

  #expire(): void {
    this.#timer = undefined;
    const now = Date.now();
    for (let run = this.#pending.oldest; run !== undefined; run = this.#pending.oldest) {
      if (run.deadline > now) {
        this.#arm(run.deadline);
        return;
      }
      HandlerRun.unlink(this.#pending, run);
      run.expire(this.timeoutMs);
    }
  }
}

/** The signal of a run without a time limit. */
export function neverAbortedSignal(): AbortSignal {
  return NEVER_ABORTED;
}
