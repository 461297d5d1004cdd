import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { createBus } from '../connect/create-bus.js';
import { currentContext } from '../context/context.js';
import { describeValue } from '../errors/describe-value.js';
import { FerryError, InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions, knownOptions } from '../errors/options-object.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { type Logger, silentLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import type { Bus, SubscriptionDefaults } from '../messaging/bus.js';
import type { Contracts, NoContracts } from '../messaging/contracts.js';
import type { Envelope, Message } from '../messaging/envelope.js';
import { MemoryBroker } from '../messaging/memory/memory-broker.js';
import { MemoryTransport } from '../messaging/memory/memory-transport.js';
import type { HandlerMiddleware } from '../messaging/middleware.js';
import { ACK, type DeadLetterReason, type Delivery, type SubscriptionSpec } from '../messaging/transport.js';
import { createOutbox, type Outbox } from '../outbox/outbox.js';
import type { RelayOptions } from '../outbox/relay-options.js';
import type { SagaStatus } from '../outbox/storage.js';
import { sagasStartedOn } from '../saga/start-saga.js';
import { VirtualClock } from '../time/clock.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { checkedTimeoutMs, MessageList, type SelectOptions } from './message-list.js';
import { RecordingTransport } from './recording-transport.js';

/** A message the harness's transport accepted (from `bus.publish` or the outbox relay), as JSON. */
export interface PublishedRecord {
  readonly type: string;
  readonly message: Envelope;
}

/** A run of a handler chain that succeeded. */
export interface ConsumedRecord {
  readonly type: string;
  readonly message: Message;
  readonly group: string;
  readonly pattern: string;
}

/** A failed attempt: its handler chain threw or ran past its time limit (one record per attempt). */
export interface FailedRecord extends ConsumedRecord {
  readonly error: unknown;
}

/** A message moved to its group's dead-letter queue. */
export interface DeadLetteredRecord {
  readonly type: string;
  /** `undefined` for bytes that could not be decoded. */
  readonly message: Message | undefined;
  readonly group: string;
  readonly pattern: string;
  readonly reason: DeadLetterReason;
  readonly attempts: number;
}

/** A saga instance as stored, its state parsed. */
export interface SagaInstanceRecord<S = unknown> {
  readonly id: string;
  readonly status: SagaStatus;
  readonly version: number;
  readonly state: S;
  readonly updatedAt: number;
}

/** What `setup` gets to subscribe handlers and start sagas with. */
export interface TestHarnessParts<C extends Contracts> {
  readonly bus: Bus<C>;
  readonly store: EventStore;
  readonly outbox: Outbox<C>;
  readonly clock: VirtualClock;
}

/** Options of {@link createTestHarness}. */
export interface TestHarnessOptions<C extends Contracts = NoContracts> {
  /** The service under test: the bus's `service`, its default group and its messages' `source`. */
  readonly service: string;
  /** The service's contracts, checked at publish and consume as in production. */
  readonly contracts?: C;
  /** @default a new VirtualClock at `Date.now()` */
  readonly clock?: VirtualClock;
  /** Subscribes the handlers and starts the sagas under test. */
  readonly setup?: (parts: TestHarnessParts<C>) => Promise<void> | void;
  /** @default the bus's defaults (5 attempts, 1 s, 2 s, 4 s, 8 s apart) */
  readonly subscriptionDefaults?: SubscriptionDefaults;
  /**
   * Options of the outbox relay. @default its defaults, but for its safety poll: once an hour of
   * virtual time (commits and timers wake it; a poll every second cost real time at every step)
   */
  readonly relay?: RelayOptions;
  /**
   * Accepts messages of types no subscription of the harness takes, as the queues of other services
   * would in production, instead of the broker's `UNROUTABLE` refusal. They appear in `published`.
   * @default true
   */
  readonly acceptUnrouted?: boolean;
  /**
   * How long, in real ms, a handler in flight may make no progress before `advance` and `select`
   * take it to be waiting for virtual time (a time limit, a sleep on the clock) and move the clock,
   * past the handler's own `handlerTimeoutMs` too: a handler awaiting real I/O longer than this is
   * timed out and retried. Set it above the real I/O of the handlers under test.
   * @default 100
   */
  readonly stallMs?: number;
  /**
   * Longest real wait, in ms, of `settle` and `close` for work in flight, and of a `select`,
   * `selectAll` or `eventually` that reached its `timeoutMs` of virtual time with handlers still in
   * flight (they may be doing real I/O) before it gives up.
   * @default 5000
   */
  readonly realTimeoutMs?: number;
  /** @default silent */
  readonly logger?: Logger;
  /**
   * The event store the harness's outbox and units of work use: a SQLite one (`createEventStore({
   * url: 'sqlite:…' })`) for handlers that run their own SQL through `work.query`, which the memory
   * store has not. The harness does not close a store it was given. @default a new in-memory store
   */
  readonly store?: EventStore;
}

