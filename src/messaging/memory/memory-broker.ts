import { randomUUID } from 'node:crypto';
import type { FerryError } from '../../errors/ferry-error.js';
import { InvalidOptionsError } from '../../errors/ferry-error.js';
import { integerOption } from '../../errors/integer-option.js';
import { refuseUnknownKeys } from '../../errors/options-object.js';
import { assertClock, type Clock, type ClockTimer, systemClock } from '../../time/clock.js';
import { cutReason } from '../dead-letter-reason.js';
import { Deque } from '../deque.js';
import { type Envelope, type Message, newMessageId, toMessage } from '../envelope.js';
import {
  MessageTooLargeError,
  PublishNackedError,
  SubscriptionInUseError,
  UnroutableError,
} from '../errors.js';
import { InFlight } from '../in-flight.js';
import { compilePattern } from '../topic.js';
import {
  type DeadLetter,
  type DeadLetterReason,
  type Delivery,
  type DeliveryHandler,
  type DeliveryResult,
  notifyWhenDecided,
  type Outcome,
  type OutcomeListener,
  type ReplayOptions,
  type SubscriptionSpec,
  type TrackedPublish,
  type TransportSubscription,
  whenDecided,
} from '../transport.js';
import { asPublished, decodeWireMessage, typeOf, type WireMessage } from '../wire.js';
import { copyOfSnapshot, type DataSnapshot, jsonOfSnapshot, snapshotData } from './data-snapshot.js';
import { Settlement } from './settlement.js';

/** Options of an in-memory broker. */
export interface MemoryBrokerOptions {
  /**
   * Messages one subscription queue holds before `publish` rejects with `PUBLISH_NACKED`, like a
   * RabbitMQ queue with `overflow: reject-publish`. Keeps a stalled consumer from exhausting memory.
   * @default 1000000
   */
  readonly maxQueueLength?: number;
  /**
   * Where the broker reads the time and arms its timers: delayed retries wait on it, a consumer's
   * close waits for its handlers on it, and dead letters are stamped with it. A `VirtualClock` makes
   * retry delays pass when the test advances it, with no real waiting. Fixed when the broker is
   * created: a process-wide broker (`memory://name`) keeps the clock of its first user.
   * @default systemClock
   */
  readonly clock?: Clock;
  /**
   * Largest encoded body (the JSON of `data`, in UTF-8) a publish takes; a larger one rejects at once
   * with `MESSAGE_TOO_LARGE`, as on RabbitMQ (the same option and default there), so that a message
   * too large for the broker is found in development. @default 134217728
   */
  readonly maxMessageBytes?: number;
  /**
   * Times in a row a message may go back to its queue because its subscriber closed without waiting
   * for its handler (past `closeTimeoutMs`); the next subscriber to take it then moves it to the
   * dead-letter queue with reason kind `redelivered`, as on RabbitMQ (the same option and default
   * there). The count restarts once a handler has settled the message. @default 5
   */
  readonly maxRedeliveries?: number;
}

export const DEFAULT_MEMORY_BROKER_OPTIONS = Object.freeze({
  maxQueueLength: 1_000_000,
  maxMessageBytes: 134_217_728,
  maxRedeliveries: 5,
  clock: systemClock,
} satisfies Required<MemoryBrokerOptions>);

/**
 * The options with defaults filled in, or `INVALID_OPTIONS` naming the first bad one. A bus on
 * RabbitMQ checks its `memory` options with it too, so that a bad value is found before the URL is
 * switched to `memory://`.
 */
export function resolveMemoryBrokerOptions(options: MemoryBrokerOptions): Required<MemoryBrokerOptions> {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionsError('memory broker options must be an object');
  }
  // A misspelt key (`maxQueueLenght`) is refused, not dropped for its default.
  refuseUnknownKeys('the memory broker', options, [
    'maxQueueLength',
    'maxMessageBytes',
    'maxRedeliveries',
    'clock',
  ]);
  const d = DEFAULT_MEMORY_BROKER_OPTIONS;
  const clock = options.clock ?? d.clock;
  assertClock(clock);
  return {
    maxQueueLength: integerOption('maxQueueLength', options.maxQueueLength, d.maxQueueLength, 1),
    maxMessageBytes: integerOption('maxMessageBytes', options.maxMessageBytes, d.maxMessageBytes, 1),
    maxRedeliveries: integerOption('maxRedeliveries', options.maxRedeliveries, d.maxRedeliveries, 0),
    clock,
  };
}

