import type { Envelope, Message } from './envelope.js';

/**
 * What a transport needs to know to set up one subscription. A subscription is a durable, named
 * consumer queue: `(group, pattern)` identifies it, instances subscribing with the same pair compete.
 */
export interface SubscriptionSpec {
  readonly group: string;
  readonly pattern: string;
  /** Most deliveries handled at once by this subscriber (the AMQP prefetch). */
  readonly concurrency: number;
  /**
   * Delay before each redelivery: `retryDelays[n - 1]` is the wait after attempt `n` failed, so the
   * message is tried `retryDelays.length + 1` times in all before it is dead-lettered.
   */
  readonly retryDelays: readonly number[];
}

/** Why a message was moved to its group's dead-letter queue. */
export interface DeadLetterReason {
  /**
   * `handler-error`: the handler kept failing; `malformed`: not decodable; `invalid`: failed its
   * schema; `redelivered`: its consumers kept stopping (crashing) while holding it; `timeout`: its
   * handler kept running past `handlerTimeoutMs`; `expired`: it arrived after its `expiresat`.
   */
  readonly kind: 'handler-error' | 'malformed' | 'invalid' | 'redelivered' | 'timeout' | 'expired';
  readonly message: string;
  /** Stack of the last handler error, when there is one. */
  readonly stack?: string;
}

/** What a subscriber decided about a delivery; the transport carries it out. */
export type Outcome =
  | { readonly action: 'ack' }
  | { readonly action: 'retry'; readonly attempt: number; readonly delayMs: number }
  | { readonly action: 'dead-letter'; readonly reason: DeadLetterReason; readonly attempts: number };

export const ACK: Outcome = Object.freeze({ action: 'ack' });

/** One delivery handed by a transport to the bus: a decoded message, or the reason it could not be decoded. */
export type Delivery =
  | { readonly ok: true; readonly message: Message }
  | { readonly ok: false; readonly reason: string; readonly attempt: number };

/**
 * Called by a transport for each delivery; the transport settles the delivery according to the
 * outcome. Synchronous when it can be, so that the hot path creates as few promises as possible
 * (each one costs extra while AsyncLocalStorage is active). Never throws nor rejects.
 */
export type DeliveryHandler = (delivery: Delivery) => DeliveryResult;

/**
 * An outcome still being worked out that a transport waits for without a promise (a handler run
 * under a time limit is one): `whenDecided` calls `onOutcome` once with the outcome, or `onBroken`
 * if the handler chain itself broke. Cheaper than a promise on the hot path.
 */
export interface PendingOutcome {
  whenDecided(onOutcome: (outcome: Outcome) => void, onBroken: (error: unknown) => void): void;
  /**
   * Like `whenDecided`, with both callbacks methods of one object: a transport that keeps an object
   * per delivery anyway waits without creating two functions per delivery. Optional: without it,
   * {@link notifyWhenDecided} falls back on `whenDecided`.
   */
  notify?(listener: OutcomeListener): void;
}

/** Gets a delivery's outcome, or learns that the handler chain broke: see {@link notifyWhenDecided}. */
export interface OutcomeListener {
  onOutcome(outcome: Outcome): void;
  onBroken(error: unknown): void;
}

/** What a {@link DeliveryHandler} returns: the outcome, or the promise of it, or a pending one. */
export type DeliveryResult = Outcome | Promise<Outcome> | PendingOutcome;

/**
 * Calls `onOutcome` with a delivery's outcome once it is known (at once for an outcome known
 * already), or `onBroken` if the handler chain broke. How every transport waits for an outcome.
 */
export function whenDecided(
  result: DeliveryResult,
  onOutcome: (outcome: Outcome) => void,
  onBroken: (error: unknown) => void,
): void {
  if (result instanceof Promise) result.then(onOutcome, onBroken);
  else if ('action' in result) onOutcome(result);
  else result.whenDecided(onOutcome, onBroken);
}

/** {@link whenDecided} for a transport that has an {@link OutcomeListener} at hand. */
export function notifyWhenDecided(result: DeliveryResult, listener: OutcomeListener): void {
  if (result instanceof Promise) {
    result.then(
      (outcome: Outcome) => listener.onOutcome(outcome),
      (error: unknown) => listener.onBroken(error),
    );
  } else if ('action' in result) listener.onOutcome(result);
  else if (result.notify !== undefined) result.notify(listener);
  else {
    result.whenDecided(
      (outcome) => listener.onOutcome(outcome),
      (error) => listener.onBroken(error),
    );
  }
}

