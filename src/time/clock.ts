import { describeValue } from '../errors/describe-value.js';
import { errorGuard, FerryError, InvalidOptionsError } from '../errors/ferry-error.js';
import { knownOptions } from '../errors/options-object.js';
import { endOfTurn } from './end-of-turn.js';

/** A timer armed by a {@link Clock}. */
export interface ClockTimer {
  /** Stops the timer; its callback will not run. Cancelling twice, or after it fired, does nothing. */
  cancel(): void;
  /** Lets the process exit while the timer is armed (real timers); a no-op on virtual timers. */
  unref?(): ClockTimer;
}

/**
 * Where Ferry reads the time and arms its timers, so that tests can swap real time for a
 * {@link VirtualClock} and run retry delays, timeouts and polling instantly.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `callback` once, `ms` milliseconds from now (a delay of 0 or less: as soon as possible). */
  setTimeout(callback: () => void, ms: number): ClockTimer;
}

/**
 * Refuses what is not a {@link Clock} (an object with `now` and `setTimeout`), as it is given: one
 * without `setTimeout` failed only once a timer was first armed. @throws InvalidOptionsError
 */
export function assertClock(clock: unknown): asserts clock is Clock {
  const given = clock as Partial<Clock> | null | undefined;
  if (typeof given?.now !== 'function' || typeof given.setTimeout !== 'function') {
    throw new InvalidOptionsError(
      `clock must be a Clock { now, setTimeout } (systemClock, a VirtualClock), not ${describeValue(clock)}`,
    );
  }
}

/** Real time: `Date.now` and Node's timers (looked up at each call, so fake timers still apply). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(callback, ms) {
    const handle = globalThis.setTimeout(callback, ms);
    const timer: ClockTimer = {
      cancel: () => globalThis.clearTimeout(handle),
      unref: () => {
        handle.unref();
        return timer;
      },
    };
    return timer;
  },
};

/** A virtual clock's timers kept firing at one instant, or past `runAll`'s limit, without running out. */
export class VirtualClockRunawayError extends FerryError {
  /** How many timers fired before giving up. */
  readonly limit: number;
  /** Timers still pending when it gave up. */
  readonly pending: number;
  constructor(limit: number, pending: number, where: string) {
    super(
      'VIRTUAL_CLOCK_RUNAWAY',
      `virtual clock: ${limit} timers fired ${where} and ${pending} remain (a timer that keeps rescheduling itself?)`,
    );
    this.limit = limit;
    this.pending = pending;
  }
}

/** True when `error` is a {@link VirtualClockRunawayError}. */
export const isVirtualClockRunawayError = errorGuard<VirtualClockRunawayError>('VIRTUAL_CLOCK_RUNAWAY');

/** Options of a {@link VirtualClock}. */
export interface VirtualClockOptions {
  /**
   * Where the clock starts, in epoch ms.
   * @default DEFAULT_VIRTUAL_CLOCK_OPTIONS.start (2026-01-01T00:00:00.000Z)
   */
  readonly start?: number;
  /**
   * Most timers that may fire at one instant within `advance`, and by default within one `runAll`,
   * before a {@link VirtualClockRunawayError}: a timer that reschedules itself with no delay would
   * otherwise never let the clock move on.
   * @default 10_000
   */
  readonly limit?: number;
}

/** Defaults of {@link VirtualClockOptions}. */
export const DEFAULT_VIRTUAL_CLOCK_OPTIONS: Required<VirtualClockOptions> = {
  start: Date.UTC(2026, 0, 1),
  limit: 10_000,
};

interface Entry {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
}

function checkDuration(ms: number, what: string): void {
  if (!Number.isFinite(ms)) throw new InvalidOptionsError(`${what} must be a finite number of ms, got ${ms}`);
}

/**
 * A clock for tests: time moves only when the test calls {@link VirtualClock.advance} or
 * {@link VirtualClock.runAll}, and timers fire then, in due-time order, without real waiting.
 *
 * @example
 * const clock = new VirtualClock();
 * clock.setTimeout(() => console.log('retry'), 30_000);
 * await clock.advance(30_000); // logs at once; clock.now() is 30 s later
 */