/**
 * A Ferry message as published (its `data` read from the snapshot, copied for each delivery, never
 * from the envelope) with its attempt number and, for a tracked publish, its settlement (shared by
 * the copies of every queue it was routed to), or foreign bytes. `redeliveries` counts the times in
 * a row a closing consumer gave it back unsettled (absent: none), as RabbitMQ's
 * `x-ferry-redeliveries` does.
 */
type Entry =
  | {
      readonly envelope: Envelope;
      readonly data: DataSnapshot;
      readonly attempt: number;
      readonly settlement: Settlement | undefined;
      readonly wire?: undefined;
      readonly redeliveries?: number;
    }
  | {
      readonly envelope?: undefined;
      readonly data?: undefined;
      readonly settlement?: undefined;
      readonly wire: WireMessage;
      /** Absent: 1 (a retry sets it; the bytes' own attempt header is never read). */
      readonly attempt?: number;
      readonly redeliveries?: number;
    };

interface MemoryConsumer {
  readonly handler: DeliveryHandler;
  readonly concurrency: number;
  readonly inFlight: InFlight;
  /**
   * What it holds, by delivery: a close that gives up on its handlers puts these back in the queue,
   * as RabbitMQ does with a closed channel's unacknowledged messages.
   */
  readonly holding: Map<Delivery, Entry>;
  closed: boolean;
}

interface Queue {
  /** `group` and `pattern`, joined by a NUL. */
  readonly key: string;
  readonly group: string;
  readonly pattern: string;
  readonly matches: (type: string) => boolean;
  readonly buffer: Deque<Entry>;
  readonly consumers: MemoryConsumer[];
  /** Closes of consumers under way: they take nothing more, but may still hold messages (see deleteQueue). */
  readonly closing: Set<Promise<void>>;
  next: number;
  scheduled: boolean;
  deleted: boolean;
}

interface StoredDeadLetter extends DeadLetter {
  readonly entry: Entry;
}

type Settler = (
  queue: Queue,
  consumer: MemoryConsumer,
  entry: Entry,
  delivery: Delivery,
  outcome: Outcome,
) => void;

/**
 * One delivery of a Ferry message: what the handler gets, and what learns its outcome, in one object
 * (a delivery and two callbacks otherwise).
 */
class Handoff implements OutcomeListener {
  readonly ok = true;
  readonly message: Message;
  readonly #settle: Settler;
  readonly #queue: Queue;
  readonly #consumer: MemoryConsumer;
  readonly #entry: Entry;

  constructor(settle: Settler, queue: Queue, consumer: MemoryConsumer, entry: Entry, message: Message) {
    this.message = message;
    this.#settle = settle;
    this.#queue = queue;
    this.#consumer = consumer;
    this.#entry = entry;
  }

  onOutcome(outcome: Outcome): void {
    this.#settle(this.#queue, this.#consumer, this.#entry, this, outcome);
  }

  onBroken(): void {
    this.#settle(this.#queue, this.#consumer, this.#entry, this, REQUEUE);
  }
}

const RESOLVED = Promise.resolve();
/** The settlement of a publish that was refused: there is none. */
const NEVER = new Promise<void>(() => {});
/** What happens to a delivery whose handler broke its contract and threw: back in the queue, as an unacked one would. */
const REQUEUE: Outcome = Object.freeze({ action: 'retry', attempt: 1, delayMs: 0 });
/** Deliveries started by one pump before it yields, so synchronous handlers cannot starve I/O. */
const PUMP_BUDGET = 10_000;
const brokers = new Map<string, MemoryBroker>();

/**
 * An embedded broker: every subscription `(group, pattern)` is a queue in process memory that outlives
 * its subscribers, with the same topic, group, retry and dead-letter semantics as RabbitMQ. Several
 * buses in one process (the services of the shop) share a broker through its name. Nothing survives
 * the process.
 *
 * `data` goes through the same JSON encoding as on RabbitMQ: what cannot be encoded is rejected at
 * publish with `MESSAGE_NOT_SERIALIZABLE`, and each delivery gets its own decoded copy (a `Date`
 * arrives as its ISO string, `undefined` fields are absent, `NaN` is `null`).
 */