/** What the recorder of one run of a handler chain learns from inside it. */
interface HandlerRunNote {
  /** The transactional inbox dropped the message as a duplicate: no handler ran. */
  duplicate: boolean;
}

const handlerRuns = new AsyncLocalStorage<HandlerRunNote>();

const TEST_HARNESS_OPTION_NAMES = [
  'service',
  'contracts',
  'clock',
  'setup',
  'subscriptionDefaults',
  'relay',
  'acceptUnrouted',
  'stallMs',
  'realTimeoutMs',
  'logger',
  'store',
];

const WAITING = 'select, selectAll or eventually';

/** The harness relay's safety poll, in virtual time, unless `relay.pollIntervalMs` says otherwise. */
export const HARNESS_RELAY_POLL_MS = 3_600_000;

export const DEFAULT_TEST_HARNESS_OPTIONS = Object.freeze({
  acceptUnrouted: true,
  stallMs: 100,
  realTimeoutMs: 5_000,
});

/** `settle` or `close` waited `realTimeoutMs` and work was still in flight. */
export class HarnessStalledError extends FerryError {
  constructor(message: string) {
    super('HARNESS_STALLED', message);
  }
}

// Captured at load so that fake timers installed by a test cannot freeze the harness.
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
const realSetImmediate = globalThis.setImmediate;
const turn = () => new Promise<void>((resolve) => realSetImmediate(resolve));

type Quiet = 'found' | 'idle' | 'stalled';

/** A wait under way: what it waits for. */
interface Wait {
  readonly found: () => boolean | Promise<boolean>;
}

/**
 * An in-memory service under test: a bus on a broker of its own, a memory event store and an
 * outbox, all on one {@link VirtualClock}, recording what was published, consumed, failed and
 * dead-lettered. Create it with {@link createTestHarness}.
 *
 * **How time moves.** Virtual time moves only inside `advance(ms)` and while `select`, `selectAll`
 * or `eventually` wait for something that is not there yet. Both move it one timer at a time: before
 * each step everything that can run without time runs (deliveries, handlers, the relay), then the
 * clock jumps to the next timer (a retry delay, a saga timeout, a scheduled message, a relay poll).
 * A wait stops at the first step where its condition holds, so `clock.now()` tells when it happened,
 * and gives up `timeoutMs` of virtual time after it began: when the next timer is due past that
 * limit, it does not move time to it. If handlers are still in flight then, it gives them up to
 * `realTimeoutMs` of real time (they may be doing real I/O), and otherwise rejects with its own
 * timeout error (`SELECT_TIMEOUT`, `HARNESS_TIMEOUT`), which names them: a handler waiting for
 * virtual time past the limit (a time limit, a sleep on the clock) does not end there. `settle()`,
 * `all()`, `count()` and `none()` never move time. Real time passes only while handlers do real I/O.
 *
 * A handler in flight that records nothing for `stallMs` of real time is taken to wait for the clock,
 * and time moves on, past its own `handlerTimeoutMs` too: it cannot be told from one awaiting real
 * I/O, and holding time at each limit would cost every timed-out attempt `realTimeoutMs` of real
 * time. A handler whose real I/O takes longer than `stallMs` is therefore timed out and retried.
 */