export class VirtualClock implements Clock {
  #now: number;
  readonly #limit: number;
  #seq = 0;
  /** Sorted by due time, then by scheduling order. */
  readonly #timers: Entry[] = [];
  /** `advance` and `runAll` calls run one after another. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: VirtualClockOptions = {}) {
    const { start, limit } = {
      ...DEFAULT_VIRTUAL_CLOCK_OPTIONS,
      ...knownOptions('VirtualClock', options, Object.keys(DEFAULT_VIRTUAL_CLOCK_OPTIONS)),
    };
    checkDuration(start, 'start');
    if (!Number.isInteger(limit) || limit < 1) {
      throw new InvalidOptionsError(`limit must be a positive integer, got ${limit}`);
    }
    this.#now = start;
    this.#limit = limit;
  }

  now(): number {
    return this.#now;
  }

  /** Timers armed and neither fired nor cancelled. */
  get pending(): number {
    return this.#timers.length;
  }

  /**
   * Due time (epoch ms) of the earliest timer still armed, `undefined` when none is: lets a test
   * driver move time one timer at a time (`advance(clock.nextDue - clock.now())`).
   */
  get nextDue(): number | undefined {
    return this.#timers[0]?.due;
  }

  setTimeout(callback: () => void, ms: number): ClockTimer {
    checkDuration(ms, 'timer delay');
    const entry: Entry = { due: this.#now + Math.max(0, ms), seq: this.#seq++, callback };
    // Insert after every entry due at the same time or earlier, so ties keep scheduling order.
    let lo = 0;
    let hi = this.#timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#timers[mid]!.due <= entry.due) lo = mid + 1;
      else hi = mid;
    }
    this.#timers.splice(lo, 0, entry);
    const timer: ClockTimer = {
      cancel: () => {
        const index = this.#timers.indexOf(entry);
        if (index >= 0) this.#timers.splice(index, 1);
      },
      unref: () => timer,
    };
    return timer;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way, including timers armed
   * by those callbacks or by promise continuations they start. Continuations settle before each
   * timer fires and once more at the end; `now()` is each timer's due time while it runs and
   * start + `ms` afterwards. A callback that throws rejects the returned promise, with `now()` left at
   * its due time and later timers still pending. A negative or non-finite `ms` throws an
   * {@link InvalidOptionsError} at once.
   */
  advance(ms: number): Promise<void> {
    checkDuration(ms, 'advance');
    if (ms < 0) throw new InvalidOptionsError(`advance must not go back in time, got ${ms} ms`);
    return this.#enqueue(async () => {
      const target = this.#now + ms;
      let instant = Number.NaN;
      let firedAtInstant = 0;
      for (;;) {
        await endOfTurn();
        const next = this.#timers[0];
        if (next === undefined || next.due > target) break;
        if (next.due === instant) firedAtInstant++;
        else [instant, firedAtInstant] = [next.due, 1];
        if (firedAtInstant > this.#limit) {
          throw new VirtualClockRunawayError(this.#limit, this.#timers.length, 'at one instant');
        }
        this.#fire(next);
      }
      this.#now = target;
      await endOfTurn();
    });
  }

  /**
   * Fires timers in order, moving time to each, until none remain; `now()` ends at the last one's
   * due time. Throws a {@link VirtualClockRunawayError} once `limit` timers fired and more remain.
   */
  runAll(limit: number = this.#limit): Promise<void> {
    if (!Number.isInteger(limit) || limit < 1) {
      throw new InvalidOptionsError(`runAll limit must be a positive integer, got ${limit}`);
    }
    return this.#enqueue(async () => {
      for (let fired = 0; ; fired++) {
        await endOfTurn();
        const next = this.#timers[0];
        if (next === undefined) return;
        if (fired === limit) throw new VirtualClockRunawayError(limit, this.#timers.length, 'in runAll');
        this.#fire(next);
      }
    });
  }

  #fire(entry: Entry): void {
    this.#timers.shift();
    this.#now = Math.max(this.#now, entry.due);
    entry.callback();
  }

  #enqueue(run: () => Promise<void>): Promise<void> {
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}
