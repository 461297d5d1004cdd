import { inspect } from 'node:util';
import { describeValue } from '../errors/describe-value.js';
import { errorGuard, FerryError, InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { compilePattern } from '../messaging/topic.js';

/** Something a {@link MessageList} holds: every record names the message type it is about. */
export interface Recorded {
  readonly type: string;
}

/**
 * What a {@link MessageList} selects: a message type or topic pattern (`order.*`, `#`), or a
 * predicate over the records.
 */
export type RecordFilter<R extends Recorded> = string | ((record: R) => boolean);

/** Options of {@link MessageList.select}. */
export interface SelectOptions {
  /**
   * Longest wait in virtual time, in ms: while it waits, the harness runs what can run and moves
   * its clock one timer at a time, at most this far past the time the wait began.
   * @default 60000
   */
  readonly timeoutMs?: number;
}

export const DEFAULT_SELECT_OPTIONS = Object.freeze({ timeoutMs: 60_000 } satisfies Required<SelectOptions>);

/**
 * A wait's `timeoutMs` (its default when left out). NaN or Infinity would never end a wait that has
 * timers to move the clock to (the relay polls for ever).
 * @internal
 * @throws InvalidOptionsError
 */
export function checkedTimeoutMs(given: number | undefined): number {
  const timeoutMs = given ?? DEFAULT_SELECT_OPTIONS.timeoutMs;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new InvalidOptionsError(
      `timeoutMs must be a finite number of ms from 0, got ${describeValue(timeoutMs)}`,
    );
  }
  return timeoutMs;
}

/** How a list waits: the harness's `waitUntil`, which moves virtual time while `found` is false. */
export type Waiter = (found: () => boolean, timeoutMs: number) => Promise<boolean>;

/** What a wait that gave up says of the work still in flight: empty, or a clause to append. */
export type InFlightNote = () => string;

/**
 * A `select` found no matching record in time; its message lists what the list held and names the
 * deliveries still in flight when it gave up.
 */
export class SelectTimeoutError extends FerryError {
  constructor(message: string) {
    super('SELECT_TIMEOUT', message);
  }
}

/** True when `error` is a {@link SelectTimeoutError}. */
export const isSelectTimeoutError = errorGuard<SelectTimeoutError>('SELECT_TIMEOUT');

/**
 * What a test harness saw, in the order it saw it: published, consumed, failed or dead-lettered
 * messages. Reading (`all`, `count`, `none`) never waits; `select` and `selectAll` wait for records
 * still to come, moving the harness's virtual time (see `createTestHarness`).
 *
 * @example
 * const confirmed = await harness.published.select('order.confirmed');
 * expect(confirmed.message.data).toEqual({ orderId: '42' });
 * expect(harness.failed.count('payment.captured')).toBe(2);
 */
export class MessageList<R extends Recorded> {
  readonly #name: string;
  readonly #records: R[] = [];
  readonly #wait: Waiter;
  readonly #inFlight: InFlightNote;

  /** @internal Lists are created by the harness. */
  constructor(name: string, wait: Waiter, inFlight: InFlightNote = () => '') {
    this.#name = name;
    this.#wait = wait;
    this.#inFlight = inFlight;
  }

  /**
   * @internal Keeps a frozen copy: what a handler holds on to (its message) is not the list's, and a
   * predicate cannot change the list by accident (a `sort()` in place throws instead).
   */
  push(record: R): void {
    this.#records.push(copied(record, true));
  }

  /**
   * Every record so far, oldest first, or those `filter` selects: copies, down to each record's
   * message, so that a test changing what it got changes nothing the list holds.
   */
  all(filter?: RecordFilter<R>): R[] {
    if (filter === undefined) return this.#records.map(handedOut);
    const test = matcher(filter);
    return this.#records.filter(test).map(handedOut);
  }

  /** How many records `filter` selects now (all of them without one). Does not wait. */
  count(filter?: RecordFilter<R>): number {
    return this.all(filter).length;
  }

  /** True when no record matches `filter` now. Does not wait: settle or advance first. */
  none(filter: RecordFilter<R>): boolean {
    return this.count(filter) === 0;
  }

  /**
   * The first record `filter` selects, already there or arriving while it waits (see
   * {@link SelectOptions.timeoutMs}). Rejects with a {@link SelectTimeoutError} listing what the list
   * held when none came, never with the harness's `HARNESS_STALLED`: when the limit comes with
   * handlers still in flight, it waits for them up to the harness's `realTimeoutMs` of real time (they
   * may be doing real I/O), then rejects naming them (a handler waiting for virtual time past the
   * limit, such as its own time limit, does not end there).
   */
  async select(filter: RecordFilter<R>, options: SelectOptions = {}): Promise<R> {
    checkOptions(`${this.#name}.select`, options, ['timeoutMs']);
    const [first] = await this.selectAll(filter, { ...options, count: 1 });
    return first!;
  }