export class TestHarness<C extends Contracts = NoContracts> {
  readonly bus: Bus<C>;
  readonly store: EventStore;
  readonly outbox: Outbox<C>;
  readonly clock: VirtualClock;
  /**
   * The broker's URL: another bus (another service) joins it with `createBus({ url, clock })`. The
   * lists record the harness's own bus: the runs of its subscriptions on what the joined bus sends
   * are recorded, what the joined bus publishes is not in `published`.
   */
  readonly url: string;
  /** Every message the harness bus's transport accepted, outbox messages once the relay sent them. */
  readonly published: MessageList<PublishedRecord>;
  /**
   * Every handler run that succeeded within its time limit. A message the transactional inbox drops
   * as a duplicate (its id already handled by the group) runs no handler and is not listed.
   */
  readonly consumed: MessageList<ConsumedRecord>;
  /**
   * Every failed attempt, retried or not, once: its handler chain threw, or ran past
   * `handlerTimeoutMs` (the error is then the `HandlerTimeoutError`, whether or not the handler
   * heeded its signal; what it does afterwards is not recorded).
   */
  readonly failed: MessageList<FailedRecord>;
  /** Every message dead-lettered by one of the bus's subscriptions (handler errors, invalid, expired…). */
  readonly deadLettered: MessageList<DeadLetteredRecord>;

  readonly #stallMs: number;
  readonly #ownsStore: boolean;
  readonly #realTimeoutMs: number;
  readonly #inFlight = new Map<Delivery, SubscriptionSpec>();
  /** Deliveries already taken to wait for virtual time: the next steps do not wait for them again. */
  readonly #waitingForTime = new WeakSet<Delivery>();
  readonly #listeners = new Set<() => void>();
  #progress = 0;
  #closeCatchAll: (() => Promise<void>) | undefined;
  #closing: Promise<void> | undefined;
  /** The last `advance` called: the next one starts once it ended. */
  #advancing: Promise<void> = Promise.resolve();
  /** The step of virtual time under way (see {@link #step}), and the harness whose step runs. */
  #stepping: Promise<void> = Promise.resolve();
  readonly #inStep = new AsyncLocalStorage<object>();
  /** The conditions of the waits under way. */
  readonly #waits = new Set<Wait>();

  /** @internal Use {@link createTestHarness}. */
  constructor(
    parts: TestHarnessParts<C> & { readonly url: string },
    lists: Pick<TestHarness<C>, 'published' | 'consumed' | 'failed' | 'deadLettered'>,
    options: { readonly stallMs: number; readonly realTimeoutMs: number; readonly ownsStore?: boolean },
  ) {
    ({ bus: this.bus, store: this.store, outbox: this.outbox, clock: this.clock, url: this.url } = parts);
    this.#ownsStore = options.ownsStore ?? true;
    ({
      published: this.published,
      consumed: this.consumed,
      failed: this.failed,
      deadLettered: this.deadLettered,
    } = lists);
    this.#stallMs = options.stallMs;
    this.#realTimeoutMs = options.realTimeoutMs;
  }