export class MemoryBroker {
  readonly #queues = new Map<string, Queue>();
  readonly #routes = new Map<string, Queue[]>();
  readonly #deadLetters = new Map<string, StoredDeadLetter[]>();
  /** Retries waiting out their delay, by queue key: they belong to the subscription, not to one queue. */
  readonly #delayed = new Map<string, Map<ClockTimer, { readonly entry: Entry; readonly delayMs: number }>>();
  readonly #maxQueueLength: number;
  readonly #maxMessageBytes: number;
  readonly #maxRedeliveries: number;
  /** The clock its retry delays and close timeouts run on (see {@link MemoryBrokerOptions.clock}). */
  readonly clock: Clock;
  readonly #settler: Settler = (queue, consumer, entry, delivery, outcome) =>
    this.#settle(queue, consumer, entry, delivery, outcome);

  constructor(options: MemoryBrokerOptions = {}) {
    const o = resolveMemoryBrokerOptions(options);
    this.#maxQueueLength = o.maxQueueLength;
    this.#maxMessageBytes = o.maxMessageBytes;
    this.#maxRedeliveries = o.maxRedeliveries;
    this.clock = o.clock;
  }

  /**
   * The process-wide broker called `name` (`memory://name`; `memory://` is `default`), created on
   * first use with `options`; later calls get it as it was created. Asking for an existing broker
   * with another `clock`, or another value of an option it was made with (`maxQueueLength`,
   * `maxMessageBytes`, `maxRedeliveries`), throws an `InvalidOptionsError`: the broker would silently
   * keep the first one's (its retries the first clock's time, its size limit the first bus's).
   * Options left out take the broker's.
   */
  static named(name: string, options?: MemoryBrokerOptions): MemoryBroker {
    let broker = brokers.get(name);
    if (broker === undefined) {
      broker = new MemoryBroker(options);
      brokers.set(name, broker);
      return broker;
    }
    if (options?.clock !== undefined && options.clock !== broker.clock) {
      throw new InvalidOptionsError(
        `memory broker "${name}" already exists with another clock; use a broker name of its own (memory://name) for each clock`,
      );
    }
    const resolved = resolveMemoryBrokerOptions(options ?? {});
    const made = {
      maxQueueLength: broker.#maxQueueLength,
      maxMessageBytes: broker.#maxMessageBytes,
      maxRedeliveries: broker.#maxRedeliveries,
    };
    for (const option of ['maxQueueLength', 'maxMessageBytes', 'maxRedeliveries'] as const) {
      if (options?.[option] !== undefined && resolved[option] !== made[option]) {
        throw new InvalidOptionsError(
          `memory broker "${name}" already exists with ${option} ${made[option]}, not ${resolved[option]}; leave the option out to share it as it is, or use a broker name of its own (memory://name)`,
        );
      }
    }
    return broker;
  }

