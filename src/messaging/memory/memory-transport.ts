import type { Envelope } from '../envelope.js';
import { assertEnvelope } from '../envelope-limits.js';
import { BusClosedError, connectWhenClosedError, SubscriptionInUseError } from '../errors.js';
import type {
  DeadLetter,
  DeliveryHandler,
  ReplayOptions,
  SubscriptionSpec,
  TrackedPublish,
  Transport,
  TransportSubscription,
} from '../transport.js';
import type { WireMessage } from '../wire.js';
import { MemoryBroker } from './memory-broker.js';

/** The settlement of a publish that was refused: there is none. */
const NEVER = new Promise<void>(() => {});

/** Options of the in-memory transport. */
export interface MemoryTransportOptions {
  /** The broker to use. @default the process-wide broker `default` (what `memory://` selects) */
  readonly broker?: MemoryBroker;
}

/**
 * The embedded transport: a connection to a {@link MemoryBroker} in this process. Use it for
 * development, tests and single-process deployments; nothing survives the process. It tracks the
 * settlement of what it publishes (`publishTracked`), so the outbox keeps each message's row until
 * its consumers are done with it: a process that dies first publishes it again after the restart.
 */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly broker: MemoryBroker;
  #closed = false;

  constructor(options: MemoryTransportOptions = {}) {
    this.broker = options.broker ?? MemoryBroker.named('default');
  }

  /** Nothing to connect to; a closed transport rejects with `BUS_CLOSED`, as on RabbitMQ. */
  async connect(): Promise<void> {
    if (this.#closed) throw connectWhenClosedError();
  }

  publish(envelope: Envelope): Promise<void> {
    if (this.#closed) return Promise.reject(new BusClosedError('transport'));
    try {
      // Envelopes that did not come through the bus are held to the same limits, as on RabbitMQ.
      assertEnvelope(envelope);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.broker.publish(envelope);
  }

  publishTracked(envelope: Envelope): TrackedPublish {
    if (this.#closed) return { confirmed: Promise.reject(new BusClosedError('transport')), settled: NEVER };
    try {
      assertEnvelope(envelope);
    } catch (error) {
      return { confirmed: Promise.reject(error), settled: NEVER };
    }
    return this.broker.publishTracked(envelope);
  }

  /** Throws what `publish` would reject `envelope` with (limits, encoding, size), without publishing it. */
  check(envelope: Envelope): void {
    assertEnvelope(envelope);
    this.broker.check(envelope);
  }

  /** Publishes bytes as a producer that knows nothing of Ferry would (for tests of foreign producers). */
  publishRaw(wire: WireMessage): Promise<void> {
    if (this.#closed) return Promise.reject(new BusClosedError('transport'));
    return this.broker.publishRaw(wire);
  }

  async subscribe(spec: SubscriptionSpec, handler: DeliveryHandler): Promise<TransportSubscription> {
    if (this.#closed) throw new BusClosedError('transport');
    return this.broker.attach(spec, handler);
  }

  async listDeadLetters(group: string, options: { readonly limit: number }): Promise<DeadLetter[]> {
    if (this.#closed) throw new BusClosedError('transport');
    return this.broker.listDeadLetters(group, options.limit);
  }

  /**
   * Refuses at once while a consumer is attached; waits for consumers closing to give back what
   * their handlers hold (as RabbitMQ's delete waits for their fence), then deletes.
   */
  async deleteSubscription(spec: SubscriptionSpec): Promise<number> {
    if (this.#closed) throw new BusClosedError('transport');
    for (;;) {
      const consumers = this.broker.consumersOf(spec.group, spec.pattern);
      if (consumers === 'open') throw new SubscriptionInUseError(spec.group, spec.pattern);
      if (consumers.length === 0) break;
      await Promise.all(consumers);
    }
    return this.broker.deleteQueue(spec.group, spec.pattern, spec.retryDelays);
  }

  async replayDeadLetters(group: string, options: ReplayOptions): Promise<number> {
    if (this.#closed) throw new BusClosedError('transport');
    return this.broker.replayDeadLetters(group, options);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
