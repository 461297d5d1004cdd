import type { ChannelModel } from 'amqplib';
import { isFerryError } from '../errors/ferry-error.js';
import { type Logger, stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import { assertCloseTimeout } from '../messaging/close-timeout.js';
import type { Envelope } from '../messaging/envelope.js';
import { assertEnvelope } from '../messaging/envelope-limits.js';
import {
  BrokerConnectionError,
  BusClosedError,
  connectWhenClosedError,
  SubscriptionInUseError,
} from '../messaging/errors.js';
import type {
  DeadLetter,
  DeliveryHandler,
  ReplayOptions,
  SubscriptionSpec,
  Transport,
  TransportConnectionState,
  TransportSubscription,
} from '../messaging/transport.js';
import { redactUrl } from '../url/redact-url.js';
import { assertAmqpUrl } from './amqp-url.js';
import { encodeEnvelope } from './codec.js';
import { classifyConnectionError } from './connection-refusal.js';
import { AmqpConsumer } from './consumer.js';
import { deadLetterTurn, listDeadLetters, type ReplayProgress, replayDeadLetters } from './dead-letters.js';
import { isInequivalentExchangeError } from './inequivalent-exchange-error.js';
import { isInequivalentQueueError } from './inequivalent-queue-error.js';
import { MessageTooLargeError } from './message-too-large-error.js';
import { ConfirmPublisher, type PublisherStats } from './publisher.js';
import { settledWithin } from './settled-within.js';
import {
  declareExchange,
  deleteSubscriptionQueues,
  type QueueTypeMismatch,
  subscriptionTopology,
} from './topology.js';
import {
  type AmqpTransportOptions,
  type ResolvedAmqpOptions,
  resolveAmqpOptions,
} from './transport-options.js';

export { type AmqpTransportOptions, DEFAULT_AMQP_TRANSPORT_OPTIONS } from './transport-options.js';

/** amqplib's socket timeout for one connection attempt after the first connect. */
const SOCKET_TIMEOUT_MS = 10_000;

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

type State = 'idle' | 'connecting' | 'ready' | 'recovering' | 'closed';

/** A snapshot of the transport, for health checks and diagnosis. */
export interface AmqpTransportStatus {
  readonly state: State;
  readonly subscriptions: number;
  readonly publishes: PublisherStats;
}

/** Tries of one subscription's recovery whose queue keeps vanishing (404) before the connection is cycled. */
const RECOVER_ATTEMPTS = 10;

/**
 * The RabbitMQ transport (amqplib). Topology: a durable topic exchange, a durable queue per
 * subscription bound with its pattern, delay queues per retry level and a dead-letter queue per group.
 * On a connection loss it reconnects with backoff, redeclares the topology, resumes every
 * subscription and re-sends the publishes the broker had not confirmed.
 */
export class AmqpTransport implements Transport {
  readonly name = 'amqp';
  readonly #url: string;
  readonly #options: ResolvedAmqpOptions;
  readonly #logger: Logger;
  readonly #publisher: ConfirmPublisher;
  readonly #consumers = new Set<AmqpConsumer>();
  /** Queues found to be of the other type, each warned about once. */
  readonly #mismatchedQueues = new Set<string>();
  #connection: ChannelModel | undefined;
  #state: State = 'idle';
  /** When `#state` last became or left 'ready' (see connectionState). */
  #stateSince = Date.now();
  /** Why the last attempt to connect failed, while not connected. */
  #problem: string | undefined;
  #recovery: Promise<void> | undefined;
  /** The connection being set up, until it is made current or dropped. */
  #setup: Setup | undefined;
  /** Deletes of a subscription under way, by its queue: a subscribe called after one waits for it. */
  readonly #deleting = new Map<string, Promise<void>>();
  #wakeUp: (() => void) | undefined;
  #closing: Promise<void> | undefined;
  /** The first connect, which later calls of `connect` wait for. */
  #connecting: Promise<void> | undefined;

  constructor(options: AmqpTransportOptions) {
    assertAmqpUrl(options.url);
    this.#url = options.url;
    this.#options = resolveAmqpOptions(options);
    this.#logger = loggerOption('the amqp transport', options.logger) ?? stderrLogger;
    this.#publisher = new ConfirmPublisher({
      window: this.#options.publishWindow,
      maxBuffered: this.#options.maxBufferedPublishes,
      confirmTimeoutMs: this.#options.confirmTimeoutMs,
      maxMessageBytes: this.#options.maxMessageBytes,
      onChannelFailure: (reason) => this.#fail(reason),
    });
  }

  /** A getter, so that TypeScript does not narrow the state across awaits. */
  get #closed(): boolean {
    return this.#state === 'closed';
  }

  /** Connection state, live subscriptions and what the publisher holds. */
  status(): AmqpTransportStatus {
    return { state: this.#state, subscriptions: this.#consumers.size, publishes: this.#publisher.stats };
  }

  /** The broker URL with its password masked, for logs. */
  get displayUrl(): string {
    return redactUrl(this.#url);
  }

  /**
   * Connects (within `connectTimeoutMs`). Called again while connecting, it resolves with the first
   * call; once connected, at once. A transport closed, or whose first connect failed (it is closed
   * then), rejects with `BUS_CLOSED`: make another.
   */
  connect(): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(connectWhenClosedError());
    if (this.#state === 'idle') {
      this.#state = 'connecting';
      this.#connecting = this.#establish(Date.now() + this.#options.connectTimeoutMs);
    }
    return this.#connecting ?? Promise.resolve();
  }

  /**
   * Connects and brings everything up on the new connection: publishing channel and exchange, then
   * every subscription, then the re-sending of unconfirmed publishes. Any failure drops the
   * connection and starts over after a backoff; `deadline` bounds only the first connect.
   */
  async #establish(deadline: number | undefined): Promise<void> {
    const amqp = await import('amqplib');
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) return;
      let connection: ChannelModel | undefined;
      try {
        connection = await amqp.connect(this.#connectUrl(), {
          // The first connect's socket may not outlive its deadline (a host that never answers).
          timeout:
            deadline === undefined ? SOCKET_TIMEOUT_MS : clamp(deadline - Date.now(), 1, SOCKET_TIMEOUT_MS),
          clientProperties: { connection_name: this.#options.connectionName },
        });
        const current = connection;
        // What closes before the connection is made current: its 'close' alone is not heeded then
        // (see #onConnectionClosed), and a step that swallows a closed channel (the fence's release)
        // let the setup carry on to a dead connection, which nothing would ever recover.
        const setup: Setup = {};
        this.#setup = setup;
        current.on('error', () => {
          // Followed by 'close', which drives recovery.
        });
        current.on('close', () => {
          setup.broken ??= 'the connection closed';
          this.#onConnectionClosed(current);
        });
        current.on('blocked', (reason: string) =>
          this.#logger.warn(`RabbitMQ blocked publishing on this connection: ${reason}`),
        );
        current.on('unblocked', () => this.#logger.info('RabbitMQ unblocked publishing'));
        const channel = await this.#publisher.attach(current);
        channel.once('close', () => {
          setup.broken ??= 'the publishing channel closed';
        });
        await declareExchange(channel, this.#options.exchange);
        for (const consumer of [...this.#consumers]) await this.#reattach(consumer, current);
        if (this.#closed) {
          await current.close().catch(() => {});
          return;
        }
        if (setup.broken !== undefined) throw new SetupBrokenError(setup.broken);
        this.#setup = undefined;
        this.#connection = current;
        this.#state = 'ready';
        this.#stateSince = Date.now();
        this.#problem = undefined;
        this.#publisher.resume(channel);
        if (attempt > 0 || deadline === undefined) {
          this.#logger.warn(
            `connected to RabbitMQ at ${this.displayUrl} (${this.#consumers.size} subscriptions resumed)`,
          );
        }
        return;
      } catch (error) {
        this.#setup = undefined;
        await connection?.close().catch(() => {});
        // Its subscriptions' channels are dead: nothing may act on them until the next connection's.
        // (The publisher's never became current: only a finished setup resumes it.)
        for (const consumer of this.#consumers) consumer.detach();
        if (this.#closed) return;
        // Refused credentials, a missing vhost, missing permissions or an exchange that exists with
        // other properties do not heal by waiting: the first connect fails at once; a recovering
        // connection keeps trying (they may be fixed while the service runs) but says what is wrong.
        const permanent = isInequivalentExchangeError(error)
          ? error
          : await classifyConnectionError(error, this.#url, this.displayUrl);
        if (this.#closed) return;
        // For health reports: never with the password, should a message quote the URL.
        this.#problem = (permanent?.message ?? (error instanceof Error ? error.message : String(error)))
          .split(this.#url)
          .join(this.displayUrl);
        if (permanent !== undefined && deadline !== undefined) {
          this.#state = 'closed';
          throw permanent;
        }
        const unavailable = () => {
          this.#state = 'closed';
          return new BrokerConnectionError(
            `could not connect to RabbitMQ at ${this.displayUrl} within ${this.#options.connectTimeoutMs} ms: ${(error as Error).message}`,
            { cause: error },
          );
        };
        if (deadline !== undefined && Date.now() >= deadline) throw unavailable();
        // The first connect never sleeps past its deadline.
        const delay =
          deadline === undefined
            ? this.#backoff(attempt)
            : Math.min(this.#backoff(attempt), deadline - Date.now());
        if (permanent !== undefined) this.#logger.error(`${permanent.message}; retrying in ${delay} ms`);
        else
          this.#logger.warn(
            `RabbitMQ at ${this.displayUrl} unavailable (${(error as Error).message}); retrying in ${delay} ms`,
          );
        await this.#sleep(delay);
        if (deadline !== undefined && Date.now() >= deadline && !this.#closed) throw unavailable();
      }
    }
  }

  /**
   * A subscription whose queue now exists with arguments of neither queue type (redeclared by
   * something else meanwhile) cannot attach however often the connection is recycled: it is dropped,
   * and said so, instead of holding every other subscription in a reconnect loop.
   */
  async #reattach(
    consumer: AmqpConsumer,
    connection: ChannelModel,
    attach = () => consumer.attach(connection),
  ): Promise<void> {
    try {
      await attach();
    } catch (error) {
      if (!isInequivalentQueueError(error)) throw error;
      this.#logger.error(
        `subscription ${consumer.spec.pattern} of group ${consumer.spec.group} stopped: ${error.message}`,
      );
      await consumer.close(0);
    }
  }

  /** Once per queue and transport, however often the topology is declared again. */
  #warnQueueType({ queue, existing, requested }: QueueTypeMismatch): void {
    if (this.#mismatchedQueues.has(queue)) return;
    this.#mismatchedQueues.add(queue);
    this.#logger.warn(
      `queue ${queue} exists as a ${existing} queue but queueType is '${requested}': using it as it is. ` +
        `To make it ${requested}, drain it (stop what publishes to it and let its consumers empty it; replay or move dead letters first), ` +
        `delete it (rabbitmqctl delete_queue, or the management UI) and restart the service so that Ferry declares it again; ` +
        `or set queueType: '${existing}' to keep it and silence this warning`,
      { queue, existing, requested },
    );
  }

  /** amqplib reads the heartbeat from the URL's query only. */
  #connectUrl(): string {
    const url = new URL(this.#url);
    if (!url.searchParams.has('heartbeat'))
      url.searchParams.set('heartbeat', String(this.#options.heartbeatSeconds));
    return url.toString();
  }

  #backoff(attempt: number): number {
    const { initialDelayMs, maxDelayMs } = this.#options.reconnect;
    const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 30));
    return Math.round(initialDelayMs / 2 + Math.random() * (ceiling - initialDelayMs / 2));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #onConnectionClosed(connection: ChannelModel): void {
    if (connection !== this.#connection || this.#state !== 'ready') return;
    this.#connection = undefined;
    this.#state = 'recovering';
    this.#stateSince = Date.now();
    this.#publisher.detach();
    for (const consumer of this.#consumers) consumer.detach();
    this.#logger.warn(
      `lost the RabbitMQ connection; reconnecting (${this.#publisher.pending} publishes held for re-sending)`,
    );
    this.#recovery = this.#establish(undefined).catch((error: unknown) => {
      this.#logger.error('RabbitMQ recovery stopped', { error: String(error) });
    });
  }

  /**
   * A queue of one subscription was deleted while it ran: that subscription declares its queues
   * again (and consumes again on a new channel, if the broker cancelled its consumer). The connection
   * stays up, so the other subscriptions' handlers keep their deliveries. Should that fail on the
   * live connection, the connection is cycled, as for a failed channel.
   */
  #recoverSubscription(consumer: AmqpConsumer, reason: string): void {
    const connection = this.#connection;
    if (connection === undefined || this.#state !== 'ready') return; // the reconnect attaches it
    this.#logger.warn(`${reason}; declaring the queues of that subscription again`);
    void this.#whileQueueGone(connection, () =>
      this.#reattach(consumer, connection, () => consumer.recover(connection)),
    ).catch((error: unknown) => {
      if (connection !== this.#connection) return;
      this.#fail(
        `${reason}, and declaring it again failed (${error instanceof Error ? error.message : String(error)})`,
      );
    });
  }

  /**
   * Runs `attach` again while it fails with a 404 on the live `connection` (the subscription's queues
   * deleted again between its declare and its consume or bind), up to RECOVER_ATTEMPTS, a little later
   * each time; rejects with its last failure, or with the first on a connection no longer live.
   */
  async #whileQueueGone(connection: ChannelModel, attach: () => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await attach();
      } catch (error) {
        const again =
          connection === this.#connection &&
          (error as { code?: unknown }).code === 404 &&
          attempt < RECOVER_ATTEMPTS;
        if (!again) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt).unref());
      }
    }
  }

  /**
   * A channel failed on a live connection: recover by cycling the whole connection. On one still
   * being set up (a subscription's channel closed after it consumed), the setup starts over.
   */
  #fail(reason: string): void {
    const connection = this.#connection;
    if (connection === undefined || this.#state !== 'ready') {
      if (this.#setup !== undefined) this.#setup.broken ??= reason;
      return;
    }
    this.#logger.warn(`${reason}; reconnecting to recover`);
    connection.close().catch(() => {});
  }

  /** Connected now (not connecting, recovering or closed), since when, and why not. */
  connectionState(): TransportConnectionState {
    const connected = this.#state === 'ready';
    return {
      connected,
      since: this.#stateSince,
      ...(connected || this.#problem === undefined ? {} : { problem: this.#problem }),
    };
  }

  // A bound field, not a method: it reaches the publisher's private state even when called through an
  // object that inherits from the transport (a wrapper made with Object.create, as tests do).
  readonly check = (envelope: Envelope): void => {
    assertEnvelope(envelope);
    const { content, options } = encodeEnvelope(envelope);
    if (content.length > this.#publisher.maxMessageBytes) {
      throw new MessageTooLargeError(
        (options.messageId as string | undefined) ?? envelope.id,
        content.length,
        this.#publisher.maxMessageBytes,
      );
    }
  };

  publish(envelope: Envelope): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(new BusClosedError('transport'));
    // Never connected: nothing would send it (while connecting or recovering, it waits for the channel).
    if (this.#state === 'idle') {
      return Promise.reject(
        new BrokerConnectionError(
          'the transport is not connected: call connect() before publishing (createBus connects it)',
        ),
      );
    }
    let encoded: ReturnType<typeof encodeEnvelope>;
    try {
      // Envelopes that did not come through the bus are held to the same limits.
      assertEnvelope(envelope);
      encoded = encodeEnvelope(envelope);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#publisher.publish(this.#options.exchange, envelope.type, encoded.content, encoded.options);
  }

  async subscribe(spec: SubscriptionSpec, handler: DeliveryHandler): Promise<TransportSubscription> {
    if (this.#state === 'closed') throw new BusClosedError('transport');
    const consumer = new AmqpConsumer(spec, handler, {
      exchange: this.#options.exchange,
      queueType: this.#options.queueType,
      onQueueTypeMismatch: (mismatch) => this.#warnQueueType(mismatch),
      maxRedeliveries: this.#options.maxRedeliveries,
      publisher: this.#publisher,
      logger: this.#logger,
      onChannelFailure: (reason) => this.#fail(reason),
      onQueueGone: (c, reason) => this.#recoverSubscription(c, reason),
      onClosed: (c) => this.#consumers.delete(c),
    });
    this.#consumers.add(consumer);
    // A delete of the same subscription called before on this transport runs first.
    const deleting = this.#deleting.get(consumer.topology.queue);
    if (deleting !== undefined) await deleting;
    const connection = this.#connection;
    if (connection === undefined) return consumer; // recovery attaches it
    try {
      // Its queues deleted under it by what its fence does not keep out (an operator, an older
      // Ferry): declared again, as a consumer's queue deleted later is.
      await this.#whileQueueGone(connection, () => consumer.attach(connection));
    } catch (error) {
      // Recovery attaches it on the next connection.
      if (connection !== this.#connection) return consumer;
      // A failure on a connection that is still up is the subscription's own (for instance a queue
      // declared earlier with other arguments): report it.
      this.#consumers.delete(consumer);
      throw (error as { code?: unknown }).code === 404
        ? new BrokerConnectionError(
            `subscribing ${describeSpec(spec)}: its queues were deleted while they were declared, ${RECOVER_ATTEMPTS} times in a row (by something other than Ferry's deleteSubscription, which waits for a subscribe)`,
            { cause: error },
          )
        : await this.#brokerFailure(error, connection, `subscribing ${describeSpec(spec)}`);
    }
    return consumer;
  }

  /**
   * What a call that failed on `connection` rejects with: a FerryError, whatever amqplib threw. A 403
   * (the user may not configure, read or write a queue) is the permission refusal connect reports; a
   * connection lost meanwhile, `BROKER_UNAVAILABLE`.
   */
  async #brokerFailure(error: unknown, connection: ChannelModel, what: string): Promise<unknown> {
    if (isFerryError(error)) return error;
    const text = error instanceof Error ? error.message : String(error);
    // Closed under it (its bus's close stopped waiting for it): nothing can call it again here.
    if (this.#state === 'closed') return new BusClosedError('transport');
    if (connection !== this.#connection) {
      return new BrokerConnectionError(
        `${what}: the connection to RabbitMQ was lost meanwhile (${text}); what it had done stands, call it again`,
        { cause: error },
      );
    }
    const refusal = await classifyConnectionError(error, this.#url, this.displayUrl).catch(() => undefined);
    return refusal ?? new BrokerConnectionError(`${what}: ${text}`, { cause: error });
  }

  async #readyConnection(): Promise<ChannelModel> {
    if (this.#state === 'closed') throw new BusClosedError('transport');
    if (this.#connection === undefined) await this.#recovery;
    if (this.#connection === undefined) throw new BrokerConnectionError('not connected to RabbitMQ');
    return this.#connection;
  }

  /** Waits for the listings and replays of the group asked for before it in this process (see {@link deadLetterTurn}). */
  listDeadLetters(group: string, options: { readonly limit: number }): Promise<DeadLetter[]> {
    return deadLetterTurn(this.#brokerKey(), group, async () => {
      const connection = await this.#readyConnection();
      try {
        return await listDeadLetters(connection, group, options.limit);
      } catch (error) {
        throw this.#cutShort(error, connection, `listing the dead letters of ${group}`);
      }
    });
  }

  async deleteSubscription(spec: SubscriptionSpec): Promise<number> {
    // Decided as it is called, as the memory broker does: a subscribe of this transport called
    // before (still declaring its queues, under a fence its own connection does not keep out) is
    // counted, and one called after waits for this delete to end (see subscribe).
    // One closing is waited for: it gives back what its handlers hold, then the delete counts it.
    const queue = subscriptionTopology(spec).queue;
    const closing: Promise<void>[] = [];
    for (const consumer of this.#consumers) {
      if (consumer.topology.queue !== queue) continue;
      if (consumer.closing === undefined) throw new SubscriptionInUseError(spec.group, spec.pattern);
      closing.push(consumer.closing);
    }
    const deleting = (async () => {
      await Promise.all(closing);
      const connection = await this.#readyConnection();
      try {
        return await deleteSubscriptionQueues(connection, spec);
      } catch (error) {
        throw await this.#brokerFailure(error, connection, `deleting subscription ${describeSpec(spec)}`);
      }
    })();
    const ended = deleting.then(
      () => undefined,
      () => undefined,
    );
    this.#deleting.set(queue, ended);
    void ended.then(() => {
      if (this.#deleting.get(queue) === ended) this.#deleting.delete(queue);
    });
    return deleting;
  }

  /** Waits for the listings and replays of the group asked for before it in this process (see {@link deadLetterTurn}). */
  replayDeadLetters(group: string, options: ReplayOptions): Promise<number> {
    return deadLetterTurn(this.#brokerKey(), group, async () => {
      const connection = await this.#readyConnection();
      const progress: ReplayProgress = { replayed: 0, sending: false, removing: false };
      try {
        return await replayDeadLetters(connection, this.#publisher, group, options, this.#logger, progress);
      } catch (error) {
        const inFlight = progress.sending
          ? ', and the letter being sent back may have gone out too, although it is still listed'
          : progress.removing
            ? ', the last of them possibly still listed: its removal may not have reached the broker'
            : '';
        const what = `replaying the dead letters of ${group} (${progress.replayed} replayed${inFlight})`;
        throw this.#cutShort(error, connection, what);
      }
    });
  }

  /**
   * The error of a listing or replay on `connection` that failed with `error`: amqplib's own ("Channel
   * ended", "Channel closed") become `BUS_CLOSED` when the transport closed that connection, and
   * `BROKER_UNAVAILABLE` when it was lost. The letters the channel held went back to the queue.
   */
  #cutShort(error: unknown, connection: ChannelModel, what: string): unknown {
    if (isFerryError(error) || connection === this.#connection) return error;
    const held = 'the letters it held went back to the dead-letter queue, none lost, perhaps out of order';
    const detail = `the connection closed while ${what}; ${held}`;
    if (this.#closing !== undefined || this.#state === 'closed') {
      return new BusClosedError('transport', { detail, cause: error });
    }
    return new BrokerConnectionError(`lost the RabbitMQ connection while ${what}; ${held}`, { cause: error });
  }

  /**
   * The broker and vhost of the URL, without credentials: transports of one process on the same
   * vhost share their dead-letter turns. Another spelling of the host (a name, its address) is
   * another key.
   */
  #brokerKey(): string {
    const url = new URL(this.#url);
    const port = url.port || (url.protocol.toLowerCase() === 'amqps:' ? '5671' : '5672');
    return `${url.hostname}:${port}${url.pathname.length <= 1 ? '/' : url.pathname}`;
  }

  /**
   * Closes every subscription (waiting for their handlers), waits for unconfirmed publishes, then
   * closes the connection, all within `timeoutMs` (a finite number of ms, else `INVALID_OPTIONS`).
   * A broker that stops answering without closing TCP (a network partition) never confirms the
   * close: past the timeout the socket is dropped instead, and the broker requeues what it held.
   */
  close(timeoutMs: number): Promise<void> {
    try {
      assertCloseTimeout(timeoutMs, 'timeoutMs');
    } catch (error) {
      return Promise.reject(error);
    }
    this.#closing ??= this.#close(timeoutMs);
    return this.#closing;
  }

  async #close(timeoutMs: number): Promise<void> {
    if (this.#state === 'closed') return;
    const deadline = Date.now() + timeoutMs;
    const consumers = [...this.#consumers];
    await Promise.all(consumers.map((c) => c.close(timeoutMs)));
    await this.#publisher.close(Math.max(0, deadline - Date.now()));
    this.#state = 'closed';
    this.#wakeUp?.();
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection !== undefined && !(await settledWithin(connection.close(), deadline - Date.now()))) {
      dropSocket(connection);
    }
  }
}

/** A connection being set up: why it cannot be used, once something of it closed. */
interface Setup {
  broken?: string;
}

/** Something of a connection closed while it was being set up: it is dropped and made again. */
class SetupBrokenError extends Error {
  constructor(what: string) {
    super(`${what} while Ferry was setting it up`);
    this.name = 'SetupBrokenError';
  }
}

/**
 * Destroys the socket of a connection whose close the broker did not confirm in time. With an
 * error, so that amqplib tears the connection down as for any socket failure (its channels closed,
 * its heartbeat timers stopped) instead of waiting for the broker's close-ok forever.
 */
function dropSocket(connection: ChannelModel): void {
  const stream = (connection.connection as { stream?: { destroy?: (error: Error) => void } }).stream;
  stream?.destroy?.(new Error('the broker did not confirm the close in time'));
}

/** `"pattern" for group "group"`, for messages. */
function describeSpec(spec: SubscriptionSpec): string {
  return `${JSON.stringify(spec.pattern)} for group ${JSON.stringify(spec.group)}`;
}