  publish(envelope: Envelope): Promise<void> {
    let data: DataSnapshot;
    try {
      data = this.#snapshot(envelope);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#route(envelope.type, envelope.id, { envelope, data, attempt: 1, settlement: undefined });
  }

  /**
   * {@link publish}, and the settlement of each copy: `settled` resolves once every queue the message
   * was routed to acked it, dead-lettered it, or was deleted with it (see `Transport.publishTracked`).
   */
  publishTracked(envelope: Envelope): TrackedPublish {
    let data: DataSnapshot;
    try {
      data = this.#snapshot(envelope);
    } catch (error) {
      return { confirmed: Promise.reject(error), settled: NEVER };
    }
    const queues = this.#targets(envelope.type, envelope.id);
    if (!Array.isArray(queues)) return { confirmed: Promise.reject(queues), settled: NEVER };
    const settlement = new Settlement(queues.length);
    const entry: Entry = { envelope, data, attempt: 1, settlement };
    for (const queue of queues) this.#enqueue(queue, entry);
    return { confirmed: RESOLVED, settled: settlement.settled };
  }

  /** `data` as published, or `MESSAGE_NOT_SERIALIZABLE`, or `MESSAGE_TOO_LARGE` past `maxMessageBytes`. */
  #snapshot(envelope: Envelope): DataSnapshot {
    const data = snapshotData(envelope.type, envelope.data);
    if (data.bytesAtMost > this.#maxMessageBytes) {
      const size = data.bytes();
      if (size > this.#maxMessageBytes)
        throw new MessageTooLargeError(envelope.id, size, this.#maxMessageBytes);
    }
    return data;
  }

  /**
   * Throws what `publish` would reject `envelope`'s data with (`MESSAGE_NOT_SERIALIZABLE`,
   * `MESSAGE_TOO_LARGE`), without publishing it: for an outbox, which checks now and sends later.
   */
  check(envelope: Envelope): void {
    this.#snapshot(envelope);
  }

  /** Takes bytes as a producer that knows nothing of Ferry sends them; they are decoded at delivery. */
  publishRaw(wire: WireMessage): Promise<void> {
    const refused = refusedWire(wire);
    if (refused !== undefined) return Promise.reject(new InvalidOptionsError(`publishRaw: ${refused}`));
    // One without an id or a time of its own gets them once, here: its retries, its dead letter and
    // the inbox see one message (it got a new id at every attempt), as on RabbitMQ.
    const now = this.clock.now();
    const stamped: WireMessage = {
      ...wire,
      messageId: wire.messageId || newMessageId(now),
      timestamp: wire.timestamp ?? now,
    };
    // Routed by its routing key, its type, as RabbitMQ routes it; decoded at delivery. Taken as RabbitMQ
    // takes a publisher's message: Ferry's own retry headers are not the producer's to set.
    return this.#route(wire.routingKey, wire.messageId ?? '(no id)', { wire: asPublished(stamped) });
  }

  #route(type: string, id: string, entry: Entry): Promise<void> {
    const queues = this.#targets(type, id);
    if (!Array.isArray(queues)) return Promise.reject(queues);
    for (const queue of queues) this.#enqueue(queue, entry);
    return RESOLVED;
  }

  /** The queues a message of `type` goes to, or why it cannot be taken (no queue, one full). */
  #targets(type: string, id: string): readonly Queue[] | FerryError {
    let queues = this.#routes.get(type);
    if (queues === undefined) {
      queues = [...this.#queues.values()].filter((q) => q.matches(type));
      this.#routes.set(type, queues);
    }
    if (queues.length === 0) return new UnroutableError(type, id);
    for (const queue of queues) {
      if (queue.buffer.length >= this.#maxQueueLength) {
        return new PublishNackedError(id, `queue of group "${queue.group}" is full`);
      }
    }
    return queues;
  }

  #enqueue(queue: Queue, entry: Entry): void {
    queue.buffer.push(entry);
    this.#schedule(queue);
  }

  #schedule(queue: Queue): void {
    if (!queue.scheduled && queue.buffer.length > 0) {
      queue.scheduled = true;
      queueMicrotask(() => this.#pump(queue));
    }
  }

  #pump(queue: Queue): void {
    queue.scheduled = false;
    const consumers = queue.consumers;
    for (let budget = PUMP_BUDGET; queue.buffer.length > 0 && consumers.length > 0; budget--) {
      if (budget === 0) {
        // A yield to I/O, not a delay: on the clock, a virtual one would stall delivery until advanced.
        queue.scheduled = true;
        setImmediate(() => this.#pump(queue));
        return;
      }
      let consumer: MemoryConsumer | undefined;
      for (let i = 0; i < consumers.length; i++) {
        const candidate = consumers[(queue.next + i) % consumers.length]!;
        if (!candidate.closed && candidate.inFlight.count < candidate.concurrency) {
          consumer = candidate;
          queue.next = (queue.next + i + 1) % consumers.length;
          break;
        }
      }
      if (consumer === undefined) return;
      const entry = queue.buffer.shift()!;
      if (entry.redeliveries !== undefined && entry.redeliveries > this.#maxRedeliveries) {
        // As on RabbitMQ, the consumer that takes it next moves it to the dead letters unhandled.
        this.#deadLetterRedelivered(queue, entry, entry.redeliveries);
        continue;
      }
      consumer.inFlight.begin();
      this.#deliver(queue, consumer, entry);
    }
  }

  #deliver(queue: Queue, consumer: MemoryConsumer, entry: Entry): void {
    if (entry.envelope === undefined) {
      this.#deliverWire(queue, consumer, entry);
      return;
    }
    const message = toMessage(entry.envelope, entry.attempt, copyOfSnapshot(entry.data));
    const handoff = new Handoff(this.#settler, queue, consumer, entry, message);
    consumer.holding.set(handoff, entry);
    let result: DeliveryResult;
    try {
      result = consumer.handler(handoff);
    } catch {
      result = REQUEUE;
    }
    notifyWhenDecided(result, handoff);
  }