  /** @internal Called by the recorders. */
  noteProgress(): void {
    this.#progress++;
    for (const listener of [...this.#listeners]) listener();
  }

  /** @internal */
  deliveryStarted(delivery: Delivery, spec: SubscriptionSpec): void {
    this.#inFlight.set(delivery, spec);
    this.noteProgress();
  }

  /** @internal */
  deliveryEnded(delivery: Delivery): void {
    this.#inFlight.delete(delivery);
    this.noteProgress();
  }

  /** @internal */
  setCatchAll(close: () => Promise<void>): void {
    this.#closeCatchAll = close;
  }

  /**
   * Moves virtual time forward by `ms`, one timer at a time, letting deliveries, handlers and the
   * relay run at each step; resolves with `clock.now()` at start + `ms` and everything due by then run.
   */
  advance(ms: number): Promise<void> {
    if (!Number.isFinite(ms) || ms < 0) {
      return Promise.reject(new InvalidOptionsError(`advance needs ms >= 0, got ${ms}`));
    }
    // Calls made before an earlier one ended wait for it: each moves time by its own `ms` from
    // where the one before left it (two at once read the same start, and one went back in time).
    const run = this.#advancing.then(() => this.#advance(ms));
    this.#advancing = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  async #advance(ms: number): Promise<void> {
    this.#refuseClosed('advance');
    const target = this.clock.now() + ms;
    for (;;) {
      const reached = await this.#step(async () => {
        await this.#quiet(undefined, this.#stallMs);
        // Closing: time is close()'s to move now (for its own timeouts).
        this.#refuseClosed('advance');
        // A wait beside it whose record came: it sees it at this time, before time moves on.
        if (await this.#aWaitIsOver()) return false;
        const next = this.clock.nextDue;
        if (next !== undefined && next <= target) {
          await this.clock.advance(Math.max(0, next - this.clock.now()));
          return false;
        }
        // A select or eventually waiting meanwhile may have moved time past the target already.
        await this.clock.advance(Math.max(0, target - this.clock.now()));
        return true;
      });
      if (reached) break;
    }
    await this.#quiet(undefined, this.#stallMs);
  }

  /**
   * Runs `body`, one step of virtual time (let what can run run, look, move the clock), while no
   * other wait or advance takes its step: two moving the clock at once each stepped past what the
   * other's step had just made happen (a select resolved, and time stood, seconds after its record
   * came). A step taken inside a step (a condition that itself waits) runs at once.
   */
  async #step<T>(body: () => Promise<T>): Promise<T> {
    if (this.#inStep.getStore() === this) return body();
    const before = this.#stepping;
    let release!: () => void;
    this.#stepping = new Promise<void>((resolve) => {
      release = resolve;
    });
    await before;
    try {
      return await this.#inStep.run(this, body);
    } finally {
      release();
    }
  }

  /** Throws `HARNESS_CLOSED` once `close()` was called: nothing more arrives, time moves no more. */
  #refuseClosed(what: string): void {
    if (this.#closing !== undefined) {
      throw new FerryError(
        'HARNESS_CLOSED',
        `${what}: the test harness was closed (close() was called), so nothing more arrives; await what you wait for before closing it`,
      );
    }
  }

  /**
   * Waits, without moving time, until nothing is in flight: no delivery being handled or queued, the
   * relay has nothing due, and timers due now have run. Rejects with a `HarnessStalledError` after
   * `realTimeoutMs` (a handler waiting for virtual time never ends here: use `advance`).
   */
  async settle(): Promise<void> {
    await this.#quiet(undefined, undefined);
  }

  /**
   * Resolves once `condition` holds, moving virtual time as `select` does, up to `timeoutMs` of it;
   * rejects with a `FerryError` of code `HARNESS_TIMEOUT` naming `what` (and the deliveries still in
   * flight) otherwise. For conditions no list records, such as a saga's state.
   */
  async eventually(
    condition: () => boolean | Promise<boolean>,
    options: SelectOptions & { readonly what?: string } = {},
  ): Promise<void> {
    checkOptions('eventually', options, ['timeoutMs', 'what']);
    const timeoutMs = checkedTimeoutMs(options.timeoutMs);
    if (await this.waitUntil(condition, timeoutMs)) return;
    throw new FerryError(
      'HARNESS_TIMEOUT',
      `eventually: ${options.what ?? 'the condition'} did not hold within ${timeoutMs} ms of virtual time${this.inFlightNote()}`,
    );
  }

  /**
   * @internal What a wait that gave up says of the deliveries still in flight (empty when none): a
   * wait gives up with some in flight only after waiting `realTimeoutMs` of real time for them.
   */
  inFlightNote(): string {
    if (this.#inFlight.size === 0) return '';
    return ` (still in flight: ${this.#describeInFlight()}, unfinished after ${this.#realTimeoutMs} ms of real time: waiting for virtual time past the limit, or for real I/O)`;
  }

  /**
   * @internal How lists wait: true once `found` holds, false when the next step is past `timeoutMs`
   * of virtual time and what is in flight did not end within `realTimeoutMs` of real time.
   */
  async waitUntil(found: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
    this.#refuseClosed(WAITING);
    const ok = await this.#waitUntil(found, timeoutMs);
    // A wait close() ended (it moves time for its own timeouts) says so: it said the time ran out.
    if (!ok) this.#refuseClosed(WAITING);
    return ok;
  }

  async #waitUntil(found: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
    // Its own entry: two waits on one condition function are two waits.
    const wait = { found };
    this.#waits.add(wait);
    try {
      return await this.#waitSteps(wait, timeoutMs);
    } finally {
      this.#waits.delete(wait);
    }
  }

  /**
   * True when a wait under way (another `select`, `selectAll` or `eventually`) found what it waits
   * for: time must not move before it looked. A condition that throws counts, for its wait to throw.
   */
  async #aWaitIsOver(except?: Wait): Promise<boolean> {
    for (const wait of this.#waits) {
      if (wait === except) continue;
      try {
        if ((await wait.found()) === true) return true;
      } catch {
        return true;
      }
    }
    return false;
  }

  async #waitSteps(wait: Wait, timeoutMs: number): Promise<boolean> {
    const { found } = wait;
    const limit = this.clock.now() + timeoutMs;
    for (;;) {
      const outcome = await this.#step(async (): Promise<boolean | undefined> => {
        // Closing: the wait moves time no more (close() moves it for its own timeouts).
        if (this.#closing !== undefined) return (await found()) === true;
        let state = await this.#quiet(found, this.#stallMs);
        if (state === 'found') return true;
        const next = this.clock.nextDue;
        if (next === undefined || next > limit) {
          // Nothing left to move time to: what is in flight may still be doing real I/O. If it does
          // not end in time, the wait gives up as a wait (its caller's timeout error), not as a stall.
          if (state === 'stalled') state = await this.#quiet(found, undefined, 'give-up');
          if (state === 'found') return true;
          const after = this.clock.nextDue;
          if (after === undefined || after > limit) return (await found()) === true;
          return undefined;
        }
        if (await this.#aWaitIsOver(wait)) return undefined;
        await this.clock.advance(Math.max(0, next - this.clock.now()));
        return undefined;
      });
      if (outcome !== undefined) return outcome;
    }
  }

  /**
   * Instances of saga `name` as stored, oldest first, optionally only those with `status`
   * (`active` or `completed`). Does not wait: use `eventually` to wait for one.
   */
  async sagaInstances<S = unknown>(name: string, status?: SagaStatus): Promise<SagaInstanceRecord<S>[]> {
    // A misspelt status or name answered [], so that "none left active" could not fail.
    if (status !== undefined && status !== 'active' && status !== 'completed') {
      throw new InvalidOptionsError(
        `sagaInstances status is 'active' or 'completed' (or nothing, for both), not ${describeValue(status)}`,
      );
    }
    if (typeof name !== 'string' || name === '') {
      throw new InvalidOptionsError(`sagaInstances needs a saga's name, not ${describeValue(name)}`);
    }
    const rows = await this.outbox.storage.sagas(name, 10_000, status);
    const started = sagasStartedOn(this.outbox);
    if (
      rows.length === 0 &&
      !started.includes(name) &&
      (status === undefined || (await this.outbox.storage.sagas(name, 1)).length === 0)
    ) {
      throw new InvalidOptionsError(
        `sagaInstances: no saga named ${describeValue(name)} was started on this harness's outbox, and its store holds no instance of one (started: ${started.length === 0 ? 'none' : started.map((n) => describeValue(n)).join(', ')})`,
      );
    }
    return rows.map((row) => ({
      id: row.id,
      status: row.status,
      version: row.version,
      state: JSON.parse(row.state) as S,
      updatedAt: row.updatedAt,
    }));
  }

  /**
   * Closes the bus, the outbox and the store, moving virtual time as needed for their close
   * timeouts. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#closeCatchAll?.();
      await this.#drive(this.bus.close());
      await this.#drive(this.outbox.close());
      if (this.#ownsStore) await this.store.close();
    })();
    return this.#closing;
  }

  /**
   * Runs what can run without moving time. Resolves `found` once `found` holds, `idle` once nothing is
   * in flight, `stalled` when deliveries in flight made no progress for `stallMs`; without `stallMs`,
   * waits for them up to `realTimeoutMs`, then throws a `HarnessStalledError` (`onTimeout: 'throw'`)
   * or resolves `stalled` (`'give-up'`).
   */
  async #quiet(
    found: (() => boolean | Promise<boolean>) | undefined,
    stallMs: number | undefined,
    onTimeout: 'throw' | 'give-up' = 'throw',
  ): Promise<Quiet> {
    const deadline = Date.now() + this.#realTimeoutMs;
    for (;;) {
      if (found !== undefined && (await found())) return 'found';
      const mark = this.#progress;
      await this.clock.advance(0);
      const budget = Math.max(0, Math.min(stallMs ?? Number.POSITIVE_INFINITY, deadline - Date.now()));
      const flushed = await this.#within(this.outbox.flush(), budget);
      await turn();
      if (found !== undefined && (await found())) return 'found';
      if (this.#inFlight.size === 0 && flushed) {
        const next = this.clock.nextDue;
        if (this.#progress === mark && (next === undefined || next > this.clock.now())) return 'idle';
        continue;
      }
      if (stallMs !== undefined && [...this.#inFlight.keys()].every((d) => this.#waitingForTime.has(d))) {
        if (this.#progress === mark) return 'stalled';
        continue;
      }
      const wait = stallMs ?? deadline - Date.now();
      if (wait > 0 && (this.#progress !== mark || (await this.#progressWithin(wait)))) continue;
      if (stallMs !== undefined) {
        for (const delivery of this.#inFlight.keys()) this.#waitingForTime.add(delivery);
        return 'stalled';
      }
      if (onTimeout === 'give-up') return 'stalled';
      throw new HarnessStalledError(
        `settle: still in flight after ${this.#realTimeoutMs} ms of real time: ${this.#describeInFlight()}${flushed ? '' : '; the outbox relay has not finished its round'}. A handler waiting for virtual time ends only when time moves: use advance(ms) or select.`,
      );
    }
  }

  #describeInFlight(): string {
    const parts = [...this.#inFlight].map(([delivery, spec]) =>
      delivery.ok
        ? `${delivery.message.type} (attempt ${delivery.message.attempt}) in group ${spec.group}`
        : `an undecodable message in group ${spec.group}`,
    );
    return parts.length === 0 ? 'no delivery' : parts.join(', ');
  }

  /** True when something was recorded within `ms` of real time. */
  #progressWithin(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        realClearTimeout(timer);
        this.#listeners.delete(listener);
        resolve(value);
      };
      const listener = () => done(true);
      const timer = realSetTimeout(() => done(false), ms);
      this.#listeners.add(listener);
    });
  }

  /** True when `promise` settled within `ms` of real time. */
  #within(promise: Promise<unknown>, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = realSetTimeout(() => resolve(false), ms);
      const end = () => {
        realClearTimeout(timer);
        resolve(true);
      };
      promise.then(end, end);
    });
  }

  /** Waits for `promise`, moving virtual time when it waits on the clock (close timeouts). */
  async #drive(promise: Promise<void>): Promise<void> {
    let done = false;
    const settled = promise.finally(() => {
      done = true;
    });
    const deadline = Date.now() + this.#realTimeoutMs;
    while (!done) {
      if (await this.#within(settled, this.#stallMs)) break;
      const next = this.clock.nextDue;
      if (next !== undefined) await this.clock.advance(Math.max(0, next - this.clock.now()));
      else if (Date.now() > deadline) {
        throw new HarnessStalledError(`close: still waiting after ${this.#realTimeoutMs} ms of real time`);
      }
    }
    await settled;
  }
}