/** A live subscription at the transport level. */
export interface TransportSubscription {
  /**
   * Stops taking deliveries, waits (up to `timeoutMs`) for those in flight, then releases the
   * consumer. `onGiveUp`, when given, is called when that wait ends with handlers still running, as
   * they are given up on (what they decide is ignored from then on), before the rest of the close:
   * the bus aborts their signals then (and, closing, refuses publishes from then on). A transport
   * that never calls it has them aborted once its close resolves.
   */
  close(timeoutMs: number, onGiveUp?: () => void): Promise<void>;
}

/** A message in a dead-letter queue, as listed by {@link Transport.listDeadLetters}. */
export interface DeadLetter {
  /** Identifies this entry for {@link Transport.replayDeadLetters}. */
  readonly deadLetterId: string;
  readonly group: string;
  /** The subscription pattern whose handler gave up on the message. */
  readonly pattern: string;
  /** The routing key (message type) it was originally published with. */
  readonly routingKey: string;
  readonly reason: DeadLetterReason;
  /** Delivery attempts made before dead-lettering. */
  readonly attempts: number;
  readonly deadLetteredAt: string;
  /** The decoded message, when it could be decoded. */
  readonly envelope?: Envelope;
  /** The raw body as text, always present for diagnosis. */
  readonly body: string;
}

/** Which dead letters to replay; all of the group's when `deadLetterIds` is absent. */
export interface ReplayOptions {
  readonly deadLetterIds?: readonly string[];
  /** Replay at most this many. */
  readonly limit?: number;
}

/** What {@link Transport.publishTracked} returns: the confirm, and the settlement that follows it. */
export interface TrackedPublish {
  /** Resolves or rejects as {@link Transport.publish} does. */
  readonly confirmed: Promise<void>;
  /**
   * Resolves once every queue the message was routed to has settled its copy: its handler succeeded
   * and the delivery was acked, it was dead-lettered (expired messages included) or dropped, or its
   * queue was deleted with it. A copy waiting in its queue, being handled or waiting for a retry is
   * not settled. Never rejects; never resolves when `confirmed` rejects, nor when the process ends
   * first.
   */
  readonly settled: Promise<void>;
}

/**
 * A message transport: the one interface every backend (memory, RabbitMQ, …) implements and the
 * contract suite in `ferry/testing` checks. Transports know nothing of schemas, middleware or context.
 */
export interface Transport {
  /** Short name for logs (`memory`, `amqp`). */
  readonly name: string;
  /** Opens connections; called once by `createBus`. */
  connect(): Promise<void>;
  /** Resolves once the message is stored by the transport, rejects with a typed error otherwise. */
  publish(envelope: Envelope): Promise<void>;
  /**
   * Publishes as `publish` does, and tells when the message is settled everywhere it was routed.
   * Only for a transport whose confirm does not outlive the process, since it holds messages in
   * process memory (the memory transport): the outbox then keeps a message's row until it is
   * settled, so that a process that dies before its consumers handled it loses nothing (the row is
   * published again after the restart). A transport that stores messages durably (RabbitMQ) leaves
   * it out: its confirm is enough.
   *
   * @example
   * const { confirmed, settled } = transport.publishTracked!(envelope);
   * await confirmed; // taken, in memory
   * await settled; // handled (or dead-lettered) by every subscription it reached
   */
  publishTracked?(envelope: Envelope): TrackedPublish;
  /**
   * Throws what `publish` would reject `envelope` itself with (encoding, size), without sending it:
   * for messages checked now and sent later (the outbox). Optional: a transport without it has no
   * such limits beyond the bus's own checks.
   */
  check?(envelope: Envelope): void;
  subscribe(spec: SubscriptionSpec, handler: DeliveryHandler): Promise<TransportSubscription>;
  listDeadLetters(group: string, options: { readonly limit: number }): Promise<DeadLetter[]>;
  /** Sends dead letters back to the subscription they failed in, with a fresh attempt count. */
  replayDeadLetters(group: string, options: ReplayOptions): Promise<number>;
  /**
   * Deletes a subscription's queue and delay queues with what they hold, refusing with
   * `SubscriptionInUseError` while a consumer is attached. Resolves the number of messages discarded.
   */
  deleteSubscription(spec: SubscriptionSpec): Promise<number>;
  /**
   * Whether the transport is connected to its broker now, and since when, for a readiness check
   * (`bus.healthCheck()`). Optional: a transport without it (the embedded broker) is always up.
   */
  connectionState?(): TransportConnectionState;
  /** Waits (up to `timeoutMs`) for pending publishes, then releases every resource. */
  close(timeoutMs: number): Promise<void>;
}

/** What {@link Transport.connectionState} reports. */
export interface TransportConnectionState {
  readonly connected: boolean;
  /** When it last connected, or lost (or had not yet made) its connection: ms since the epoch. */
  readonly since: number;
  /** While not connected: why its last attempt failed, when one did (no credentials in it). */
  readonly problem?: string;
}
