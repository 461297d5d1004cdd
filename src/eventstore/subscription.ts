import { readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { runWithContext } from '../context/context.js';
import { describeThrown } from '../errors/describe-thrown.js';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { definedOptions } from '../errors/options-object.js';
import { storableText } from '../errors/storable-text.js';
import { uuidv7 } from '../ids/uuidv7.js';
import type { Logger } from '../logging/logger.js';
import {
  assertRetryDelays,
  DEFAULT_EXPONENTIAL_BACKOFF,
  type ExponentialBackoffOptions,
  exponentialDelays,
} from '../resilience/backoff.js';
import { TimeoutError } from '../resilience/errors.js';
import type { EventStoreBackend, ParkedEvent } from './backend.js';
import { EventStoreClosedError } from './errors.js';
import { nameProblem } from './event-encoding.js';
import { type HandlerFrame, insideOwnHandler, subscriptionHandlerFrame } from './handler-frame.js';
import type { OwnAppends } from './own-appends.js';
import { isCount } from './prepare-append.js';
import { assertSubscriptionOptions } from './subscription-options.js';
import type { RecordedEvent } from './types.js';

/** Options of {@link EventStore.subscribe}. */
export interface EventSubscriptionOptions {
  /** Identifies the subscription and its durable checkpoint. */
  readonly name: string;
  /** Where to begin when there is no checkpoint yet. @default 'start' */
  readonly from?: 'start' | 'end';
  /** Only events of these types reach the handler. */
  readonly types?: readonly string[];
  /** Events read per round trip. @default 100 */
  readonly batchSize?: number;
  /** Tries per event, the first included, before the event is parked. @default 5 */
  readonly maxAttempts?: number;
  /** Wait between tries. @default { initialDelayMs: 100, factor: 2, maxDelayMs: 5000 } */
  readonly backoff?: ExponentialBackoffOptions;
  /**
   * Safety net: read again after this long without a wake-up. Wake-ups come from appends in this
   * process and, on PostgreSQL, from LISTEN/NOTIFY. @default 2000
   */
  readonly idlePollMs?: number;
  /**
   * One instance at a time runs this name, across processes sharing the store: it holds a lease in
   * the store, renewed every third of `leaseMs`; the others stand by and take over from its
   * checkpoint when it closes, or `leaseMs` after it died (at once when it was a process of this
   * host that has exited). `false`: every instance runs the name from the one shared checkpoint, so
   * an event reaches one instance or several, never none, and order across them is lost. @default true
   */
  readonly exclusive?: boolean;
  /** Lifetime of the lease without renewal, in ms (`exclusive` only). @default 10000 */
  readonly leaseMs?: number;
  /**
   * Time limit of one handler attempt, in ms. Past it the handler's `signal` aborts (its reason a
   * `TimeoutError`, code `TIMEOUT`), the attempt counts as failed (retried with backoff, then the
   * event is parked) and the subscription goes on without waiting for it. A handler that ignores
   * its signal may therefore still run while the next attempt, or later events, are handled: only a
   * handler that stops on its signal keeps the one-at-a-time, in-order guarantee. @default 30000
   */
  readonly handlerTimeoutMs?: number;
}

export const DEFAULT_EVENT_SUBSCRIPTION_OPTIONS = Object.freeze({
  from: 'start' as const,
  batchSize: 100,
  maxAttempts: 5,
  backoff: Object.freeze({ ...DEFAULT_EXPONENTIAL_BACKOFF, initialDelayMs: 100, maxDelayMs: 5000 }),
  idlePollMs: 2000,
  exclusive: true,
  leaseMs: 10_000,
  handlerTimeoutMs: 30_000,
});

/** How far a subscription is behind. */
export interface SubscriptionLag {
  /** Position of the last event handled (or passed over). */
  readonly position: bigint;
  /** Final events after that position. */
  readonly behind: number;
}

/** What a subscription hands its handler beside the event. */
export interface EventHandlerContext {
  /**
   * Aborts when the attempt runs past `handlerTimeoutMs` (reason: a `TimeoutError`). Pass it to
   * what the handler awaits (queries, HTTP calls) and stop when it aborts.
   */
  readonly signal: AbortSignal;
  /** 1 for the first try of an event, then 2, 3… (a replay of a parked event starts at 1). */
  readonly attempt: number;
}

/** Handles one event; may ignore its second argument. Throwing anything fails the attempt. */
export type EventHandler = (event: RecordedEvent, context: EventHandlerContext) => Promise<void> | void;

const HELD_POLL_MS = [5, 10, 20, 50, 100];

/**
 * A named catch-up subscription: reads every event after its checkpoint in global order, hands each
 * to the handler (at least once), stores the checkpoint after each batch, then waits for new events.
 * A handler that keeps failing parks its event (listed, replayable) and the subscription goes on.
 */
export class EventSubscription {
  readonly name: string;
  readonly #backend: EventStoreBackend;
  readonly #storeRefusing: () => boolean;
  readonly #handler: EventHandler;
  readonly #logger: Logger;
  readonly #types: ReadonlySet<string> | undefined;
  readonly #options: Required<Omit<EventSubscriptionOptions, 'types' | 'name'>>;
  readonly #delays: number[];
  #position = 0n;
  /** `#position` is where this instance stands (set once its loop found where to start). */
  #started = false;
  /** The position advanced past what the stored checkpoint says. */
  #dirty = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #woken = false;
  #unwatch: (() => void) | undefined;
  /** Reads the loop has begun, numbered from 1: caughtUp() waits for one begun after its call. */
  #reads = 0;
  #idleWaiters: IdleWaiter[] = [];
  /** Identifies this instance in the lease: host, process (see {@link deadOnThisHost}) and a unique id. */
  readonly #owner = leaseOwner(process.pid, uuidv7());
  /** Holds the lease (exclusive) or runs regardless (not exclusive). */
  #leading = false;
  /** Local time by which the lease has surely expired unless renewed: measured from before each claim. */
  #leaseUntil = 0;
  #renewTimer: NodeJS.Timeout | undefined;
  /** Bumped per scheduled renewal, so that a renewal still in flight from an earlier lease schedules nothing. */
  #renewals = 0;
  #standingBy = false;
  /** A lease of this name was given up since this standby last claimed: claim again without waiting. */
  #leaseFreed = false;
  /** Where replays of parked events wait for the active loop (see {@link replayParked}). */
  readonly #replayQueue: string;
  /** A replay was asked of this instance: look at the queue before the next read. */
  #replayAsked = true;
  /** When the loop next looks for replays asked from another instance. */
  #nextReplayLook = 0;
  /** Resolves when the loop has stopped. */
  readonly done: Promise<void>;
  /** What handlers of this subscription run in (see {@link insideOwnHandler}). */
  readonly #frame: HandlerFrame;
  /** Ends the attempt in progress, for close() called by its handler. */
  #abandonAttempt: (() => void) | undefined;
  /** Aborted by close(): ends a backend's wait (PostgreSQL: held-back positions) at once. */
  readonly #stopping = new AbortController();
  /**
   * For `from: 'end'`: the end as it was when subscribe() returned, looked up at once (memory and
   * SQLite read it within the call; PostgreSQL takes its snapshot then), where a subscription without
   * a checkpoint starts. Looked up once the loop ran (after the checkpoint's read, or the lease), it
   * took an event appended right after subscribe() as existing, and the handler never got it.
   */
  #subscribedEnd: Promise<bigint> | undefined;

  constructor(
    backend: EventStoreBackend,
    options: EventSubscriptionOptions,
    handler: EventHandler,
    logger: Logger,
    /** Whether its store refuses calls (closed): then lag(), parked() and replayParked() reject. */
    storeRefusing: () => boolean = () => false,
    /** The appends made through its store: a `from: 'end'` start is fixed below those made meanwhile. */
    ownAppends?: OwnAppends,
  ) {
    this.#storeRefusing = storeRefusing;
    assertSubscriptionOptions(options, handler);
    // No NUL nor lone surrogate either, as for stream ids: PostgreSQL refuses the one and would turn
    // the other into U+FFFD, so that two names would share one checkpoint and lease.
    const nameIs = nameProblem(options.name, 200);
    if (nameIs !== undefined) {
      throw new InvalidOptionsError(
        `a subscription needs a name of 1 to 200 characters, without NUL or lone surrogates: the name ${nameIs}`,
      );
    }
    this.name = options.name;
    this.#replayQueue = replayQueueName(options.name);
    this.#backend = backend;
    this.#frame = { backend, subscription: this };
    this.#handler = handler;
    this.#logger = logger;
    this.#types = options.types === undefined ? undefined : new Set(options.types);
    // An option set to `undefined` is left out: spread over the defaults it would replace one (a
    // `batchSize: undefined` spun the event loop for ever).
    const { name: _name, types: _types, ...rest } = definedOptions(options);
    this.#options = { ...DEFAULT_EVENT_SUBSCRIPTION_OPTIONS, ...rest };
    this.#delays = exponentialDelays(
      this.#options.backoff,
      this.#options.maxAttempts - 1,
      DEFAULT_EVENT_SUBSCRIPTION_OPTIONS.backoff,
    );
    assertRetryDelays(this.#delays);
    if (this.#options.from === 'end') {
      const meanwhile = ownAppends?.record();
      let end: Promise<bigint>;
      try {
        end = backend.horizon({ signal: this.#stopping.signal }).then(
          async (horizon) => {
            // Below the events of the appends made through the store since subscribe(): PostgreSQL
            // takes its snapshot a round trip later, when one of them may have committed.
            const lowest = await meanwhile?.lowest();
            return lowest !== undefined && lowest - 1n < horizon ? lowest - 1n : horizon;
          },
          (error: unknown) => {
            meanwhile?.stop();
            throw error;
          },
        );
      } catch (error) {
        meanwhile?.stop();
        end = Promise.reject(error);
      }
      // Read by the loop (tried again there when it failed) and by lag(): never left unhandled.
      end.catch(() => {});
      this.#subscribedEnd = end;
    }
    this.done = this.#run();
  }

  /** Position of the last event handled, parked or passed over. */
  get position(): bigint {
    return this.#position;
  }

  /** Whether this instance runs the subscription now; a standby of an exclusive one does not. */
  get active(): boolean {
    return this.#holds();
  }

  async #run(): Promise<void> {
    this.#unwatch = this.#backend.watch(() => this.#wakeUp());
    // A clean close gives the lease up: a standby hears of it and takes over at once, not on its poll.
    const unwatchLeases = this.#options.exclusive
      ? this.#backend.watchLeases?.((name) => {
          if (name !== this.name) return;
          this.#leaseFreed = true;
          if (this.#standingBy) this.#wake?.();
        })
      : undefined;
    try {
      while (!this.#closed) {
        if (this.#options.exclusive) await this.#acquire();
        else this.#leading = true;
        await this.#process();
      }
    } catch (error) {
      if (!(error instanceof SubscriptionClosed)) throw error;
    } finally {
      this.#unwatch?.();
      unwatchLeases?.();
      clearTimeout(this.#renewTimer);
      if (this.#holds()) {
        // What was handled before close keeps its checkpoint; an event interrupted by close is not past it.
        await this.#saveCheckpoint().catch(() => {});
        if (this.#options.exclusive) {
          await this.#backend.releaseSubscription(this.name, this.#owner).catch(() => {});
        }
      }
      this.#leading = false;
      // Closed before they were caught up: said so, not resolved as if they were.
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const waiter of waiters) waiter.reject(this.#notCaughtUp());
    }
  }

  /** Handles events from the stored checkpoint on, until closed or, when exclusive, the lease is lost. */
  async #process(): Promise<void> {
    this.#dirty = false;
    const saved = await this.#retrying('load its checkpoint', () => this.#backend.loadCheckpoint(this.name));
    if (saved !== undefined) this.#position = saved;
    else if (this.#options.from === 'end') {
      this.#position = await this.#startingEnd();
      this.#dirty = true;
      await this.#saveCheckpoint();
    } else this.#position = 0n;
    this.#started = true;
    let heldRounds = 0;
    while (!this.#closed && this.#holds()) {
      // Replays run here, between batches, so that the handler never runs twice at once.
      if (this.#replayAsked || Date.now() >= this.#nextReplayLook) await this.#replayRequested();
      if (this.#closed || !this.#holds()) break;
      const read = ++this.#reads;
      this.#woken = false;
      const { events, held } = await this.#retrying('read events', () =>
        this.#backend.readAfter(this.#position, this.#options.batchSize, undefined, this.#stopping.signal),
      );
      for (const event of events) {
        if (this.#closed || !this.#holds()) break;
        // Read before the handler, which could write to the event it is handed.
        const position = event.position;
        if (this.#types === undefined || this.#types.has(event.type)) await this.#handle(event, position);
        this.#position = position;
        this.#dirty = true;
      }
      // A lost lease leaves the checkpoint to the instance that took over.
      if (!this.#holds()) break;
      await this.#saveCheckpoint();
      if (events.length === this.#options.batchSize) continue;
      if (held) {
        // A transaction that may still add earlier positions is open: look again shortly.
        await this.#sleep(HELD_POLL_MS[Math.min(heldRounds++, HELD_POLL_MS.length - 1)]!);
        continue;
      }
      heldRounds = 0;
      this.#markIdle(read);
      if (!this.#woken) await this.#sleep(this.#options.idlePollMs);
    }
    if (!this.#closed && !this.#holds()) {
      this.#logger.warn(
        `subscription "${this.name}" lost its lease (another instance may run it now); standing by`,
      );
    }
  }

  /**
   * Where a `from: 'end'` subscription without a checkpoint starts. Closed while it waits for the end
   * to be final (PostgreSQL: transactions open then), it takes the last position final now instead,
   * and stores that: cut short without a checkpoint, its next start took the end as it was then and
   * skipped what was appended in between. (It may then hand out again events committed just before
   * it started; never miss one.)
   */
  async #startingEnd(): Promise<bigint> {
    // The end as it was at subscribe(); looked up again only if that lookup failed.
    let subscribedEnd = this.#subscribedEnd;
    try {
      return await this.#retrying('find the end', () => {
        const end = subscribedEnd ?? this.#backend.horizon({ signal: this.#stopping.signal });
        subscribedEnd = undefined;
        return end;
      });
    } catch (error) {
      if (!(error instanceof SubscriptionClosed)) throw error;
      try {
        return await this.#backend.horizon({ wait: false });
      } catch (cause) {
        this.#logger.warn(
          `subscription "${this.name}" closed before it stored its starting position, and could not find one: its next start begins at the end as it is then`,
          { error: describeThrown(cause).message },
        );
        throw error;
      }
    }
  }

  #holds(): boolean {
    if (!this.#leading) return false;
    if (!this.#options.exclusive) return true;
    if (Date.now() < this.#leaseUntil) return true;
    // Not renewed in time (the store unreachable, or the process paused): another may have it now.
    this.#leading = false;
    return false;
  }

  /** Takes the lease, trying again every fifth of `leaseMs` (at most every second) while another instance holds it. */
  async #acquire(): Promise<void> {
    const leaseMs = this.#options.leaseMs;
    for (;;) {
      if (this.#closed) throw new SubscriptionClosed();
      const started = Date.now();
      this.#leaseFreed = false;
      let claimed = false;
      try {
        let holder = await this.#backend.claimSubscription(this.name, this.#owner, leaseMs);
        if (holder !== this.#owner && deadOnThisHost(holder)) {
          // Its process died without giving the lease up: no need to wait for the lease to run out.
          holder = await this.#backend.claimSubscription(this.name, this.#owner, leaseMs, holder);
          if (holder === this.#owner) {
            this.#logger.info(`subscription "${this.name}" took over the lease of a process that has exited`);
          }
        }
        claimed = holder === this.#owner;
      } catch (error) {
        this.#logger.warn(`subscription "${this.name}" could not claim its lease; trying again`, {
          error: describeThrown(error).message,
        });
      }
      if (claimed) {
        if (this.#standingBy)
          this.#logger.info(`subscription "${this.name}" took over from another instance`);
        this.#standingBy = false;
        this.#leading = true;
        this.#leaseUntil = started + leaseMs;
        this.#scheduleRenewal();
        return;
      }
      if (!this.#standingBy) {
        this.#standingBy = true;
        this.#logger.info(`subscription "${this.name}" runs in another instance; standing by`);
      }
      // A standby's caughtUp() and lag() follow the stored checkpoint instead (see #checkpointReaches).
      await this.#standBy(Math.min(1000, leaseMs / 5));
    }
  }

  #scheduleRenewal(): void {
    const leaseMs = this.#options.leaseMs;
    const renewal = ++this.#renewals;
    clearTimeout(this.#renewTimer);
    this.#renewTimer = setTimeout(async () => {
      if (this.#closed || !this.#leading || renewal !== this.#renewals) return;
      const started = Date.now();
      try {
        const held = (await this.#backend.claimSubscription(this.name, this.#owner, leaseMs)) === this.#owner;
        if (renewal !== this.#renewals) return; // the lease was given up and claimed anew meanwhile
        if (held) this.#leaseUntil = started + leaseMs;
        else {
          this.#leading = false;
          this.#wakeUp();
          return;
        }
      } catch (error) {
        // Keep trying while the lease lasts; past it, #holds() gives the subscription up.
        this.#logger.warn(`subscription "${this.name}" could not renew its lease`, {
          error: describeThrown(error).message,
        });
      }
      if (!this.#closed && this.#leading && renewal === this.#renewals) this.#scheduleRenewal();
    }, leaseMs / 3);
    this.#renewTimer.unref();
  }

  async #saveCheckpoint(): Promise<void> {
    if (!this.#dirty) return;
    const position = this.#position;
    await this.#retrying('save its checkpoint', () => this.#backend.saveCheckpoint(this.name, position));
    if (this.#position === position) this.#dirty = false;
  }

  /**
   * One handler attempt, limited to `handlerTimeoutMs`. A handler still running past it is left to
   * finish on its own (its signal aborted): waiting for one that ignores the signal would stall the
   * subscription for good.
   */
  async #attempt(event: RecordedEvent, attempt: number): Promise<void> {
    // What the messages below name, read before the handler could write to the event.
    const { id, position } = event;
    const correlationId =
      typeof event.metadata.correlationId === 'string' ? event.metadata.correlationId : event.id;
    const limit = this.#options.handlerTimeoutMs;
    const controller = new AbortController();
    const context: EventHandlerContext = { signal: controller.signal, attempt };
    // close() called by this very handler cannot wait for it (it would wait for itself): it ends
    // the attempt there, the event not past the checkpoint.
    const closedFromInside = new Promise<never>((_, reject) => {
      this.#abandonAttempt = () => reject(new SubscriptionClosed());
    });
    const running = runWithContext({ correlationId, messageId: event.id }, async () =>
      subscriptionHandlerFrame.run(this.#frame, () => this.#handler(event, context)),
    );
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new TimeoutError(
          limit,
          `subscription "${this.name}" handler for event ${id} (position ${position})`,
        );
        controller.abort(error);
        reject(error);
      }, limit);
    });
    try {
      await Promise.race([running, expired, closedFromInside]);
    } catch (error) {
      if (error instanceof SubscriptionClosed) throw error;
      if (controller.signal.aborted) {
        const started = Date.now() - limit;
        running.then(
          () => this.#logger.warn(this.#lateMessage(id, started, 'succeeded')),
          () => this.#logger.warn(this.#lateMessage(id, started, 'failed')),
        );
      }
      throw error;
    } finally {
      clearTimeout(timer);
      this.#abandonAttempt = undefined;
    }
  }

  #lateMessage(id: string, started: number, outcome: string): string {
    return `subscription "${this.name}": an attempt at event ${id} that ran past handlerTimeoutMs ${outcome} ${Date.now() - started} ms after it began; it was not waited for`;
  }

  async #handle(read: RecordedEvent, position: bigint): Promise<void> {
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.#delays.length + 1; attempt++) {
      try {
        // A handler may write to the event it is handed (readonly to TypeScript, not to JavaScript):
        // a retry gets the event as stored, read again.
        await this.#attempt(attempt === 1 ? read : await this.#asStored(read, position), attempt);
        return;
      } catch (error) {
        if (error instanceof SubscriptionClosed) throw error;
        lastError = error;
        if (attempt <= this.#delays.length) await this.#sleep(this.#delays[attempt - 1]!, ONLY_CLOSE);
        if (this.#closed) throw new SubscriptionClosed();
      }
    }
    const { message, stack } = describeThrown(lastError);
    // Parked as stored, not as the last attempt's handler may have left it.
    const event = await this.#asStored(read, position);
    this.#logger.warn(
      `subscription "${this.name}" parked event ${event.id} (${event.type}, position ${event.position}) after ${this.#delays.length + 1} attempts: ${message}`,
    );
    const parked: ParkedEvent = {
      subscription: this.name,
      event,
      // A NUL in the handler's error would keep PostgreSQL from parking the event, for ever.
      error: storableText(stack || message),
      attempts: this.#delays.length + 1,
      parkedAt: new Date().toISOString(),
    };
    await this.#retrying('park an event', () => this.#backend.park(parked));
  }

  /**
   * The event at `position` (taken before any handler saw `read`) as the store holds it, read again;
   * `read` itself if the store does not answer with it.
   */
  async #asStored(read: RecordedEvent, position: bigint): Promise<RecordedEvent> {
    const { events } = await this.#retrying('read an event again', () =>
      this.#backend.readAfter(position - 1n, 1, undefined, this.#stopping.signal),
    );
    const again = events[0];
    return again !== undefined && again.position === position ? again : read;
  }

  /** Runs a storage operation until it succeeds (the database may be restarting) or the subscription closes. */
  async #retrying<T>(what: string, operation: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await operation();
      } catch (error) {
        if (this.#closed) throw new SubscriptionClosed();
        const delay = Math.min(5000, 100 * 2 ** attempt);
        this.#logger.warn(`subscription "${this.name}" could not ${what}; retrying in ${delay} ms`, {
          error: describeThrown(error).message,
        });
        await this.#sleep(delay, ONLY_CLOSE);
      }
    }
  }

  #wakeUp(): void {
    this.#woken = true;
    this.#wake?.();
  }

  /** Sleeps until `ms` pass, close, or a wake-up `endsOn()` says ends it (every one by default). */
  #sleep(ms: number, endsOn: () => boolean = ANY_WAKE_UP): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      this.#wake = () => {
        if (this.#closed || endsOn()) done();
      };
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    }).finally(() => {
      this.#wake = undefined;
    });
  }

  /**
   * A standby's wait before it claims the lease again: `ms`, or until the lease of this name is given
   * up (a clean close, told by the backend's `watchLeases`; a backend without it is only polled), or
   * close. Appends do not end it: a standby has nothing to read.
   */
  #standBy(ms: number): Promise<void> {
    if (this.#leaseFreed) return Promise.resolve();
    return this.#sleep(ms, () => this.#leaseFreed);
  }

  /** Read number `read` found nothing more: it answers the caughtUp() calls made before it began. */
  #markIdle(read: number): void {
    const ready = this.#idleWaiters.filter((w) => w.after < read);
    this.#idleWaiters = this.#idleWaiters.filter((w) => w.after >= read);
    for (const waiter of ready) waiter.resolve();
  }

  /**
   * Resolves once the subscription has handled everything that was final when this was called,
   * whichever instance runs it: on the active one, once its loop completed a read, begun after the
   * call, that found nothing more; on a standby (exclusive), once the checkpoint stored by the
   * active instance has passed every event that was final at the call. Rejects with
   * `EventStoreClosedError` (`EVENT_STORE_CLOSED`) when the subscription closes before that, and at
   * once when it is closed: a readiness check must not take a stopped subscription for a caught-up one.
   * For readiness checks, tests and start-up.
   */
  caughtUp(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#notCaughtUp());
    // A read already under way may have begun before what the caller appended was final.
    const after = this.#reads;
    this.#wakeUp();
    let waiter: IdleWaiter | undefined;
    const own = new Promise<void>((resolve, reject) => {
      waiter = { after, resolve, reject };
      this.#idleWaiters.push(waiter);
    });
    if (!this.#options.exclusive) return own;
    let settled = false;
    const stored = this.#checkpointReaches(() => settled);
    return Promise.race([own, stored]).finally(() => {
      settled = true;
      // A standby asked often (a readiness probe) must not pile up waiters its loop never serves.
      this.#idleWaiters = this.#idleWaiters.filter((w) => w !== waiter);
    });
  }

  /**
   * Polls the stored checkpoint until no event final at the call lies beyond it, while this instance
   * is not the active one (the active one's own loop answers then). An unreachable store is asked
   * again; rejects only when the subscription closes first.
   */
  async #checkpointReaches(settled: () => boolean): Promise<void> {
    let target: bigint | undefined;
    for (let round = 0; !this.#closed && !settled(); round++) {
      if (!this.#holds()) {
        try {
          target ??= await this.#backend.horizon({ signal: this.#stopping.signal });
          const checkpoint = (await this.#backend.loadCheckpoint(this.name)) ?? 0n;
          if (checkpoint >= target) return;
          // Positions are not contiguous (PostgreSQL skips some): look for an event up to the target.
          const { events } = await this.#backend.readAfter(checkpoint, 1, undefined, this.#stopping.signal);
          const next = events[0];
          if (next === undefined || next.position > target) return;
        } catch {
          // The store is unreachable for now: ask again.
        }
      }
      await this.#pause(Math.min(250, 10 * 2 ** round));
    }
    if (this.#closed) throw this.#notCaughtUp();
  }

  /**
   * Waits `ms` without keeping the process alive, or less: it ends when the subscription closes, so
   * that a call polling the store (a standby's caughtUp, replayParked) settles at the close, not on a
   * timer a process may exit before.
   */
  #pause(ms: number): Promise<void> {
    const signal = this.#stopping.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      signal.addEventListener('abort', done, { once: true });
    });
  }

  #notCaughtUp(): EventStoreClosedError {
    return new EventStoreClosedError(`subscription "${this.name}" is closed: it did not catch up`);
  }

  /**
   * Where the subscription stands and the final events after it, whichever instance is asked: the
   * active instance answers from its own position, a standby from the checkpoint stored by the
   * active one (`0n` before any was stored).
   */
  async lag(): Promise<SubscriptionLag> {
    this.#assertStoreOpen();
    const position = this.#holds() && this.#started ? this.#position : await this.#storedPosition();
    return { position, behind: await this.#backend.countAfter(position) };
  }

  /**
   * The checkpoint stored; before there is one, where the subscription starts: the start, or the end
   * as it is now for `from: 'end'` (the events before it are never handled, so never behind).
   */
  async #storedPosition(): Promise<bigint> {
    const saved = await this.#backend.loadCheckpoint(this.name);
    if (saved !== undefined) return saved;
    if (this.#options.from !== 'end') return 0n;
    // The end it starts at, as the loop will take it: the end as it was final now (PostgreSQL: below
    // the oldest open transaction) named a position the start later passed, events appended
    // between the two never handled, yet lag() had called them behind none.
    try {
      return await (this.#subscribedEnd ?? this.#backend.horizon({ wait: false }));
    } catch {
      return this.#backend.horizon({ wait: false });
    }
  }

  /**
   * Events this subscription parked, oldest first: at most `limit`, a non-negative safe integer
   * (else `InvalidOptionsError`, `INVALID_OPTIONS`, on every backend). @default 100
   */
  async parked(limit = 100): Promise<ParkedEvent[]> {
    this.#assertStoreOpen();
    // Checked here, not by the backends: they disagreed (a raw driver error, a slice from the end).
    if (!isCount(limit)) {
      throw new InvalidOptionsError(
        `parked() takes a limit that is a non-negative safe integer, not ${describeValue(limit)}`,
      );
    }
    return this.#backend.listParked(this.name, limit);
  }

  /** After `store.close()`, every backend says so the same way. */
  #assertStoreOpen(): void {
    if (this.#storeRefusing()) throw new EventStoreClosedError();
  }

  /**
   * Hands parked events (all, or those at `positions`) to the handler once more, through the one
   * active loop: they are marked for replay in the store, and the instance running the subscription
   * (this one, or another process when this one stands by) hands them to its handler between two
   * batches, oldest first, one attempt each, never beside a live event. Each that succeeds is
   * removed from the parked list; one that fails again stays parked. Resolves, once all were tried,
   * the number that succeeded; when this instance closes first, rejects with `EventStoreClosedError`
   * (`EVENT_STORE_CLOSED`) saying how many succeeded and how many were not tried yet (those stay
   * marked and are replayed by whichever instance runs the subscription next). With
   * `exclusive: false`, like live events, a replay may reach one instance or several. `positions`,
   * when given, is an array of bigints (else `InvalidOptionsError`, `INVALID_OPTIONS`).
   */
  async replayParked(positions?: readonly bigint[]): Promise<number> {
    this.#assertStoreOpen();
    assertPositions(positions);
    const wanted = positions === undefined ? undefined : new Set(positions);
    const requested = new Set<bigint>();
    for (const parked of await this.#backend.listParked(this.name, Number.MAX_SAFE_INTEGER)) {
      if (wanted !== undefined && !wanted.has(parked.event.position)) continue;
      await this.#backend.park({ ...parked, subscription: this.#replayQueue });
      requested.add(parked.event.position);
    }
    if (requested.size === 0) return 0;
    this.#replayAsked = true;
    this.#wakeUp();
    let pending = requested.size;
    for (let round = 0; pending > 0 && !this.#closed; round++) {
      await this.#pause(Math.min(250, 5 * 2 ** round));
      if (this.#closed) break;
      const queued = await this.#backend.listParked(this.#replayQueue, Number.MAX_SAFE_INTEGER);
      pending = queued.filter((q) => requested.has(q.event.position)).length;
    }
    // Closed meanwhile: the replay in flight ends (or is given up) before the count, so that it is
    // counted as it ended. Not from the subscription's own handler, which the loop waits for.
    if (this.#closed && !insideOwnHandler(this)) await this.done.catch(() => {});
    let queued: Set<bigint>;
    let still: Set<bigint>;
    try {
      queued = new Set(
        (await this.#backend.listParked(this.#replayQueue, Number.MAX_SAFE_INTEGER)).map(
          (q) => q.event.position,
        ),
      );
      still = new Set(
        (await this.#backend.listParked(this.name, Number.MAX_SAFE_INTEGER)).map((p) => p.event.position),
      );
    } catch (error) {
      if (!this.#closed) throw error;
      // The store closed with the subscription: what became of each is in the store, not known here.
      throw new EventStoreClosedError(
        `subscription "${this.name}" closed before it replayed every parked event asked for, and its store closed too: how many of the ${requested.size} succeeded is not known; those not yet tried stay marked and are replayed when the subscription runs again`,
      );
    }
    const succeeded = [...requested].filter((position) => !queued.has(position) && !still.has(position));
    const untried = [...requested].filter((position) => queued.has(position)).length;
    if (untried > 0) {
      // Closed first: resolving would say every one was tried. They stay marked in the store, and the
      // active instance replays them when it runs (this one, started again, or another).
      throw new EventStoreClosedError(
        `subscription "${this.name}" closed before it replayed every parked event asked for: ${succeeded.length} of ${requested.size} succeeded, ${untried} not yet tried stay marked and are replayed when the subscription runs again`,
      );
    }
    return succeeded.length;
  }

  /** Replays what {@link replayParked} marked, in position order, while this instance holds the subscription. */
  async #replayRequested(): Promise<void> {
    this.#replayAsked = false;
    this.#nextReplayLook = Date.now() + this.#options.idlePollMs;
    for (;;) {
      const limit = this.#options.batchSize;
      const requests = await this.#retrying('list replays', () =>
        this.#backend.listParked(this.#replayQueue, limit),
      );
      for (const request of requests) {
        if (this.#closed || !this.#holds()) return;
        const position = request.event.position;
        let succeeded = false;
        try {
          await this.#attempt(request.event, 1);
          succeeded = true;
        } catch (error) {
          if (error instanceof SubscriptionClosed) throw error;
          this.#logger.warn(
            `subscription "${this.name}": replay of parked event ${request.event.id} failed again: ${describeThrown(error).message}`,
          );
        }
        if (succeeded) {
          await this.#retrying('unpark a replayed event', () => this.#backend.unpark(this.name, position));
        }
        await this.#retrying('end a replay', () => this.#backend.unpark(this.#replayQueue, position));
      }
      if (requests.length < limit) return;
    }
  }

  /**
   * Stops after the event being handled, keeping the checkpoint of what was handled. Called by the
   * subscription's own handler (directly or through `store.close()`), it does not wait for that
   * handler, which would be waiting for it: the subscription stops at once, and that event, not
   * past the checkpoint, is handled again when the subscription next runs.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stopping.abort(new EventStoreClosedError());
    this.#wake?.();
    if (insideOwnHandler(this)) this.#abandonAttempt?.();
    await this.done.catch(() => {});
  }
}

/** Wake-ups (appends) end the sleep: the idle poll. */
const ANY_WAKE_UP = (): boolean => true;
/** Only close ends the sleep: a retry's backoff. */
const ONLY_CLOSE = (): boolean => false;

/**
 * The parked-events list, in the same store, where replays wait for the active instance: a name no
 * subscription can have (a control character, and longer than the 200 characters a name may have).
 */
function replayQueueName(name: string): string {
  return `${name}\u001freplay`.padEnd(201, '\u001f');
}

/** `replayParked`'s positions: absent or an array of bigints (a number never matches a position). */
function assertPositions(positions: unknown): void {
  if (positions === undefined) return;
  if (!Array.isArray(positions)) {
    throw new InvalidOptionsError(
      `replayParked() takes an array of positions (bigints) or nothing, not ${describeValue(positions)}`,
    );
  }
  const bad = positions.findIndex((position) => typeof position !== 'bigint');
  if (bad !== -1) {
    throw new InvalidOptionsError(
      `replayParked() takes positions that are bigints, not ${describeValue(positions[bad])}`,
    );
  }
}

/** A caughtUp() call waiting for a read, begun after `after`, that finds nothing more. */
interface IdleWaiter {
  readonly after: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** Unwinds the loop when the subscription closes mid-operation; never escapes the class. */
class SubscriptionClosed extends Error {}

/**
 * Where process ids mean the same process: the host name and, on Linux, the pid namespace (two
 * containers may share a host name, never a pid namespace).
 */
const PROCESS_SPACE = `${hostname()}~${pidNamespace()}`;

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid').replace(/\D/g, '');
  } catch {
    return '';
  }
}

/** A lease owner: `<host>~<pid namespace>/<pid>/<id>`. */
export function leaseOwner(pid: number, id: string): string {
  return `${PROCESS_SPACE}/${pid}/${id}`;
}

/**
 * Whether a lease owner is a process of this host and pid namespace that no longer runs. Only a
 * process that surely does not exist counts: another host's, or one we may not signal, is alive.
 */
export function deadOnThisHost(owner: string): boolean {
  const [space, pidText] = owner.split('/');
  const pid = Number(pidText);
  if (space !== PROCESS_SPACE || !Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