/**
 * Starts an in-memory service for a test: a bus on a broker of its own (`memory://harness-<uuid>`),
 * a memory event store and an outbox, all on a {@link VirtualClock}, then runs `setup` to subscribe
 * the handlers and start the sagas under test. Retry delays, handler time limits, saga timeouts,
 * scheduled messages and relay polling all run on that clock: see {@link TestHarness} for how time
 * moves. Close it after the test.
 *
 * @example
 * const harness = await createTestHarness({
 *   service: 'orders',
 *   contracts,
 *   setup: async ({ bus, outbox }) => {
 *     await bus.subscribe('payment.captured', async (msg, { work }) => {
 *       await work.publish('order.confirmed', { orderId: msg.data.orderId });
 *     }, { unitOfWork: outbox });
 *   },
 * });
 * await harness.bus.publish('payment.captured', { orderId: '42' });
 * const confirmed = await harness.published.select('order.confirmed');
 * expect(confirmed.message.data).toEqual({ orderId: '42' });
 * await harness.close();
 */
export async function createTestHarness<C extends Contracts = NoContracts>(
  given: TestHarnessOptions<C>,
): Promise<TestHarness<C>> {
  // Checked, and members set to undefined left out (their defaults apply), as every Ferry call does.
  const options = knownOptions(
    'createTestHarness',
    given,
    TEST_HARNESS_OPTION_NAMES,
  ) as TestHarnessOptions<C>;
  const o = { ...DEFAULT_TEST_HARNESS_OPTIONS, ...options };
  for (const name of ['stallMs', 'realTimeoutMs'] as const) checkHarnessMs(name, o[name]);
  // `acceptUnrouted: 'no'` was truthy, so it accepted what the test meant to refuse.
  if (typeof o.acceptUnrouted !== 'boolean') {
    throw new InvalidOptionsError(
      `acceptUnrouted must be true or false, not ${describeValue(o.acceptUnrouted)}`,
    );
  }
  if (options.setup !== undefined && typeof options.setup !== 'function') {
    throw new InvalidOptionsError(
      `setup must be a function (parts) => …, not ${describeValue(options.setup)}`,
    );
  }
  // Before the bus is created: refusing it after would leave the bus open.
  if (options.store !== undefined && !(options.store instanceof EventStore)) {
    throw new InvalidOptionsError(
      'store must be an open EventStore (createEventStore), not a function or other value',
    );
  }
  const clock = options.clock ?? new VirtualClock({ start: Date.now() });
  if (!(clock instanceof VirtualClock)) throw new InvalidOptionsError('clock must be a VirtualClock');
  const logger = loggerOption('createTestHarness', options.logger) ?? silentLogger;
  const name = `harness-${randomUUID()}`;
  const inner = new MemoryTransport({ broker: MemoryBroker.named(name, { clock }) });

  let harness: TestHarness<C> | undefined;
  const wait = (found: () => boolean, timeoutMs: number) => harness!.waitUntil(found, timeoutMs);
  const inFlight = () => harness!.inFlightNote();
  const lists = {
    published: new MessageList<PublishedRecord>('published', wait, inFlight),
    consumed: new MessageList<ConsumedRecord>('consumed', wait, inFlight),
    failed: new MessageList<FailedRecord>('failed', wait, inFlight),
    deadLettered: new MessageList<DeadLetteredRecord>('deadLettered', wait, inFlight),
  };
  const transport = new RecordingTransport(inner, {
    published(envelope) {
      lists.published.push({ type: envelope.type, message: envelope });
      harness?.noteProgress();
    },
    deliveryStarted(spec, delivery) {
      harness?.deliveryStarted(delivery, spec);
    },
    deliveryDecided(spec, delivery, outcome) {
      if (outcome?.action === 'dead-letter') {
        const message = delivery.ok ? delivery.message : undefined;
        lists.deadLettered.push({
          type: message?.type ?? '(undecodable)',
          message,
          group: spec.group,
          pattern: spec.pattern,
          reason: outcome.reason,
          attempts: outcome.attempts,
        });
      }
      harness?.deliveryEnded(delivery);
    },
  });
  // Outermost middleware: sees each run of the chain. Past its handlerTimeoutMs the bus fails the
  // attempt with a HandlerTimeoutError, aborting the run's signal first, whether or not the handler
  // heeds it: the abort is recorded as the attempt's failure, synchronously (before the bus's
  // outcome, as a thrown error is), and whatever the handler does later is not recorded again.
  const recorder: HandlerMiddleware = (next, { group, pattern }) => {
    return async (message) => {
      const run: HandlerRunNote = { duplicate: false };
      // The run's own signal: aborted only when its time limit passes (none without a limit).
      const signal = currentContext()?.signal;
      let recorded = false;
      const record = (failure: { readonly error: unknown } | undefined) => {
        if (recorded) return;
        recorded = true;
        if (failure === undefined) lists.consumed.push({ type: message.type, message, group, pattern });
        else lists.failed.push({ type: message.type, message, group, pattern, error: failure.error });
        harness?.noteProgress();
      };
      const onAbort = () => record({ error: signal?.reason });
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await handlerRuns.run(run, next, message);
      } catch (error) {
        record({ error });
        throw error;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
      if (!run.duplicate) record(undefined);
    };
  };

  const bus = await createBus<C>({
    transport,
    service: options.service,
    clock,
    logger,
    middleware: [recorder],
    ...(options.contracts === undefined ? {} : { contracts: options.contracts }),
    ...(options.subscriptionDefaults === undefined
      ? {}
      : { subscriptionDefaults: options.subscriptionDefaults }),
  });
  const store = options.store ?? new EventStore(new MemoryEventStoreBackend());
  const outbox = await createOutbox<C>({
    store,
    bus,
    clock,
    logger,
    // Its commits wake the relay, and it sets a timer for what falls due: the poll is a safety net
    // for other processes' commits, which a harness has none of. Each timer costs real time (about
    // 2 ms a step), so a poll every second of virtual time made a wait for a saga's 2 h timeout take
    // 15 s of real time.
    relay:
      typeof options.relay === 'object' && options.relay !== null
        ? { pollIntervalMs: HARNESS_RELAY_POLL_MS, ...options.relay }
        : (options.relay ?? { pollIntervalMs: HARNESS_RELAY_POLL_MS }),
  });
  // The inbox drops a duplicate inside the chain, past the recorder: runHandler resolves false and
  // runs nothing. Told to the recorder of that run through its async context, so that `consumed`
  // lists handler runs only (subscriptions and sagas with `unitOfWork: outbox` go through here).
  const runHandler = outbox.runHandler.bind(outbox);
  outbox.runHandler = async (...args) => {
    const ran = await runHandler(...args);
    const run = handlerRuns.getStore();
    if (!ran && run !== undefined) run.duplicate = true;
    return ran;
  };
  harness = new TestHarness<C>({ bus, store, outbox, clock, url: `memory://${name}` }, lists, {
    ...o,
    ownsStore: options.store === undefined,
  });
  if (o.acceptUnrouted) {
    // Straight on the broker's transport: not one of the bus's subscriptions, so never recorded.
    const catchAll = await inner.subscribe(
      { group: 'ferry-test-harness-unrouted', pattern: '#', concurrency: 65_535, retryDelays: [] },
      () => ACK,
    );
    harness.setCatchAll(() => catchAll.close(0));
  }
  try {
    await options.setup?.({ bus, store, outbox, clock });
  } catch (error) {
    await harness.close();
    throw error;
  }
  return harness;
}

/**
 * A harness time (`stallMs`, `realTimeoutMs`): a positive integer of ms a Node timer takes (past its
 * longest, a wait fired at once: a large stallMs timed every handler out). `label` names it as the
 * caller knows it. @throws InvalidOptionsError
 */
export function checkHarnessMs(label: string, value: unknown): void {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > MAX_TIMER_MS) {
    throw new InvalidOptionsError(
      `${label} must be a positive integer of ms, at most ${MAX_TIMER_MS}, got ${String(value)}`,
    );
  }
}