  /**
   * The records `filter` selects once there are at least `count` of them (@default 1), waiting as
   * {@link select} does; resolves all of them, oldest first.
   */
  async selectAll(
    filter: RecordFilter<R>,
    options: SelectOptions & { readonly count?: number } = {},
  ): Promise<R[]> {
    checkOptions(`${this.#name}.selectAll`, options, ['timeoutMs', 'count']);
    const timeoutMs = checkedTimeoutMs(options.timeoutMs);
    const count = options.count ?? 1;
    if (!Number.isInteger(count) || count < 1) {
      throw new InvalidOptionsError(`count must be a positive integer, got ${count}`);
    }
    const test = matcher(filter);
    const found = () => this.#records.filter(test).length >= count;
    if (!found() && !(await this.#wait(found, timeoutMs))) {
      const matching = this.#records.filter(test).length;
      throw new SelectTimeoutError(
        `${this.#name}: expected ${count === 1 ? 'a record' : `${count} records`} matching ${describe(filter)} within ${timeoutMs} ms of virtual time, found ${matching}${this.#inFlight()}; ${this.#name} holds ${this.#describeRecords()}`,
      );
    }
    return this.#records.filter(test).map(handedOut);
  }

  #describeRecords(): string {
    if (this.#records.length === 0) return 'nothing';
    const shown = this.#records.slice(0, 20).map((r) => `\n  - ${summary(r)}`);
    const more = this.#records.length > 20 ? `\n  … and ${this.#records.length - 20} more` : '';
    return `${this.#records.length}:${shown.join('')}${more}`;
  }
}

/** A record as a caller gets it: a copy it may change, down to its message's data. */
const handedOut = <R extends Recorded>(record: R): R => copied(record, false);

/**
 * A copy of `record`, down through its plain objects and arrays (a Date copied too): a class
 * instance (a URL, a Buffer, what a contract's transform made) is kept as it is, not copied into a
 * plain object that lost it, and so is the `error` a handler threw (the very object). `frozen`:
 * each plain object and array of the copy frozen.
 */
function copied<R extends Recorded>(record: R, frozen: boolean): R {
  const copy = (value: unknown, depth: number): unknown => {
    if (typeof value !== 'object' || value === null || depth > 200) return value;
    if (value instanceof Date) return new Date(value.getTime());
    const prototype = Object.getPrototypeOf(value);
    let out: Record<string, unknown> | unknown[];
    if (Array.isArray(value)) out = value.map((item) => copy(item, depth + 1));
    else if (prototype === Object.prototype || prototype === null) {
      out = Object.create(prototype) as Record<string, unknown>;
      for (const [key, item] of Object.entries(value)) {
        // Own data property, as JSON.parse makes one: `__proto__` stays data, never a prototype.
        Object.defineProperty(out, key, {
          value: copy(item, depth + 1),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
    } else return value;
    return frozen ? Object.freeze(out) : out;
  };
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) out[key] = key === 'error' ? value : copy(value, 0);
  return (frozen ? Object.freeze(out) : out) as unknown as R;
}

function matcher<R extends Recorded>(filter: RecordFilter<R>): (record: R) => boolean {
  if (typeof filter === 'function') {
    return (record) => {
      const result: unknown = filter(record);
      // A promise is truthy: an async predicate matched every record, so a select could not fail.
      if (typeof (result as { then?: unknown } | null)?.then === 'function') {
        throw new InvalidOptionsError(
          `a record predicate must return a boolean, not a promise: it is called on each record as it arrives, without waiting (for an async condition, use harness.eventually)`,
        );
      }
      return Boolean(result);
    };
  }
  if (typeof filter !== 'string') {
    throw new InvalidOptionsError(
      `a record filter is a message type, a topic pattern or a predicate, not ${describeValue(filter)}`,
    );
  }
  const matches = compilePattern(filter);
  return (record) => matches(record.type);
}

function describe(filter: string | ((record: never) => boolean)): string {
  return typeof filter === 'string' ? `"${filter}"` : `the predicate ${filter.name || '(anonymous)'}`;
}

function summary(record: Recorded): string {
  const r = record as Recorded & {
    message?: { data?: unknown };
    group?: string;
    error?: unknown;
    reason?: { kind: string; message: string };
  };
  const parts = [r.type];
  if (r.group !== undefined) parts.push(`group ${r.group}`);
  if (r.message !== undefined)
    parts.push(`data ${inspect(r.message.data, { depth: 3, breakLength: Number.POSITIVE_INFINITY })}`);
  if (r.error !== undefined)
    parts.push(`error ${r.error instanceof Error ? r.error.message : inspect(r.error)}`);
  if (r.reason !== undefined) parts.push(`${r.reason.kind}: ${r.reason.message}`);
  return parts.join(', ');
}
