import { AsyncResource } from 'node:async_hooks';
import type { FerryContext } from '../context/context.js';
import { errorGuard, FerryError } from '../errors/ferry-error.js';
import { type Clock, systemClock } from '../time/clock.js';
import type { Message } from './envelope.js';
import type { Outcome, OutcomeListener, PendingOutcome } from './transport.js';

/** A handler ran past its subscription's `handlerTimeoutMs`; the attempt failed and its slot was freed. */
export class HandlerTimeoutError extends FerryError {
  readonly timeoutMs: number;
  /** `waited`: the attempt spent its time waiting for an earlier delivery of the message (inbox). */
  constructor(timeoutMs: number, waited = false) {
    super(
      'HANDLER_TIMEOUT',
      waited
        ? `gave up after ${timeoutMs} ms waiting for an earlier delivery of this message, still being handled past its own time limit or after a close gave up on it (does the handler heed its signal?); the handler did not run in this attempt`
        : `the handler did not finish within ${timeoutMs} ms`,
    );
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

/**
 * The outcome of a run of a message's handler, given how it ended: `undefined` for success. One
 * function per subscription, instead of a closure per message. It is given the message's attempt, id
 * and type as they were when the run started: a handler that writes to the message it was handed
 * (readonly to TypeScript, not to JavaScript) cannot change how it is settled.
 */
export type Decide = (
  attempt: number,
  id: string,
  type: string,
  failure: { readonly error: unknown } | undefined,
) => Outcome;

const PENDING = 0;
const DECIDED = 1;
const BROKEN = 2;
const REPORTED = 3;
type RunState = typeof PENDING | typeof DECIDED | typeof BROKEN | typeof REPORTED;

/**
 * One handler run under a time limit, the ambient context it runs in (`currentContext()`) and the
 * outcome the transport waits for, so that a delivery allocates one object for all three and no
 * promise of its own. Its `AbortSignal` is created only when someone asks for it: most handlers
 * never look, and an AbortController per message costs more than the rest of an in-memory delivery.
 */
export class HandlerRun implements FerryContext, PendingOutcome {
  readonly correlationId: string;
  readonly messageId: string;
  /**
   * The context's deadline, in real time (`Date.now()`): outgoing HTTP calls, retries and bulkheads
   * inside the handler read it against real time, whatever clock the bus runs on. Moved on by
   * {@link resumeLimit}.
   */
  deadline: number;
  /** Neighbours in a {@link RunList} (private: a handler reads this object as its context). */
  #older: HandlerRun | undefined = undefined;
  #newer: HandlerRun | undefined = undefined;
  #listed = false;
  #controller: AbortController | undefined = undefined;
  #reason: HandlerTimeoutError | undefined = undefined;
  /** Why a close gave up on the run while it was pending ({@link abandon}). */
  #abandoned: Error | undefined = undefined;
  /** The message's attempt and type when the run started (see {@link Decide}). */
  readonly #attempt: number;
  readonly #type: string;
  #decide: Decide | undefined = undefined;
  #state: RunState = PENDING;
  /** The outcome once `DECIDED`, what broke while deciding it once `BROKEN`. */
  #result: unknown = undefined;
  #listener: OutcomeListener | undefined = undefined;
  /** Set while the attempt waits for an earlier delivery's outcome instead of running the handler. */
  #waiting = false;
  /** The limits this run is timed by: what {@link pauseLimit} takes it out of. */
  readonly #timeouts: HandlerTimeouts;
  /** The limit is paused: the run is out of its limits' list until {@link resumeLimit}. */
  #paused = false;

  constructor(message: Message, deadline: number, timeouts: HandlerTimeouts) {
    this.#timeouts = timeouts;
    this.correlationId = message.correlationid;
    this.messageId = message.id;
    this.deadline = deadline;
    this.#attempt = message.attempt;
    this.#type = message.type;
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

  /** {@link abandon}s every run of `list`, which stay listed: their limit still ends them. */
  static abandonAll(list: RunList, reason: Error): void {
    for (let run = list.oldest; run !== undefined; run = run.#newer) run.abandon(reason);
  }

  get signal(): AbortSignal {
    if (this.#reason !== undefined) return AbortSignal.abort(this.#reason);
    if (this.#abandoned !== undefined) return AbortSignal.abort(this.#abandoned);
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  /** Decides the run with the outcome `decide` gives for `failure`; later calls do nothing. */
  settle(failure: { readonly error: unknown } | undefined): void {
    const decide = this.#decide;
    if (decide === undefined) return;
    this.#decide = undefined;
    try {
      this.#result = decide(this.#attempt, this.messageId, this.#type, failure);
      this.#state = DECIDED;
    } catch (error) {
      // The transport treats this as a broken handler chain.
      this.#result = error;
      this.#state = BROKEN;
    }
    this.#report();
  }

  whenDecided(onOutcome: (outcome: Outcome) => void, onBroken: (error: unknown) => void): void {
    this.notify({ onOutcome, onBroken });
  }

  notify(listener: OutcomeListener): void {
    this.#listener = listener;
    this.#report();
  }

  /** Called once, by {@link HandlerTimeouts.race}. */
  begin(decide: Decide): void {
    this.#decide = decide;
  }

  /** Whether the limit is paused ({@link pauseLimit}): the run is not to be listed. */
  get limitPaused(): boolean {
    return this.#paused;
  }

  /**
   * Stops the clock of this run's limit while the attempt waits for its turn at a resource that
   * serves one caller at a time (a transactional handler's unit of work on SQLite or memory, which
   * run one at a time per process): that wait is not the handler's time. Does nothing once the
   * limit has passed.
   */
  pauseLimit(): void {
    if (this.#paused || this.#reason !== undefined) return;
    this.#paused = true;
    this.#timeouts.pause(this);
  }

  /** Starts the limit again, whole, from now (and the context's `deadline` with it). */
  resumeLimit(): void {
    if (!this.#paused) return;
    this.#paused = false;
    // Not raced yet (the race lists it), or decided already: nothing to list.
    if (this.#state !== PENDING || this.#decide === undefined) return;
    this.#timeouts.resume(this);
  }

  /** Says whether the attempt is now waiting for an earlier delivery's outcome (an inbox claim). */
  waitingForEarlierDelivery(waiting: boolean): void {
    this.#waiting = waiting;
  }

  /**
   * A close gave up on the run still pending (its message handed back): its signal aborts with
   * `reason`, so that a handler that heeds it stops. The outcome is no longer the transport's concern.
   */
  abandon(reason: Error): void {
    if (this.#reason !== undefined || this.#abandoned !== undefined) return;
    this.#abandoned = reason;
    this.#controller?.abort(reason);
  }

  expire(timeoutMs: number): void {
    this.#reason = new HandlerTimeoutError(timeoutMs, this.#waiting);
    this.#controller?.abort(this.#reason);
    this.settle({ error: this.#reason });
  }

  /** Hands the decision to the transport once both are there, the decision and its listener. */
  #report(): void {
    const state = this.#state;
    const listener = this.#listener;
    if (state === PENDING || state === REPORTED || listener === undefined) return;
    this.#state = REPORTED;
    this.#listener = undefined;
    if (state === DECIDED) listener.onOutcome(this.#result as Outcome);
    else listener.onBroken(this.#result);
  }
}

/**
 * The time limit of one subscription's handlers. Every run has the same limit, so runs expire in
 * the order they started: one timer for the oldest run serves them all, instead of a timer per
 * message. Limits are measured and timers armed on `clock`; the context deadline stays in real time.
 */
export class HandlerTimeouts {
  readonly timeoutMs: number;
  /** Runs not decided yet, oldest first: a list through the runs themselves, cheaper than a Set. */
  readonly #pending: RunList = { oldest: undefined, newest: undefined };
  /**
   * `undefined` for the system clock: `start` runs for every message, and `Date.now()` called
   * directly costs less than through the clock object.
   */
  readonly #clock: Clock | undefined;
  /**
   * When each run's limit passes on another clock than the system's (on the system clock it is the
   * run's `deadline`): kept here rather than in a field of every run, which the hot path would pay for.
   */
  readonly #dues: WeakMap<HandlerRun, number> | undefined;
  #armed = false;
  /**
   * The system-clock timer armed for the oldest run, kept alive (ref'd) while a run is pending: the
   * limit is what frees what a hung handler holds (its slot, its unit of work's turn at the store), so
   * a process awaiting that must not exit before it (exit 13, the await unsettled; on RabbitMQ the
   * socket keeps it alive). Let go (unref'd) once no run is pending, as it stays armed until it fires.
   */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerRefed = false;
  /** {@link release}d: the timer no longer keeps the process alive. */
  #released = false;
  /**
   * `#expire`, bound to the async context the subscription was made in: a timer armed from inside a
   * handler's unit of work (when its limit resumes) must not run the expiry, and what it sets off
   * (the next delivery, in the freed slot), inside that unit of work's context.
   */
  readonly #onTimer: () => void;

  constructor(timeoutMs: number, clock: Clock = systemClock) {
    this.#onTimer = AsyncResource.bind(() => this.#expire());
    this.timeoutMs = timeoutMs;
    this.#clock = clock === systemClock ? undefined : clock;
    this.#dues = this.#clock === undefined ? undefined : new WeakMap();
  }

  start(message: Message): HandlerRun {
    const run = new HandlerRun(message, Date.now() + this.timeoutMs, this);
    if (this.#clock !== undefined) this.#dues!.set(run, this.#clock.now() + this.timeoutMs);
    return run;
  }

  /**
   * Decides `run` with `decide(…, undefined)` when `work` succeeds, `decide(…, { error })` when it fails
   * or when the run's limit passes first (with a `HandlerTimeoutError`, its signal aborted), whether
   * or not the handler heeds the signal; the run is broken only if `decide` throws.
   */
  race(run: HandlerRun, work: PromiseLike<unknown>, decide: Decide): PendingOutcome {
    run.begin(decide);
    if (!run.limitPaused) this.#link(run);
    work.then(
      () => {
        this.#unlink(run);
        run.settle(undefined);
      },
      (error: unknown) => {
        this.#unlink(run);
        run.settle({ error });
      },
    );
    return run;
  }

  /** Takes `run` out of the runs whose limit can pass, until {@link resume}. */
  pause(run: HandlerRun): void {
    this.#unlink(run);
  }

  /**
   * Gives `run` its whole limit again from now, as the newest run: its due is the latest of all, so
   * the list stays in the order the limits pass.
   */
  resume(run: HandlerRun): void {
    run.deadline = Date.now() + this.timeoutMs;
    if (this.#clock !== undefined) this.#dues!.set(run, this.#clock.now() + this.timeoutMs);
    this.#link(run);
  }

  /** A close gave up on the runs still pending: their signals abort with `reason`. */
  abandonRuns(reason: Error): void {
    HandlerRun.abandonAll(this.#pending, reason);
  }

  /**
   * The subscription is closed: runs still pending were given up on, and must not keep the process
   * alive until their limit (their limit still ends them).
   */
  release(): void {
    this.#released = true;
    if (this.#timerRefed) {
      this.#timer?.unref();
      this.#timerRefed = false;
    }
  }

  /** Adds `run` as the newest pending run, the timer armed and kept alive. */
  #link(run: HandlerRun): void {
    HandlerRun.append(this.#pending, run);
    if (!this.#armed) this.#arm(this.#dueOf(run));
    else if (!this.#timerRefed && !this.#released && this.#timer !== undefined) {
      this.#timer.ref();
      this.#timerRefed = true;
    }
  }

  /** Takes `run` out of the pending runs; the timer is let go once none is left. */
  #unlink(run: HandlerRun): void {
    HandlerRun.unlink(this.#pending, run);
    if (this.#timerRefed && this.#pending.oldest === undefined) {
      this.#timer?.unref();
      this.#timerRefed = false;
    }
  }

  #dueOf(run: HandlerRun): number {
    return this.#dues?.get(run) ?? run.deadline;
  }

  #now(): number {
    return this.#clock === undefined ? Date.now() : this.#clock.now();
  }

  #arm(due: number): void {
    this.#armed = true;
    const delay = Math.max(0, due - this.#now());
    if (this.#clock === undefined) {
      this.#timer = setTimeout(this.#onTimer, delay);
      if (this.#released) this.#timer.unref();
      else this.#timerRefed = true;
    } else this.#clock.setTimeout(this.#onTimer, delay).unref?.();
  }

  #expire(): void {
    this.#armed = false;
    this.#timer = undefined;
    this.#timerRefed = false;
    const now = this.#now();
    for (let run = this.#pending.oldest; run !== undefined; run = this.#pending.oldest) {
      const due = this.#dueOf(run);
      if (due > now) {
        this.#arm(due);
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