  #deliverWire(queue: Queue, consumer: MemoryConsumer, entry: Entry & { readonly wire: WireMessage }): void {
    const delivery = decodeWireMessage(entry.wire, this.clock, entry.attempt ?? 1);
    consumer.holding.set(delivery, entry);
    let result: DeliveryResult;
    try {
      result = consumer.handler(delivery);
    } catch {
      result = REQUEUE;
    }
    whenDecided(
      result,
      (outcome) => this.#settle(queue, consumer, entry, delivery, outcome),
      () => this.#settle(queue, consumer, entry, delivery, REQUEUE),
    );
  }

  #settle(queue: Queue, consumer: MemoryConsumer, entry: Entry, delivery: Delivery, outcome: Outcome): void {
    // Put back in the queue when its consumer's close gave up on it: what the handler decided since
    // is not carried out, as an ack on a closed RabbitMQ channel is not.
    if (!consumer.holding.delete(delivery)) return;
    consumer.inFlight.end();
    if (outcome.action === 'retry') {
      // A fresh entry: a handler settled it, so its redeliveries in a row start again from zero.
      const next: Entry = entry.envelope
        ? {
            envelope: entry.envelope,
            data: entry.data,
            attempt: outcome.attempt,
            settlement: entry.settlement,
          }
        : // Its attempt counted here: the bytes were decoded at attempt 1 every time, and a failing
          // plain producer's message was retried for ever, never dead-lettered.
          { wire: entry.wire, attempt: outcome.attempt };
      // Its queue was deleted while it was being handled: gone with it.
      if (queue.deleted) entry.settlement?.copySettled();
      else if (outcome.delayMs <= 0) this.#enqueue(queue, next);
      else {
        this.#delay(queue.key, next, outcome.delayMs);
      }
    } else {
      if (outcome.action === 'dead-letter') {
        this.#storeDeadLetter(queue, entry, outcome.reason, outcome.attempts);
      }
      entry.settlement?.copySettled();
    }
    if (!consumer.closed) this.#schedule(queue);
  }

  /** Dead-letters a message closing consumers gave back `redeliveries` times in a row. */
  #deadLetterRedelivered(queue: Queue, entry: Entry, redeliveries: number): void {
    const delivery: Delivery =
      entry.wire === undefined
        ? { ok: true, message: toMessage(entry.envelope, entry.attempt, null) }
        : decodeWireMessage(entry.wire, this.clock, entry.attempt ?? 1);
    const reason: DeadLetterReason = {
      kind: 'redelivered',
      message: `delivered ${redeliveries} times in a row to a subscriber that closed without waiting for its handler (past closeTimeoutMs) before settling it`,
    };
    const attempts = delivery.ok ? delivery.message.attempt : delivery.attempt;
    this.#storeDeadLetter(queue, entry, reason, attempts);
    entry.settlement?.copySettled();
  }

  #storeDeadLetter(queue: Queue, entry: Entry, reason: DeadLetterReason, attempts: number): void {
    const envelope = entry.envelope;
    const stored: StoredDeadLetter = {
      deadLetterId: randomUUID(),
      group: queue.group,
      pattern: queue.pattern,
      routingKey: envelope?.type ?? (entry.wire ? typeOf(entry.wire) : ''),
      reason: cutReason(reason),
      attempts,
      deadLetteredAt: new Date(this.clock.now()).toISOString(),
      body: entry.wire ? Buffer.from(entry.wire.body).toString('utf8') : jsonOfSnapshot(entry.data),
      // The publisher's object is not kept: listings and replays read the snapshot. A replay is a new
      // message for the queue: the original publish was settled by the dead-lettering.
      entry: envelope
        ? { envelope: { ...envelope, data: null }, data: entry.data, attempt: 1, settlement: undefined }
        : { wire: entry.wire },
      ...(envelope ? { envelope: { ...envelope, data: null } } : this.#envelopeOfBytes(entry.wire)),
    };
    let list = this.#deadLetters.get(queue.group);
    if (list === undefined) {
      list = [];
      this.#deadLetters.set(queue.group, list);
    }
    list.push(stored);
  }

  /**
   * The envelope a plain producer's bytes decode to, for its dead letter: decoded again from the
   * bytes (their id and time were given at publishRaw), never read from the message a handler was
   * handed and could write to. Nothing for bytes that are not a message.
   */
  #envelopeOfBytes(wire: WireMessage | undefined): { envelope?: Envelope } {
    if (wire === undefined) return {};
    const delivery = decodeWireMessage(wire, this.clock, 1);
    return delivery.ok ? { envelope: stripAttempt(delivery.message) } : {};
  }

  /**
   * Holds a retry for `delayMs`, then puts it in the queue that then has `key`, as a RabbitMQ delay
   * queue (one per subscription and delay, outliving the subscription's queue) dead-letters it to the
   * queue's name: with none, it is dropped.
   */
  #delay(key: string, entry: Entry, delayMs: number): void {
    let waiting = this.#delayed.get(key);
    if (waiting === undefined) {
      waiting = new Map();
      this.#delayed.set(key, waiting);
    }
    const held = waiting;
    // Unref'd: a pending retry must not keep a finished process alive; in memory it is lost at exit anyway.
    const timer = this.clock.setTimeout(() => {
      held.delete(timer);
      if (held.size === 0 && this.#delayed.get(key) === held) this.#delayed.delete(key);
      const queue = this.#queues.get(key);
      if (queue !== undefined) this.#enqueue(queue, entry);
      else entry.settlement?.copySettled();
    }, delayMs);
    timer.unref?.();
    held.set(timer, { entry, delayMs });
  }

  /**
   * Deletes a subscription's queue and what it holds, and its retries waiting out one of
   * `retryDelays` (on RabbitMQ: the delay queues of those delays); resolves how many messages that
   * was. Retries waiting out another delay (a subscription made with other options) are left, as
   * RabbitMQ leaves the delay queues it was not told of: they go to the subscription's queue if it is
   * made again before they are due, else they are dropped. Without `retryDelays`, every retry waiting.
   */
  /**
   * Whether a consumer is attached to the subscription's queue (`'open'`), only closing ones
   * (`'closing'`, with their closes), or none.
   */
  consumersOf(group: string, pattern: string): 'open' | Promise<void>[] {
    const queue = this.#queues.get(`${group}\u0000${pattern}`);
    if (queue === undefined) return [];
    return queue.consumers.length > 0 ? 'open' : [...queue.closing];
  }

  deleteQueue(group: string, pattern: string, retryDelays?: readonly number[]): number {
    const key = `${group}\u0000${pattern}`;
    const queue = this.#queues.get(key);
    // A closing consumer still counts, until its close has given back what its handlers held: deleted
    // before, the queue took those messages with it, and a retry its handler then asked for was lost.
    if (queue !== undefined && queue.consumers.length + queue.closing.size > 0) {
      throw new SubscriptionInUseError(group, pattern);
    }
    let discarded = 0;
    if (queue !== undefined) {
      queue.deleted = true;
      this.#queues.delete(key);
      this.#routes.clear();
      discarded += queue.buffer.length;
      for (const entry of queue.buffer.drain()) entry.settlement?.copySettled();
    }
    const waiting = this.#delayed.get(key);
    if (waiting !== undefined) {
      const delays = retryDelays === undefined ? undefined : new Set(retryDelays);
      for (const [timer, { entry, delayMs }] of waiting) {
        if (delays !== undefined && !delays.has(delayMs)) continue;
        timer.cancel();
        waiting.delete(timer);
        entry.settlement?.copySettled();
        discarded++;
      }
      if (waiting.size === 0) this.#delayed.delete(key);
    }
    return discarded;
  }

  /** Attaches a consumer to the subscription's queue, creating the queue on first use. */
  attach(spec: SubscriptionSpec, handler: DeliveryHandler): TransportSubscription {
    const key = `${spec.group}\u0000${spec.pattern}`;
    let queue = this.#queues.get(key);
    if (queue === undefined) {
      queue = {
        key,
        group: spec.group,
        pattern: spec.pattern,
        matches: compilePattern(spec.pattern),
        buffer: new Deque(),
        consumers: [],
        closing: new Set(),
        next: 0,
        scheduled: false,
        deleted: false,
      };
      this.#queues.set(key, queue);
      this.#routes.clear();
    }
    const consumer: MemoryConsumer = {
      handler,
      concurrency: spec.concurrency,
      inFlight: new InFlight(),
      holding: new Map(),
      closed: false,
    };
    queue.consumers.push(consumer);
    this.#schedule(queue);
    const q = queue;
    return { close: (timeoutMs, onGiveUp) => this.#detach(q, consumer, timeoutMs, onGiveUp) };
  }

  /**
   * Stops deliveries to `consumer`, then waits up to `timeoutMs` for its handlers in flight. What they
   * still hold then goes back to the head of the queue, in the order they took it, for the next
   * consumer (as RabbitMQ requeues a closed channel's unacknowledged messages): the message is handled
   * again, never lost.
   */
  async #detach(
    queue: Queue,
    consumer: MemoryConsumer,
    timeoutMs: number,
    onGiveUp: (() => void) | undefined,
  ): Promise<void> {
    if (consumer.closed) return;
    consumer.closed = true;
    const index = queue.consumers.indexOf(consumer);
    if (index >= 0) queue.consumers.splice(index, 1);
    let closed!: () => void;
    const closing = new Promise<void>((resolve) => {
      closed = resolve;
    });
    queue.closing.add(closing);
    try {
      await consumer.inFlight.idle(timeoutMs, this.clock);
      // Those still running are given up on from here: what they decide is ignored (they no longer
      // hold their messages).
      if (consumer.inFlight.count > 0) onGiveUp?.();
      if (consumer.holding.size > 0) {
        // Each counted as a redelivery, as RabbitMQ's consumers count what a closed channel gave back.
        const held = [...consumer.holding.values()].map(redelivered);
        consumer.holding.clear();
        if (queue.deleted) for (const entry of held) entry.settlement?.copySettled();
        else queue.buffer.unshiftAll(held);
      }
    } finally {
      queue.closing.delete(closing);
      closed();
    }
    // What the closed consumer did not take goes to the remaining competitors.
    this.#schedule(queue);
  }

  listDeadLetters(group: string, limit: number): DeadLetter[] {
    const list = this.#deadLetters.get(group) ?? [];
    // Each listing gets its own copy of the data, as one read from a broker's queue would.
    return list
      .slice(0, limit)
      .map(({ entry, ...deadLetter }) =>
        entry.data !== undefined && deadLetter.envelope
          ? { ...deadLetter, envelope: { ...deadLetter.envelope, data: copyOfSnapshot(entry.data) } }
          : deadLetter,
      );
  }

  replayDeadLetters(group: string, options: ReplayOptions): number {
    const list = this.#deadLetters.get(group);
    if (!list) return 0;
    const wanted = options.deadLetterIds ? new Set(options.deadLetterIds) : undefined;
    const limit = options.limit ?? Number.POSITIVE_INFINITY;
    const kept: StoredDeadLetter[] = [];
    let replayed = 0;
    for (const deadLetter of list) {
      // Replayed into the subscription's queue as it is now, like RabbitMQ's publish to the queue's
      // name: a queue deleted since, and not subscribed again, keeps the letter where it is.
      const queue = this.#queues.get(`${deadLetter.group}\u0000${deadLetter.pattern}`);
      if (
        queue !== undefined &&
        replayed < limit &&
        (wanted === undefined || wanted.has(deadLetter.deadLetterId))
      ) {
        this.#enqueue(queue, deadLetter.entry);
        replayed++;
      } else kept.push(deadLetter);
    }
    this.#deadLetters.set(group, kept);
    return replayed;
  }
}

