import { setMaxListeners } from 'node:events';
import { currentContext, type FerryContext, runWithContext } from '../context/context.js';
import { isBackendOutage, isStorageFull } from '../errors/backend-faults.js';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { assertFunctionList, checkOptions, knownOptions } from '../errors/options-object.js';
import type { Inbox } from '../inbox/inbox.js';
import { type Logger, stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import {
  assertRetryDelays,
  DEFAULT_EXPONENTIAL_BACKOFF,
  type ExponentialBackoffOptions,
  exponentialBackoffOf,
  exponentialDelays,
} from '../resilience/backoff.js';
import { type Clock, systemClock } from '../time/clock.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import type { StandardSchemaV1 } from '../validation/standard-schema.js';
import type { AmqpUrlOptions } from './amqp-url-options.js';
import { assertCloseTimeout } from './close-timeout.js';
import {
  type Contracts,
  type DataIn,
  type DataOut,
  type MatchingTypes,
  type NoContracts,
  type TypeOf,
  validate,
  validateDeliveredForm,
} from './contracts.js';
import { type Envelope, JSON_CONTENT_TYPE, type Message, newMessageId, nowIso } from './envelope.js';
import { assertEnvelopeLimits, isPlainHeaders } from './envelope-limits.js';
import { BrokerConnectionError, BusClosedError, describeThrown, MessageValidationError } from './errors.js';
import { expiryOf, isExpired } from './expiry.js';
import {
  type Decide,
  HandlerRun,
  HandlerTimeouts,
  isHandlerTimeoutError,
  neverAbortedSignal,
} from './handler-timeouts.js';
import { InFlight } from './in-flight.js';
import { KeepAlive } from './keep-alive.js';
import type { MemoryBrokerOptions } from './memory/memory-broker.js';
import { composeMiddleware, type HandlerMiddleware, idempotent, type MessageHandler } from './middleware.js';
import { assertGroup, assertMessageType, assertPattern } from './topic.js';
import type { HandlerUnitOfWork } from './transactional.js';
import {
  ACK,
  type DeadLetter,
  type DeliveryHandler,
  type DeliveryResult,
  type Outcome,
  type SubscriptionSpec,
  type Transport,
  type TransportSubscription,
  whenDecided,
} from './transport.js';
import { UnlimitedRuns } from './unlimited-runs.js';
import { untilAborted } from './until-aborted.js';
import { assertDataEncodable } from './wire.js';

/** Defaults applied to every subscription of a bus unless the subscription overrides them. */
export interface SubscriptionDefaults {
  /** Deliveries handled at once per subscriber. @default 10 */
  readonly concurrency?: number;
  /** Deliveries in all, the first included, before a failing message is dead-lettered. @default 5 */
  readonly maxAttempts?: number;
  /** Delay between attempts, applied by the broker (the consumer does not sleep). @default 1s, 2s, 4s… capped at 60s */
  readonly backoff?: ExponentialBackoffOptions;
  /**
   * Longest run of one handler attempt, in ms; `0` for no limit. Past it the handler's `signal`
   * aborts, the attempt fails (retried, then dead-lettered with reason kind `timeout`) and its
   * concurrency slot is freed, whether or not the handler heeds the signal. The ambient context's
   * `deadline` is set too, so outgoing Ferry HTTP calls inside the handler stop in time.
   * @default 30000
   */
  readonly handlerTimeoutMs?: number;
}

export const DEFAULT_SUBSCRIPTION_OPTIONS = Object.freeze({
  concurrency: 10,
  maxAttempts: 5,
  backoff: DEFAULT_EXPONENTIAL_BACKOFF,
  handlerTimeoutMs: 30_000,
});

/**
 * The keys of {@link SubscriptionDefaults} and of `subscribe`'s options: any other is a misspelt or
 * misplaced option (`maxAttempt`, `timeoutMs`), refused rather than dropped for its default.
 */
const SUBSCRIPTION_DEFAULT_KEYS = [
  'concurrency',
  'maxAttempts',
  'backoff',
  'handlerTimeoutMs',
] as const satisfies readonly (keyof SubscriptionDefaults)[];
const SUBSCRIBE_KEYS = [
  ...SUBSCRIPTION_DEFAULT_KEYS,
  'group',
  'middleware',
  'onExpired',
  'unitOfWork',
] as const satisfies readonly (keyof TransactionalSubscribeOptions<unknown>)[];

/** What a handler gets besides its message. */
export interface HandlerContext {
  /**
   * Aborted when the attempt runs past `handlerTimeoutMs` (reason: a `HandlerTimeoutError`), when
   * the subscription's inbox claim on the message is lost to another delivery (a `ClaimLostError`),
   * or when a close (`sub.close()`, `bus.close()`) gives up on the handler still running after
   * `closeTimeoutMs` (a `BusClosedError`: its message goes back to be handled again).
   */
  readonly signal: AbortSignal;
}

/** Reads the signal of the run the caller is in, when the handler asks for it. */
const HANDLER_CONTEXT: HandlerContext = Object.freeze({
  get signal(): AbortSignal {
    return currentContext()?.signal ?? neverAbortedSignal();
  },
});

/** Options of {@link createBus}. Give a `url` or a `transport`. */
export interface BusOptions<C extends Contracts = NoContracts> {
  /** Selects the transport: `memory://` (embedded) or `amqp://user:pass@host:5672/vhost`. */
  readonly url?: string;
  /** A transport instance, instead of a URL. */
  readonly transport?: Transport;
  /** Name of this service: the `source` of what it publishes and its default group. */
  readonly service: string;
  /** Schemas by message type: typed `data`, validated at publish and at consume. */
  readonly contracts?: C;
  /** Makes every subscription an idempotent consumer backed by this inbox. */
  readonly inbox?: Inbox;
  /** Handler middleware applied to every subscription, first = outermost. */
  readonly middleware?: readonly HandlerMiddleware[];
  readonly subscriptionDefaults?: SubscriptionDefaults;
  /**
   * Longest wait of `close` in all: for handlers in flight, unconfirmed publishes and the broker's
   * replies (a broker that stops answering cannot hold it longer). A finite number of ms from 0 to
   * 2^31-1, else `INVALID_OPTIONS`. @default 10000
   */
  readonly closeTimeoutMs?: number;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
  /** Options of the RabbitMQ transport, when `url` selects it. */
  readonly amqp?: AmqpUrlOptions;
  /**
   * Options of the in-memory broker, applied when `url` names it for the first time in this process.
   * Its `clock` defaults to the bus's `clock`.
   */
  readonly memory?: MemoryBrokerOptions;
  /**
   * Where the bus reads the time and arms its timers: handler time limits (`handlerTimeoutMs`), the
   * `expiresAt` that `ttlMs` gives and the expiry check at delivery, and each envelope's `time` and
   * id. A `VirtualClock` runs them in virtual time; pass the same clock to the broker
   * (`memory.clock`, the default when `url` creates it) so that retry delays follow it too. The
   * handler context's `deadline` stays in real time, as outgoing HTTP calls read it.
   * @default systemClock
   *
   * @example
   * const clock = new VirtualClock();
   * const bus = await createBus({ url: 'memory://test-1', service: 'orders', clock });
   * await clock.advance(30_000); // handler time limits, retries and expiries of the next 30 s, at once
   */
  readonly clock?: Clock;
}

/** Options of one `publish`. */
export interface PublishOptions {
  /** Message id; set it to make a re-publish recognisable as a duplicate. @default a new UUID */
  readonly id?: string;
  /** @default the ambient context's correlation id, else the message id */
  readonly correlationId?: string;
  /** @default the id of the message being handled, when publishing from a handler */
  readonly causationId?: string;
  /**
   * Application headers, a plain object of strings. Reserved (refused with `INVALID_OPTIONS`): `CC`
   * and `BCC`, which RabbitMQ routes by, and the names Ferry, the broker and its plugins read, in any
   * case (`x-ferry-*`, `cloudEvents:*`, `x-death`…, as the README lists them).
   */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Time from which the message must not be handled: a subscriber that gets it at that time or
   * later dead-letters it with reason kind `expired` (or drops it, see `onExpired`). Carried as the
   * CloudEvents extension attribute `expiresat` (RFC 3339). Give this or `ttlMs`. @default never
   * expires
   */
  readonly expiresAt?: Date | string;
  /** Time to live from now, in ms: sets `expiresAt`. @default never expires */
  readonly ttlMs?: number;
}

/** What `publish` reads (`work.publish` adds `key`): a misspelt `ttl` would never expire the message. */
export const PUBLISH_OPTION_NAMES = [
  'id',
  'correlationId',
  'causationId',
  'headers',
  'expiresAt',
  'ttlMs',
] as const satisfies readonly (keyof PublishOptions)[];

/** Options of one `subscribe`. */
export interface SubscribeOptions extends SubscriptionDefaults {
  /**
   * Subscribers with the same group compete for messages; each group gets every message.
   * @default the bus's service name
   */
  readonly group?: string;
  /** Handler middleware for this subscription, inside the bus's own. */
  readonly middleware?: readonly HandlerMiddleware[];
  /**
   * What to do with a message that arrives after its `expiresat`, without running the handler:
   * move it to the dead-letter queue (reason kind `expired`) or acknowledge and drop it.
   * @default 'dead-letter'
   */
  readonly onExpired?: 'dead-letter' | 'drop';
}

/** Options of a subscription whose handler runs in a unit of work (the transactional inbox). */
export interface TransactionalSubscribeOptions<W> extends SubscribeOptions {
  /**
   * Runs the handler inside a unit of work of this outbox (`createOutbox`): the inbox mark of the
   * message, the handler's state changes (`context.work.append`, `context.work.query`) and the
   * messages it publishes (`context.work.publish`) commit in one transaction. A redelivered or
   * re-sent message whose mark is committed runs nothing and is acknowledged: it has no effect at
   * all. A handler that throws rolls everything back, and the message is retried as usual.
   */
  readonly unitOfWork: HandlerUnitOfWork<W>;
}

/** A live subscription. */
export interface Subscription {
  readonly group: string;
  readonly pattern: string;
  /** Stops taking messages and waits for the handlers in flight (bounded by the bus's close timeout). */
  close(): Promise<void>;
}

/** The message a handler gets for pattern `P`: a union over the contract types `P` matches, discriminated by `type`. */
export type MessageFor<C, P extends string> = [MatchingTypes<C, P>] extends [never]
  ? Message<unknown, string>
  : { [K in MatchingTypes<C, P>]: Message<DataOut<C, K>, K> }[MatchingTypes<C, P>];

/**
 * The message bus: one API over every transport. Create it with {@link createBus}.
 *
 * @example
 * const bus = await createBus({ url: 'memory://', service: 'orders' });
 * await bus.subscribe('order.*', async (msg) => console.log(msg.type, msg.data), { group: 'audit' });
 * await bus.publish('order.created', { orderId: '42' });
 */
export class Bus<C extends Contracts = NoContracts> {
  readonly service: string;
  readonly transport: Transport;
  /**
   * The schemas by type, own keys only: a type named like an `Object.prototype` member
   * (`constructor`, `toString`) has no contract, where a lookup on the options object found one.
   */
  readonly #contracts: ReadonlyMap<string, StandardSchemaV1>;
  readonly #middleware: readonly HandlerMiddleware[];
  readonly #defaults: Required<SubscriptionDefaults>;
  readonly #closeTimeoutMs: number;
  readonly #logger: Logger;
  /** `undefined` for the system clock, whose `Date.now()` is read directly on the hot path. */
  readonly #clock: Clock | undefined;
  /**
   * Open subscriptions, each with what lets its handlers' runs go once it is closed (they keep the
   * process alive meanwhile, see {@link KeepAlive}).
   */
  readonly #subscriptions = new Set<Closing>();
  /** The subscriptions handed to callers, with what closes them (see {@link closeSubscriptions}). */
  readonly #handed = new WeakMap<Subscription, Closing>();
  /** Closes of subscriptions under way, waited for by the bus's close. */
  readonly #closingSubscriptions = new Set<Promise<void>>();
  #closing: Promise<void> | undefined;
  /** Listings and replays of dead letters under way: `close` waits for them as for handlers. */
  readonly #deadLetterCalls = new InFlight();
  /**
   * Set once `close` has stopped waiting for the handlers in flight. Until then `publish` takes
   * messages although `close` began: a handler that close waits for must be able to finish its work.
   */
  #publishingClosed = false;

  /** Use {@link createBus}, which also connects the transport. */
  constructor(transport: Transport, options: BusOptions<C>) {
    const settings = busSettingsOf(options);
    this.service = settings.service;
    this.transport = transport;
    this.#contracts = new Map(Object.entries(options.contracts ?? {}) as [string, StandardSchemaV1][]);
    this.#middleware = [...(options.inbox ? [idempotent(options.inbox)] : []), ...(options.middleware ?? [])];
    this.#defaults = settings.defaults;
    this.#closeTimeoutMs = settings.closeTimeoutMs;
    this.#logger = loggerOption('the bus', options.logger) ?? stderrLogger;
    this.#clock = options.clock === undefined || options.clock === systemClock ? undefined : options.clock;
  }

  /** The subscription defaults in force: the bus's `subscriptionDefaults` over Ferry's. */
  get subscriptionDefaults(): Readonly<Required<SubscriptionDefaults>> {
    return this.#defaults;
  }

  /**
   * Publishes a message. Resolves once the transport has stored it durably (on RabbitMQ: a publisher
   * confirm for a persistent message routed to at least one queue); rejects with a typed error
   * otherwise (`UNROUTABLE`, `PUBLISH_NACKED`, `PUBLISH_NOT_CONFIRMED`, `MESSAGE_INVALID`, `BUS_CLOSED`).
   * While `close` waits for the handlers in flight it still takes messages (see {@link close}).
   */
  publish<K extends TypeOf<C>>(type: K, data: DataIn<C, K>, options?: PublishOptions): Promise<void> {
    if (this.#publishingClosed) return Promise.reject(new BusClosedError());
    try {
      assertMessageType(type);
      checkOptions('publish', options, PUBLISH_OPTION_NAMES);
      const schema = this.#contracts.size === 0 ? undefined : this.#contracts.get(type);
      if (schema !== undefined) {
        const checked = validate(schema, type, data);
        if (checked instanceof Promise) {
          return checked
            .then(() => validateDeliveredForm(schema, type, data))
            .then(() => this.transport.publish(this.#envelope(type, data, options)));
        }
        const delivered = validateDeliveredForm(schema, type, data);
        if (delivered !== undefined) {
          return delivered.then(() => this.transport.publish(this.#envelope(type, data, options)));
        }
      }
      return this.transport.publish(this.#envelope(type, data, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The envelope `publish` would send, checked as `publish` checks it (type, contract and its JSON
   * form, options, limits), without sending it: for an outbox, which stores it in a unit of work and
   * sends it later. Rejects with the errors `publish` rejects with (`BUS_CLOSED` aside).
   */
  async envelopeOf<K extends TypeOf<C>>(
    type: K,
    data: DataIn<C, K>,
    options?: PublishOptions,
  ): Promise<Envelope> {
    assertMessageType(type);
    checkOptions('publish', options, PUBLISH_OPTION_NAMES);
    const schema = this.#contracts.size === 0 ? undefined : this.#contracts.get(type);
    if (schema !== undefined) {
      await validate(schema, type, data);
      await validateDeliveredForm(schema, type, data);
    }
    const envelope = this.#envelope(type, data, options);
    // What the transport would refuse for the message itself (its encoded size on RabbitMQ).
    this.transport.check?.(envelope);
    return envelope;
  }

  #envelope(type: string, data: unknown, options: PublishOptions | undefined): Envelope {
    assertDataEncodable(type, data);
    const context = currentContext();
    const now = this.#clock === undefined ? Date.now() : this.#clock.now();
    if (
      options !== undefined &&
      (options.id === null || options.correlationId === null || options.causationId === null)
    ) {
      // `??` would take null for "not given"; the README says a non-string is refused.
      throw new InvalidOptionsError(
        'id, correlationId and causationId must be strings: leave one out for its default, not null',
      );
    }
    const id = options?.id ?? newMessageId(now);
    const envelope: { -readonly [P in keyof Envelope]: Envelope[P] } = {
      specversion: '1.0',
      id,
      source: this.service,
      type,
      time: nowIso(now),
      datacontenttype: JSON_CONTENT_TYPE,
      data,
      correlationid: options?.correlationId ?? context?.correlationId ?? id,
    };
    const causationid = options?.causationId ?? context?.messageId;
    if (causationid !== undefined) envelope.causationid = causationid;
    if (options?.headers !== undefined) {
      if (!isPlainHeaders(options.headers)) {
        // A Map, a Headers, a string: Object.keys would lose or garble what it holds.
        throw new InvalidOptionsError('headers must be a plain object of strings ({ name: value })');
      }
      // Copied, as a transport sending bytes would: later changes by the publisher are not sent.
      const headers: Record<string, string> = {};
      for (const name of Object.keys(options.headers)) {
        // An object key, not a header: assigning it would set a prototype and lose the header.
        if (name === '__proto__') throw new InvalidOptionsError('header "__proto__" cannot be carried');
        const value = options.headers[name];
        if (typeof value !== 'string') throw new InvalidOptionsError(`header "${name}" must be a string`);
        headers[name] = value;
      }
      envelope.headers = headers;
    }
    const expiresat = expiryOf(options, now);
    if (expiresat !== undefined) envelope.expiresat = expiresat;
    assertEnvelopeLimits(envelope);
    return envelope;
  }

  /**
   * Subscribes `handler` to messages whose type matches `pattern` (`*` = one word, `#` = zero or more).
   * The handler's success acknowledges the message; a throw schedules a delayed retry, and after
   * `maxAttempts` the message goes to the group's dead-letter queue with the error. An error whose
   * `retryable` property is `false` (a saga's `SagaTransitionError`, say) dead-letters the message at
   * once: running it again cannot succeed. An error saying the handler's own database or broker is
   * unavailable or full (`STORE_UNAVAILABLE`, `BROKER_UNAVAILABLE`, `SQLITE_FULL`, `ENOSPC`…, as the
   * error or a cause) is not the message's fault: it is tried again after the longest backoff delay
   * without counting an attempt, for as long as that lasts, when that delay is 1 s or more (with
   * shorter delays, or `maxAttempts: 1`, it counts as any failure).
   */
  subscribe<P extends string, W>(
    pattern: P,
    handler: (
      message: MessageFor<C, P>,
      context: HandlerContext & { readonly work: W },
    ) => Promise<void> | void,
    options: TransactionalSubscribeOptions<W>,
  ): Promise<Subscription>;
  subscribe<P extends string>(
    pattern: P,
    handler: (message: MessageFor<C, P>, context: HandlerContext) => Promise<void> | void,
    options?: SubscribeOptions,
  ): Promise<Subscription>;
  async subscribe<P extends string>(
    pattern: P,
    handler: (
      message: MessageFor<C, P>,
      context: HandlerContext & { readonly work: never },
    ) => Promise<void> | void,
    options: SubscribeOptions & { readonly unitOfWork?: HandlerUnitOfWork<unknown> } = {},
  ): Promise<Subscription> {
    if (this.#closing !== undefined) throw new BusClosedError();
    // Without it every message was dead-lettered as a handler error ("inner is not a function").
    if (typeof handler !== 'function') {
      throw new InvalidOptionsError(`subscribe needs a handler function, not ${describeValue(handler)}`);
    }
    checkOptions('subscribe', options, SUBSCRIBE_KEYS);
    assertFunctionList('middleware', options.middleware);
    const spec = this.#spec(pattern, options);
    const { group } = spec;
    const timeoutMs = orDefault(options.handlerTimeoutMs, this.#defaults.handlerTimeoutMs);
    assertHandlerTimeout(timeoutMs);
    const inner = handler as (
      message: Message,
      context: HandlerContext & { readonly work?: unknown },
    ) => Promise<void>;
    const unitOfWork = options.unitOfWork;
    if (unitOfWork !== undefined && typeof unitOfWork?.runHandler !== 'function') {
      throw new InvalidOptionsError('unitOfWork must be an outbox (createOutbox)');
    }
    // JSON-encoded so that no (group, pattern) can collide with another, as the inbox middleware's keys.
    const consumer = JSON.stringify([group, pattern]);
    /** Its close stopped waiting for its handlers: those still waiting for a unit of work were given up on. */
    let givenUp = false;
    /** When its close stops waiting for its handlers, once a close began. */
    let closeDeadline = Number.POSITIVE_INFINITY;
    // A turn that comes once that wait is over (a rolled-back unit of another subscription, closed at
    // the same moment, freed it before this one's close had said so) is given up on too.
    const pastCloseWait = () => (this.#clock ?? systemClock).now() >= closeDeadline;
    /**
     * Aborted once its close has given up on the handlers still running: their units of work roll back
     * then, as at their limit (one without a limit held its unit, and on SQLite every write of the
     * process, for ever), and what they do through `work` afterwards is refused.
     */
    const abandoned = unitOfWork === undefined ? undefined : new AbortController();
    // Each of its handlers running listens to it (below): as many as its concurrency.
    if (abandoned !== undefined) setMaxListeners(0, abandoned.signal);
    const chain = composeMiddleware(
      [...this.#middleware, ...(options.middleware ?? [])],
      unitOfWork === undefined
        ? (message) => inner(message, HANDLER_CONTEXT)
        : async (message) => {
            // The limit times the handler, not its wait for a turn: units of work run one at a time
            // per process on SQLite and memory (and wait for a pooled connection on PostgreSQL).
            const context = currentContext();
            const timed = context instanceof HandlerRun ? context : undefined;
            timed?.pauseLimit();
            await unitOfWork.runHandler(consumer, message.id, async (work, settled, end) => {
              timed?.resumeLimit();
              // Its turn came after a close gave up on it (its message handed back, to be handled
              // again): it runs nothing, and its unit of work rolls back.
              if (givenUp || this.#publishingClosed || pastCloseWait()) throw new BusClosedError();
              const signal = HANDLER_CONTEXT.signal;
              // Past its limit the attempt has failed (and may be dead-lettered): its unit of work
              // rolls back then, rather than commit what a retry or a dead letter says was not done,
              // and without waiting for a handler that ignores its signal (on SQLite and memory its
              // open unit would hold every other unit of the process). What the handler still does
              // through `work` afterwards is refused: the unit has ended.
              // A handler may be synchronous (it is typed `Promise<void> | void`): what it returns
              // or throws becomes a promise here.
              const given = abandoned!.signal;
              // Listened to before the handler can listen: a handler that acts on its signal at once
              // (a last write) finds its unit ended, its calls refused, not taken and then undone.
              signal.addEventListener('abort', end, { once: true });
              given.addEventListener('abort', end, { once: true });
              try {
                await untilAborted(
                  untilAborted(
                    (async () =>
                      inner(message, {
                        get signal() {
                          return HANDLER_CONTEXT.signal;
                        },
                        work,
                      }))(),
                    signal,
                  ),
                  given,
                );
                if (signal.aborted) throw signal.reason;
                // The calls it made and did not await are its time too (a forgotten await on a call that
                // never ends held the unit, and every other unit of the process, past its limit).
                await untilAborted(untilAborted(settled(), signal), given);
                if (signal.aborted) throw signal.reason;
              } finally {
                signal.removeEventListener('abort', end);
                given.removeEventListener('abort', end);
              }
              // It returned within its limit: the wait for the commit (shared with the other units of
              // a SQLite batch) is not its time, and its attempt no longer times out.
              timed?.pauseLimit();
            });
          },
      spec,
    );
    // Handlers without a limit keep the process alive while they run (the limit's timer does else),
    // and their signals abort when the subscription's close gives up on them (a run under a limit has
    // its own, aborted then too).
    const runs: Runs =
      timeoutMs > 0
        ? { limited: new HandlerTimeouts(timeoutMs, this.#clock) }
        : { keepAlive: new KeepAlive(), unlimited: new UnlimitedRuns() };
    /** Its transport gave up on the handlers still running: what they decide from now on is not carried out. */
    let transportGaveUp = false;
    const abortRuns = (by: 'bus' | 'subscription') => {
      if (transportGaveUp) return;
      transportGaveUp = true;
      const reason = new BusClosedError(by, {
        detail: 'its close gave up on the handler, whose message goes back to be handled again',
      });
      if (runs.limited === undefined) runs.unlimited.abandon(reason);
      else runs.limited.abandonRuns(reason);
    };
    const closing: Closing = {
      transport: undefined as unknown as TransportSubscription,
      closed: undefined,
      closeBy: (deadline) => {
        closeDeadline = Math.min(closeDeadline, deadline);
      },
      abortRuns,
      giveUp: () => {
        givenUp = true;
      },
      letGo: (by) => {
        // A transport that does not say when it gives up: the signals abort now.
        abortRuns(by);
        abandoned?.abort(new BusClosedError(by));
        if (runs.limited === undefined) runs.keepAlive.release();
        else runs.limited.release();
      },
    };
    const onExpired = options.onExpired ?? 'dead-letter';
    if (onExpired !== 'dead-letter' && onExpired !== 'drop') {
      throw new InvalidOptionsError("onExpired must be 'dead-letter' or 'drop'");
    }
    const transportSubscription = await this.transport.subscribe(
      spec,
      this.#dispatcher(spec, chain, runs, onExpired, () => transportGaveUp),
    );
    closing.transport = transportSubscription;
    if (this.#closing !== undefined) {
      // close() began while the transport was subscribing and could not see this subscription.
      await this.#closeTogether([closing]);
      throw new BusClosedError();
    }
    this.#subscriptions.add(closing);
    const subscription: Subscription = {
      group,
      pattern,
      close: () => this.closeSubscriptions([subscription]),
    };
    this.#handed.set(subscription, closing);
    return subscription;
  }

  /**
   * @internal Closes `subscriptions` of this bus together, as `close()` closes all of them: their
   * handlers still running when the wait ends are given up on by all of them before any is let go
   * (their units of work rolled back), so that a unit of work of one whose turn that frees finds its
   * subscription closed too (a saga runner's). Idempotent, as each subscription's `close()`.
   */
  async closeSubscriptions(subscriptions: readonly Subscription[]): Promise<void> {
    const entries: Closing[] = [];
    // Being closed already (by another call, or the bus's close): waited for as that close is.
    const under: Promise<void>[] = [];
    for (const subscription of subscriptions) {
      const entry = this.#handed.get(subscription);
      if (entry === undefined) under.push(subscription.close());
      else if (entry.closed !== undefined) under.push(entry.closed);
      else {
        this.#subscriptions.delete(entry);
        entries.push(entry);
      }
    }
    await Promise.all([this.#closeTogether(entries), ...under]);
  }

  /**
   * Closes `entries` together; once every close has ended (and `alsoWaitFor`), `beforeGivingUp` (the
   * bus's own mark), then every one of them gives up on its handlers still running, and only then
   * lets them go: a unit of work whose turn a rollback frees must find every one of them closed (on
   * memory that turn came before its own subscription had given up, and its handler ran). Each
   * entry's `closed` is this close, for later calls to wait for. `by` is what the signals of the
   * handlers given up on say was closed.
   */
  #closeTogether(
    entries: readonly Closing[],
    alsoWaitFor: readonly Promise<unknown>[] = [],
    beforeGivingUp?: () => void,
    by: 'bus' | 'subscription' = 'subscription',
  ): Promise<void> {
    const deadline = (this.#clock ?? systemClock).now() + this.#closeTimeoutMs;
    for (const entry of entries) entry.closeBy(deadline);
    const together = (async () => {
      // As each transport gives up on its handlers still running (before the rest of its close: on
      // RabbitMQ up to 1 s for a move under way), their signals abort; and a unit of work whose turn
      // a rollback then frees, of any of these subscriptions, runs nothing.
      const onGiveUp = (entry: Closing) => () => {
        const now = (this.#clock ?? systemClock).now();
        for (const e of entries) e.closeBy(now);
        // The bus's wait is over: a handler that publishes as its signal aborts is refused.
        if (by === 'bus') this.#publishingClosed = true;
        entry.abortRuns(by);
      };
      const closed = await Promise.allSettled(
        entries.map((e) => e.transport.close(this.#closeTimeoutMs, onGiveUp(e))),
      );
      await Promise.allSettled(alsoWaitFor);
      beforeGivingUp?.();
      for (const entry of entries) entry.giveUp();
      for (const entry of entries) entry.letGo(by);
      const failed = closed.find((c): c is PromiseRejectedResult => c.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    })();
    for (const entry of entries) entry.closed = together;
    const tracked = together.catch(() => {});
    this.#closingSubscriptions.add(tracked);
    void tracked.then(() => this.#closingSubscriptions.delete(tracked));
    return together;
  }

  /**
   * Deletes a subscription nobody needs any more: its queue and delay queues, with the messages
   * waiting in them (its group's dead letters stay). A durable subscription otherwise keeps
   * collecting every matching message after its last subscriber is gone. Pass the `group`,
   * `maxAttempts` and `backoff` it was subscribed with, so that its delay queues are found. Refuses
   * with `SUBSCRIPTION_IN_USE` while a consumer is attached, here or in another process. Resolves
   * the number of messages discarded.
   */
  async deleteSubscription(
    pattern: string,
    options: Pick<SubscribeOptions, 'group' | 'maxAttempts' | 'backoff'> = {},
  ): Promise<number> {
    if (this.#closing !== undefined) throw new BusClosedError();
    // Any of subscribe's: the options a subscription was made with may be passed as they are.
    checkOptions('deleteSubscription', options, SUBSCRIBE_KEYS);
    const spec = this.#spec(pattern, options);
    // Waited for by close, as a listing is: on RabbitMQ a close that cut it left its outcome unknown.
    return this.#deadLetterCall(() => this.transport.deleteSubscription(spec));
  }

  /**
   * A readiness check for the server's health middleware (`checks: { bus: bus.healthCheck() }`):
   * fails with `BROKER_UNAVAILABLE` (saying for how long, and the broker's last refusal) once the
   * transport has been without its broker connection for more than `maxDownMs` (5 s: a reconnect
   * after a dropped connection takes less), and with `BUS_CLOSED` once the bus is closing. The
   * embedded broker is always connected.
   * @throws InvalidOptionsError
   */
  healthCheck(options: { readonly maxDownMs?: number } = {}): () => Promise<void> {
    checkOptions('bus.healthCheck', options, ['maxDownMs']);
    const maxDownMs = options.maxDownMs === undefined ? 5_000 : options.maxDownMs;
    if (
      typeof maxDownMs !== 'number' ||
      !Number.isInteger(maxDownMs) ||
      maxDownMs < 0 ||
      maxDownMs > MAX_TIMER_MS
    ) {
      throw new InvalidOptionsError(
        `bus.healthCheck maxDownMs must be an integer from 0 to ${MAX_TIMER_MS}, not ${describeValue(maxDownMs)}`,
      );
    }
    return async () => {
      if (this.#closing !== undefined) throw new BusClosedError();
      const state = this.transport.connectionState?.();
      if (state === undefined || state.connected) return;
      const downMs = Date.now() - state.since;
      if (downMs <= maxDownMs) return;
      throw new BrokerConnectionError(
        `not connected to the broker for ${downMs} ms${state.problem === undefined ? '' : `: ${state.problem}`}`,
      );
    };
  }

  #spec(pattern: string, options: SubscribeOptions): SubscriptionSpec {
    return subscriptionSpecOf(this.service, this.#defaults, pattern, options);
  }

  /** Turns a delivery into an outcome: validation, then the handler chain inside the message's context. */
  #dispatcher(
    spec: SubscriptionSpec,
    chain: MessageHandler,
    runs: Runs,
    onExpired: 'dead-letter' | 'drop',
    /**
     * Whether its close gave up on the handlers still running: the transport ignores what they
     * decide, which is then not logged as done (a dead letter that never happens).
     */
    gaveUp: () => boolean,
  ): DeliveryHandler {
    const timeouts = runs.limited;
    const keepAlive = runs.limited === undefined ? runs.keepAlive : undefined;
    const unlimited = runs.limited === undefined ? runs.unlimited : undefined;
    const delays = spec.retryDelays;
    const contracts = this.#contracts;
    const logger = this.#logger;
    const clock = this.#clock;

    let outageWarnedAt = Number.NEGATIVE_INFINITY;
    // Given the message's attempt, id and type as the run began (see Decide).
    const failed = (attempt: number, id: string, type: string, error: unknown): Outcome => {
      const longest = delays[delays.length - 1];
      if (
        longest !== undefined &&
        longest >= MIN_OUTAGE_DELAY_MS &&
        !isFinal(error) &&
        isBackendDown(error)
      ) {
        // The handler's own database or broker is down or full, not the message at fault: tried
        // again after the longest delay, the attempt not counted, for as long as that lasts (a 20 s
        // outage dead-lettered every message being handled, and with them orders' sagas).
        const now = (clock ?? systemClock).now();
        if (now - outageWarnedAt >= OUTAGE_WARNING_INTERVAL_MS && !gaveUp()) {
          outageWarnedAt = now;
          logger.warn(
            `message ${id} (${type}) in group "${spec.group}" is tried again in ${longest} ms, not counted as an attempt: ${describeThrown(error).message}`,
          );
        }
        return { action: 'retry', attempt, delayMs: longest };
      }
      if (attempt <= delays.length && !isFinal(error))
        return { action: 'retry', attempt: attempt + 1, delayMs: delays[attempt - 1]! };
      const reason = describeThrown(error);
      const kind = isTimeout(error) ? 'timeout' : 'handler-error';
      if (!gaveUp()) {
        logger.warn(
          `dead-lettering message ${id} (${type}) in group "${spec.group}" after ${attempt} attempts: ${reason.message}`,
        );
      }
      return { action: 'dead-letter', reason: { kind, ...reason }, attempts: attempt };
    };

    const invalid = (message: Message, error: unknown): Outcome => {
      const text = error instanceof MessageValidationError ? error.message : describeThrown(error).message;
      logger.warn(`dead-lettering message ${message.id} in group "${spec.group}": ${text}`);
      return { action: 'dead-letter', reason: { kind: 'invalid', message: text }, attempts: message.attempt };
    };

    // One function for every run of the subscription: the run carries its message.
    const decide: Decide = (attempt, id, type, failure) =>
      failure === undefined ? ACK : failed(attempt, id, type, failure.error);

    const run = (message: Message): DeliveryResult => {
      // Read before the handler can write to the message it is handed.
      const { attempt, id, type } = message;
      let result: unknown;
      const handlerRun = timeouts?.start(message);
      const unlimitedRun = unlimited?.start(message);
      // Exactly one of them: the subscription's runs are limited or not.
      const context: FerryContext = handlerRun ?? unlimitedRun!;
      try {
        result = runWithContext(context, chain, message);
      } catch (error) {
        unlimitedRun?.end();
        return failed(attempt, id, type, error);
      }
      if (isThenable(result)) {
        if (handlerRun !== undefined) return timeouts!.race(handlerRun, result, decide);
        keepAlive?.hold();
        return Promise.resolve(result).then(
          () => {
            keepAlive?.letGo();
            unlimitedRun?.end();
            return ACK;
          },
          (error: unknown) => {
            keepAlive?.letGo();
            unlimitedRun?.end();
            return failed(attempt, id, type, error);
          },
        );
      }
      unlimitedRun?.end();
      return ACK;
    };

    const withData = (message: Message, data: unknown): Message =>
      data === message.data ? message : { ...message, data };

    return (delivery) => {
      if (!delivery.ok) {
        logger.warn(`dead-lettering a malformed message in group "${spec.group}": ${delivery.reason}`, {
          pattern: spec.pattern,
        });
        return {
          action: 'dead-letter',
          reason: { kind: 'malformed', message: delivery.reason },
          attempts: delivery.attempt,
        };
      }
      const message = delivery.message;
      if (
        message.expiresat !== undefined &&
        isExpired(message.expiresat, clock === undefined ? Date.now() : clock.now())
      ) {
        if (onExpired === 'drop') {
          logger.debug(`dropped expired message ${message.id} in group "${spec.group}"`);
          return ACK;
        }
        const text = `expired at ${message.expiresat} before it was handled`;
        logger.warn(`dead-lettering message ${message.id} in group "${spec.group}": ${text}`);
        return {
          action: 'dead-letter',
          reason: { kind: 'expired', message: text },
          attempts: message.attempt,
        };
      }
      const schema = contracts.size === 0 ? undefined : contracts.get(message.type);
      if (schema === undefined) return run(message);
      let checked: unknown;
      try {
        checked = validate(schema, message.type, message.data);
      } catch (error) {
        return invalid(message, error);
      }
      if (checked instanceof Promise) {
        return new Promise<Outcome>((resolve, reject) => {
          checked.then(
            (data: unknown) => whenDecided(run(withData(message, data)), resolve, reject),
            (error: unknown) => resolve(invalid(message, error)),
          );
        });
      }
      return run(withData(message, checked));
    };
  }

  /** Lists (without removing) up to `limit` messages in a group's dead-letter queue. */
  listDeadLetters(
    options: { readonly group?: string | undefined; readonly limit?: number | undefined } = {},
  ): Promise<DeadLetter[]> {
    if (this.#closing !== undefined) return Promise.reject(new BusClosedError());
    const refused = refusedDeadLetterOptions('listDeadLetters', options, ['group', 'limit']);
    if (refused !== undefined) return Promise.reject(refused);
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_DEAD_LETTER_LISTING) {
      return Promise.reject(
        new InvalidOptionsError(`limit must be an integer from 1 to ${MAX_DEAD_LETTER_LISTING}`),
      );
    }
    return this.#deadLetterCall(() =>
      this.transport.listDeadLetters(options.group ?? this.service, { limit }),
    );
  }

  /**
   * Runs a listing, replay or subscription delete that `close` waits for (within `closeTimeoutMs`):
   * cut short, a listing or replay would leave the letters it fetched back in the queue out of order
   * on RabbitMQ, and a delete would end with its outcome unknown.
   */
  async #deadLetterCall<T>(call: () => Promise<T>): Promise<T> {
    this.#deadLetterCalls.begin();
    try {
      return await call();
    } finally {
      this.#deadLetterCalls.end();
    }
  }

  /**
   * Sends dead letters back to the subscription that gave up on them, with a fresh attempt count.
   * Resolves the number replayed.
   */
  replayDeadLetters(
    options: {
      readonly group?: string;
      readonly deadLetterIds?: readonly string[];
      readonly limit?: number;
    } = {},
  ): Promise<number> {
    if (this.#closing !== undefined) return Promise.reject(new BusClosedError());
    const refused = refusedDeadLetterOptions('replayDeadLetters', options, [
      'group',
      'deadLetterIds',
      'limit',
    ]);
    if (refused !== undefined) return Promise.reject(refused);
    const { group, ...rest } = options;
    // A limit of 0, -1 or NaN replayed nothing and said nothing; 1.5 was taken as it came.
    if (rest.limit !== undefined && !(Number.isSafeInteger(rest.limit) && rest.limit >= 1)) {
      return Promise.reject(
        new InvalidOptionsError(`limit must be a positive integer, not ${describeValue(rest.limit)}`),
      );
    }
    const ids = rest.deadLetterIds;
    // A loop, not every(): every() skips the holes of a sparse array (new Array(3)).
    if (ids !== undefined && !(Array.isArray(ids) && allStrings(ids))) {
      return Promise.reject(new InvalidOptionsError('deadLetterIds must be an array of strings'));
    }
    return this.#deadLetterCall(() => this.transport.replayDeadLetters(group ?? this.service, rest));
  }

  /**
   * @internal True once `close()` stopped waiting for the handlers in flight: those still running, or
   * still waiting for a turn of their own, were given up on (their messages handed back) and must not
   * start anything.
   */
  get handlersGivenUp(): boolean {
    return this.#publishingClosed;
  }

  /**
   * Stops every subscription (waiting for handlers in flight), waits for unconfirmed publishes, then
   * closes the transport, all within `closeTimeoutMs`: what the handlers took of it is not given
   * again to the publishes. Dead-letter listings and replays already under way are waited for as
   * handlers are; one still running when the wait ends rejects with `BUS_CLOSED`. `subscribe`, the
   * dead-letter calls and `deleteSubscription` reject with `BUS_CLOSED` as soon as `close` is
   * called; `publish` still takes messages while `close` waits for the handlers in flight (they may
   * publish as they finish, and `close` then waits for those confirms too), and rejects with
   * `BUS_CLOSED` from the end of that wait on. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const clock = this.#clock ?? systemClock;
      const deadline = clock.now() + this.#closeTimeoutMs;
      const subscriptions = [...this.#subscriptions];
      this.#subscriptions.clear();
      // Those a sub.close() is closing are waited for too: their handlers may still publish.
      const under = [...this.#closingSubscriptions];
      await Promise.all([
        this.#closeTogether(
          subscriptions,
          under,
          () => {
            // Handlers still running now were given up on: their messages go back to their queues.
            this.#publishingClosed = true;
          },
          'bus',
        ),
        // Listings and replays already under way end first (a replay may still publish).
        this.#deadLetterCalls.idle(this.#closeTimeoutMs, clock),
      ]).finally(() => {
        this.#publishingClosed = true;
      });
      await this.transport.close(Math.max(0, deadline - clock.now()));
    })();
    return this.#closing;
  }
}

/** A subscription's handler runs: under a time limit, or without one. */
type Runs =
  | { readonly limited: HandlerTimeouts }
  | { readonly limited?: undefined; readonly keepAlive: KeepAlive; readonly unlimited: UnlimitedRuns };

/** A subscription of the bus, and what closing it does. */
interface Closing {
  transport: TransportSubscription;
  /** Its close, once one began: later calls wait for it. */
  closed: Promise<void> | undefined;
  /** A close began: its wait for the handlers ends at `deadline` (the bus's clock). */
  readonly closeBy: (deadline: number) => void;
  /**
   * Its transport gave up on the handlers still running: their signals abort (naming what was closed
   * `by`), and what they decide is no longer logged. Once; `letGo` does it for a transport that does
   * not say when it gives up.
   */
  readonly abortRuns: (by: 'bus' | 'subscription') => void;
  /** Its handlers still running were given up on: one whose unit of work's turn comes runs nothing. */
  readonly giveUp: () => void;
  /** Their units of work roll back, and they no longer keep the process alive. */
  readonly letGo: (by: 'bus' | 'subscription') => void;
}

/** How often a subscription says that its messages wait for an unavailable database or broker. */
const OUTAGE_WARNING_INTERVAL_MS = 30_000;

/**
 * Shortest longest-delay with which an outage is waited out: with shorter delays (0 ms, say) the
 * message would be run again and again without a pause for as long as the outage lasts (on the
 * embedded broker, starving the event loop), so its failures count as any other.
 */
const MIN_OUTAGE_DELAY_MS = 1000;

/** The handler's database or broker cannot be reached, or is full (see `backend-faults.ts`). */
function isBackendDown(error: unknown): boolean {
  return isBackendOutage(error) || isStorageFull(error);
}

/**
 * Whether a handler's error says that another attempt cannot succeed (`retryable: false`), so that
 * the message is dead-lettered at once. Never throws, as {@link isTimeout}.
 */
function isFinal(error: unknown): boolean {
  try {
    return (
      typeof error === 'object' && error !== null && (error as { retryable?: unknown }).retryable === false
    );
  } catch {
    return false;
  }
}

/** Never throws, whatever was thrown (a Proxy whose every property access throws, say). */
function isTimeout(error: unknown): boolean {
  try {
    return isHandlerTimeoutError(error);
  } catch {
    return false;
  }
}

/** Most dead letters one listing returns. */
const MAX_DEAD_LETTER_LISTING = 10_000;

function allStrings(values: readonly unknown[]): boolean {
  for (let i = 0; i < values.length; i++) if (typeof values[i] !== 'string') return false;
  return true;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === 'function';
}

/**
 * `given`, or `fallback` when it is left out (undefined). Not `??`: that took `null` for "left out"
 * (`concurrency: null` ran with the default) where the event store and the rest of the bus refuse it.
 */
function orDefault<T>(given: T | undefined, fallback: T): T {
  return given === undefined ? fallback : given;
}

function assertHandlerTimeout(timeoutMs: number): void {
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_TIMER_MS) {
    throw new InvalidOptionsError(`handlerTimeoutMs must be an integer from 0 (no limit) to ${MAX_TIMER_MS}`);
  }
}

/**
 * Why a dead-letter call's options are refused, or `undefined`: not an object, or a group subscribe
 * refuses (it has no dead letters: said so, not an empty listing in memory or the driver's
 * TypeError on RabbitMQ).
 */
function refusedDeadLetterOptions(
  call: string,
  options: { readonly group?: string | undefined },
  known: readonly string[],
): unknown {
  try {
    // A misspelt key (`deadLetterId`, `grop`) would replay every letter, or another group's.
    checkOptions(call, options, known);
    if (options.group !== undefined) assertGroup(options.group);
    return undefined;
  } catch (error) {
    return error;
  }
}

/**
 * The options of a bus checked, as its constructor reads them: `createBus` checks them before it
 * makes the transport (a named memory broker made for a bus then refused would keep that call's
 * limits). @throws InvalidOptionsError
 */
export function busSettingsOf(options: BusOptions<Contracts>): {
  readonly service: string;
  readonly defaults: Required<SubscriptionDefaults>;
  readonly closeTimeoutMs: number;
} {
  assertGroup(options.service);
  assertFunctionList('middleware', options.middleware);
  const given = knownOptions('subscriptionDefaults', options.subscriptionDefaults, SUBSCRIPTION_DEFAULT_KEYS);
  const defaults: Required<SubscriptionDefaults> = Object.freeze({
    ...DEFAULT_SUBSCRIPTION_OPTIONS,
    ...given,
    // Every key, as in force, and a copy: the caller's object changed later changes nothing.
    backoff: exponentialBackoffOf(given.backoff),
  });
  // Checked now: a bad default would otherwise refuse every later subscribe. The backoff as given,
  // so that a refusal tells the caller's values from Ferry's defaults.
  subscriptionSpecOf(
    options.service,
    { ...defaults, backoff: DEFAULT_EXPONENTIAL_BACKOFF },
    'subscription.defaults',
    given.backoff === undefined ? {} : { backoff: given.backoff },
  );
  assertHandlerTimeout(defaults.handlerTimeoutMs);
  // `??` would take null for "not given": only an absent (or undefined) option takes the default.
  const closeTimeoutMs = options.closeTimeoutMs === undefined ? 10_000 : options.closeTimeoutMs;
  assertCloseTimeout(closeTimeoutMs);
  return { service: options.service, defaults, closeTimeoutMs };
}

/** What a subscription to `pattern` with `options` is, the bus's `defaults` filling in. @throws InvalidOptionsError */
function subscriptionSpecOf(
  service: string,
  defaults: Required<SubscriptionDefaults>,
  pattern: string,
  options: SubscribeOptions,
): SubscriptionSpec {
  assertPattern(pattern);
  const group = orDefault(options.group, service);
  assertGroup(group);
  const concurrency = orDefault(options.concurrency, defaults.concurrency);
  const maxAttempts = orDefault(options.maxAttempts, defaults.maxAttempts);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 65_535) {
    throw new InvalidOptionsError('concurrency must be an integer from 1 to 65535');
  }
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 100) {
    throw new InvalidOptionsError('maxAttempts must be an integer from 1 to 100');
  }
  const retryDelays = exponentialDelays(options.backoff, maxAttempts - 1, defaults.backoff);
  assertRetryDelays(retryDelays);
  return { group, pattern, concurrency, retryDelays };
}
