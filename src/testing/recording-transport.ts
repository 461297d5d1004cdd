import type { Envelope } from '../messaging/envelope.js';
import {
  type DeadLetter,
  type Delivery,
  type DeliveryHandler,
  type DeliveryResult,
  type Outcome,
  type PendingOutcome,
  type ReplayOptions,
  type SubscriptionSpec,
  type TrackedPublish,
  type Transport,
  type TransportConnectionState,
  type TransportSubscription,
  whenDecided,
} from '../messaging/transport.js';

/** What a {@link RecordingTransport} reports. */
export interface TransportObserver {
  /** The transport accepted `envelope` (as JSON: what subscribers will get). */
  published(envelope: Envelope): void;
  /** A delivery to one of the bus's subscriptions began. */
  deliveryStarted(spec: SubscriptionSpec, delivery: Delivery): void;
  /** The bus decided the delivery's outcome (`undefined`: its handler chain broke; the broker requeues it). */
  deliveryDecided(spec: SubscriptionSpec, delivery: Delivery, outcome: Outcome | undefined): void;
}

/**
 * Wraps a transport to see what the test harness needs, without a hook in any transport: what it
 * accepted (the relay publishes through it too) and each delivery's outcome as the bus decided it,
 * dead-lettering included, at the moment it is decided.
 */
export class RecordingTransport implements Transport {
  readonly name: string;
  readonly inner: Transport;
  /** The inner transport's, recording as `publish` does: present when it has one. */
  readonly publishTracked?: (envelope: Envelope) => TrackedPublish;
  /** The inner transport's, when it has one (health checks read it). */
  readonly connectionState?: () => TransportConnectionState;
  readonly #observer: TransportObserver;

  constructor(inner: Transport, observer: TransportObserver) {
    this.inner = inner;
    this.name = inner.name;
    this.#observer = observer;
    if (typeof inner.connectionState === 'function') this.connectionState = inner.connectionState.bind(inner);
    if (typeof inner.publishTracked === 'function') {
      const publishTracked = inner.publishTracked.bind(inner);
      this.publishTracked = (envelope) => {
        const copy = jsonCopy(envelope);
        const tracked = publishTracked(envelope);
        const confirmed = tracked.confirmed.then(() => {
          if (copy !== undefined) this.#observer.published(copy);
        });
        return { confirmed, settled: tracked.settled };
      };
    }
  }

  connect(): Promise<void> {
    return this.inner.connect();
  }

  async publish(envelope: Envelope): Promise<void> {
    const copy = jsonCopy(envelope);
    await this.inner.publish(envelope);
    if (copy !== undefined) this.#observer.published(copy);
  }

  subscribe(spec: SubscriptionSpec, handler: DeliveryHandler): Promise<TransportSubscription> {
    const observer = this.#observer;
    return this.inner.subscribe(spec, (delivery) => {
      observer.deliveryStarted(spec, delivery);
      let result: DeliveryResult;
      try {
        result = handler(delivery);
      } catch (error) {
        observer.deliveryDecided(spec, delivery, undefined);
        throw error;
      }
      if (!(result instanceof Promise) && 'action' in result) {
        observer.deliveryDecided(spec, delivery, result);
        return result;
      }
      const pending: PendingOutcome = {
        whenDecided(onOutcome, onBroken) {
          whenDecided(
            result,
            (outcome) => {
              observer.deliveryDecided(spec, delivery, outcome);
              onOutcome(outcome);
            },
            (error) => {
              observer.deliveryDecided(spec, delivery, undefined);
              onBroken(error);
            },
          );
        },
      };
      return pending;
    });
  }

  listDeadLetters(group: string, options: { readonly limit: number }): Promise<DeadLetter[]> {
    return this.inner.listDeadLetters(group, options);
  }

  replayDeadLetters(group: string, options: ReplayOptions): Promise<number> {
    return this.inner.replayDeadLetters(group, options);
  }

  deleteSubscription(spec: SubscriptionSpec): Promise<number> {
    return this.inner.deleteSubscription(spec);
  }

  close(timeoutMs: number): Promise<void> {
    return this.inner.close(timeoutMs);
  }
}

/** Copied now: the publisher may change its objects once publish returns. Not JSON: the transport refuses it. */
function jsonCopy(envelope: Envelope): Envelope | undefined {
  try {
    return JSON.parse(JSON.stringify(envelope)) as Envelope;
  } catch {
    return undefined;
  }
}