/** Why `wire` is not a wire message (what a broker could carry), or `undefined`: it crashed the delivery loop. */
function refusedWire(wire: WireMessage): string | undefined {
  if (typeof wire !== 'object' || wire === null) return 'a wire message must be an object';
  if (!(wire.body instanceof Uint8Array)) return 'body must be bytes (a Buffer or a Uint8Array)';
  if (typeof wire.routingKey !== 'string') return 'routingKey must be a string';
  const headers: unknown = wire.headers;
  if (headers !== undefined && (typeof headers !== 'object' || headers === null || Array.isArray(headers))) {
    return 'headers must be an object';
  }
  for (const key of ['contentType', 'messageId', 'appId', 'correlationId'] as const) {
    if (wire[key] !== undefined && typeof wire[key] !== 'string') return `${key} must be a string`;
  }
  if (wire.timestamp !== undefined && !Number.isFinite(wire.timestamp)) return 'timestamp must be a number';
  return undefined;
}

/** `entry` given back once more by a consumer that stopped before settling it. */
function redelivered(entry: Entry): Entry {
  return { ...entry, redeliveries: (entry.redeliveries ?? 0) + 1 };
}

function stripAttempt(message: Message): Envelope {
  const { attempt: _attempt, ...envelope } = message;
  return envelope;
}
