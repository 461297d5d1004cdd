import { randomUUID } from 'node:crypto';
import type { Channel, ChannelModel, ConsumeMessage, Message } from 'amqplib';
import type { Logger } from '../logging/logger.js';
import { cutReason } from '../messaging/dead-letter-reason.js';
import { isUnroutableError } from '../messaging/errors.js';
import { InFlight } from '../messaging/in-flight.js';
import { compilePattern } from '../messaging/topic.js';
import {
  type DeadLetterReason,
  type Delivery,
  type DeliveryHandler,
  type DeliveryResult,
  type Outcome,
  type SubscriptionSpec,
  whenDecided,
} from '../messaging/transport.js';
import { decodeWireMessage, HEADER, typeOf } from '../messaging/wire.js';
import { closeChannel } from './close-channel.js';
import { fromPublisher, republishOptions, wireMessageOf } from './codec.js';
import { DEAD_LETTER_HEADER } from './dead-letters.js';
import type { ConfirmPublisher } from './publisher.js';
import { settledWithin } from './settled-within.js';
import {
  declareSubscription,
  FENCE_WAIT_MS,
  holdFence,
  type QueueType,
  type QueueTypeMismatch,
  type SubscriptionTopology,
  subscriptionTopology,
} from './topology.js';

export interface ConsumerContext {
  readonly exchange: string;
  readonly queueType: QueueType;
  /** A queue of this subscription exists as the other queue type and is used as it is. */
  readonly onQueueTypeMismatch: (mismatch: QueueTypeMismatch) => void;
  /** Redeliveries in a row of a message nobody settled, before it is dead-lettered. */
  readonly maxRedeliveries: number;
  readonly publisher: ConfirmPublisher;
  readonly logger: Logger;
  /** The consumer's channel failed on a live connection; the transport recovers the connection. */
  readonly onChannelFailure: (reason: string) => void;
  /**
   * A queue of this subscription is gone (deleted while it ran): the transport declares its queues
   * again with {@link AmqpConsumer.recover}, leaving the connection and the other subscriptions alone.
   */
  readonly onQueueGone: (consumer: AmqpConsumer, reason: string) => void;
  /** The consumer closed for good and must not be re-attached. */
  readonly onClosed: (consumer: AmqpConsumer) => void;
}

/** How long a message whose retry could not be scheduled is held before it is requeued. */
const REQUEUE_DELAY_MS = 1000;
/**
 * How much longer than its `closeTimeoutMs` a close waits for moves under way when its wait for the
 * handlers ends (a retry, a dead letter, a stamped or counted copy sent, its confirm awaited): the
 * message then gets its ack, rather than go back to the queue beside its copy.
 */
export const MOVE_GRACE_MS = 1000;
/** How often an idle consumer looks for redelivered messages another process left untried. */
const REDELIVERED_CHECK_MS = 10_000;

/** A handler run still deciding; `abandoned` once the consumer's close stopped waiting for it. */
interface Undecided {
  abandoned: boolean;
}

/**
 * One subscription on RabbitMQ: its own channel with prefetch = concurrency, its queue, delay queues
 * and the group's dead-letter queue. A message is acknowledged only after its outcome is safe: the
 * handler succeeded, or the copy sent to a delay or dead-letter queue was confirmed by the broker.
 */
export class AmqpConsumer {
  readonly spec: SubscriptionSpec;
  readonly #matches: (type: string) => boolean;
  readonly topology: SubscriptionTopology;
  readonly #handler: DeliveryHandler;
  readonly #context: ConsumerContext;
  #channel: Channel | undefined;
  #consumerTag: string | undefined;
  readonly #inFlight = new InFlight();
  /**
   * Once its close stopped waiting for its handlers: whether some were still running, given up on
   * (and those to tell of it, see `close`).
   */
  #gaveUp: boolean | undefined = undefined;
  readonly #onGiveUp: (() => void)[] = [];
  /** Moves under way: a copy of a message sent, its confirm awaited, the original's ack to follow. */
  readonly #moves = new InFlight();
  /** Handler runs whose outcome is not known yet. */
  readonly #undecided = new Set<Undecided>();
  #closed = false;
  /** Handlers of subscription-queue deliveries running now. */
  #running = 0;
  /** Redelivered messages of the subscription queue being moved to the redelivered queue. */
  #moving = 0;
  readonly #idleWaiters: (() => void)[] = [];
  /** Redelivered messages are being tried: new deliveries wait in `#held`. */
  #trying = false;
  #trial: Promise<void> | undefined;
  #tryAgain = false;
  readonly #held: { readonly channel: Channel; readonly message: Message }[] = [];
  #watch: ReturnType<typeof setInterval> | undefined;
  /** Messages waiting out {@link REQUEUE_DELAY_MS} before they are given back, still held. */
  #requeuing = 0;
  /**
   * Channels whose consumer the broker cancelled: kept open until the messages they delivered are
   * settled (their acks go on the channel that delivered them), then closed.
   */
  readonly #retired = new Set<Channel>();
  #recovering: Promise<void> | undefined;
  #closeDone: Promise<void> | undefined;
  /** The connection it last attached on, until that is lost (its close takes the fence there). */
  #connection: ChannelModel | undefined;
  #recoverAgain = false;

  constructor(spec: SubscriptionSpec, handler: DeliveryHandler, context: ConsumerContext) {
    this.spec = spec;
    this.#matches = compilePattern(spec.pattern);
    this.topology = subscriptionTopology(spec);
    this.#handler = handler;
    this.#context = context;
  }

  /** Declares the topology on `connection` and starts consuming. Called again after every reconnect. */
  async attach(connection: ChannelModel): Promise<void> {
    if (this.#closed) return;
    // Held until it consumes: a delete of another process waits for it, then counts this consumer.
    // Not had within its wait (another process froze holding it), it goes on without.
    const release = await holdFence(connection, this.topology);
    try {
      await this.#attach(connection);
    } finally {
      await release?.();
    }
  }

  async #attach(connection: ChannelModel): Promise<void> {
    this.#connection = connection;
    await declareSubscription(connection, this.#context.exchange, this.spec, this.topology, this.#context);
    const channel = await connection.createChannel();
    channel.on('error', () => {
      // Reported through 'close' and the failing call; a listener keeps the error from crashing the process.
    });
    // A channel the broker closes before it consumes (a 404: the queue deleted again meanwhile) fails
    // this attach, which says so: it is no failure of a live consumer, to recover by a reconnect.
    let consuming = false;
    try {
      await channel.prefetch(this.spec.concurrency);
      channel.on('close', () => {
        if (channel !== this.#channel || !consuming) return;
        this.#channel = undefined;
        if (!this.#closed)
          this.#context.onChannelFailure(`the channel of queue ${this.topology.queue} closed`);
      });
      this.#channel = channel;
      const { consumerTag } = await channel.consume(
        this.topology.queue,
        (message) => this.#onMessage(channel, message),
        {
          noAck: false,
        },
      );
      this.#consumerTag = consumerTag;
      consuming = true;
      // Left over by a consumer that stopped during a trial, in this process or another.
      this.#tryRedelivered();
      this.#watch ??= setInterval(() => void this.#checkRedelivered(), REDELIVERED_CHECK_MS);
      this.#watch.unref();
    } catch (error) {
      if (channel === this.#channel) this.#channel = undefined;
      await closeChannel(channel);
      throw error;
    }
    if (this.#closed) {
      this.#channel = undefined;
      await closeChannel(channel);
    }
  }

  /** Another process moved messages to the redelivered queue and stopped before trying them. */
  async #checkRedelivered(): Promise<void> {
    const channel = this.#channel;
    if (channel === undefined || this.#closed || this.#trial !== undefined) return;
    try {
      const { messageCount } = await channel.checkQueue(this.topology.redeliveredQueue);
      if (messageCount > 0) this.#tryRedelivered();
    } catch {
      // The channel closed (recovery redeclares the queue) or is closing.
    }
  }

  /** Forgets the channel of a lost connection; unacknowledged messages come back from the broker. */
  detach(): void {
    this.#connection = undefined;
    this.#channel = undefined;
    this.#retired.clear();
  }

  /**
   * Declares the subscription's queues again on `connection` after one of them was deleted, and
   * consumes again if the broker cancelled the consumer.
   */
  recover(connection: ChannelModel): Promise<void> {
    // One at a time (two attaches would consume on two channels); asked again meanwhile, it runs once
    // more after, so that a consumer cancelled during a declare-only round is attached again.
    if (this.#recovering !== undefined) {
      this.#recoverAgain = true;
      return this.#recovering;
    }
    this.#recovering = (async () => {
      do {
        this.#recoverAgain = false;
        if (this.#closed) return;
        if (this.#channel === undefined) await this.attach(connection);
        else await this.#declare(connection);
      } while (this.#recoverAgain);
    })().finally(() => {
      this.#recovering = undefined;
    });
    return this.#recovering;
  }

  /** Declares the queues again (the consumer still consumes), under the fence as an attach. */
  async #declare(connection: ChannelModel): Promise<void> {
    const release = await holdFence(connection, this.topology);
    try {
      await declareSubscription(connection, this.#context.exchange, this.spec, this.topology, this.#context);
    } finally {
      await release?.();
    }
  }

  #onMessage(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer, typically because the queue was deleted: declare it again
      // and consume on a new channel. The old one stays open until what it delivered is settled.
      if (channel === this.#channel && !this.#closed) {
        this.#channel = undefined;
        this.#consumerTag = undefined;
        this.#retired.add(channel);
        this.#closeRetiredIfIdle();
        this.#context.onQueueGone(this, `the broker cancelled the consumer of queue ${this.topology.queue}`);
      }
      return;
    }
    if (message.fields.redelivered) {
      // Its consumer stopped while holding it, maybe with other messages: any of them may have
      // crashed it. None runs here; each waits in the redelivered queue to be tried alone.
      this.#moving++;
      void this.#count(channel, message, this.topology.redeliveredQueue).then(() => {
        if (--this.#moving === 0) this.#wakeIdle();
        this.#tryRedelivered();
      });
      return;
    }
    if (needsIdentity(message)) {
      // A plain producer's message without an id or a time: given them durably before it runs.
      this.#moving++;
      void this.#stamp(channel, message).then(() => {
        if (--this.#moving === 0) this.#wakeIdle();
      });
      return;
    }
    if (this.#trying) this.#held.push({ channel, message });
    else this.#start(channel, message);
  }

  /**
   * Sends `message` back to the end of its queue with the id and time it is given now, then acks
   * it: the copy runs under them, and so do its retries and its dead letter. Given only in memory,
   * they were lost when the broker itself gave the message back (a closed connection, a crash):
   * it came again under another id, and the inbox ran it beside its first run. The copy and the ack
   * are still two steps: a connection lost after the copy's confirm and before the ack gives the
   * original back, to be given a second id (documented; only a producer's own id closes that).
   */
  async #stamp(channel: Channel, message: Message): Promise<void> {
    this.#inFlight.begin();
    try {
      const delivery = this.#decode(message);
      const headers = { [HEADER.routingKey]: typeOf(wireMessageOf(message)) };
      await this.#move(channel, message, () =>
        this.#context.publisher.move(
          this.topology.queue,
          message.content,
          republishOptions(message, headers, identityOf(delivery)),
        ),
      );
    } catch (error) {
      this.#context.logger.warn(
        `could not give an id to a message without one on queue ${this.topology.queue}; it will be delivered again`,
        { error: String(error) },
      );
      this.#requeueLater(channel, message);
      this.#redeclareIfGone(error);
    } finally {
      this.#done();
    }
  }

  #start(channel: Channel, message: Message): void {
    this.#running++;
    void this.#run(channel, message).then(() => {
      if (--this.#running === 0) this.#wakeIdle();
    });
  }

  #wakeIdle(): void {
    for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /** Runs the handler on `message` and settles it; resolves once it is settled (or left to requeue). */
  #run(channel: Channel, message: Message): Promise<void> {
    this.#inFlight.begin();
    const delivery = this.#decode(message);
    // Taken before the handler, which could write to the message it is handed.
    const given = identityOf(delivery);
    const run: Undecided = { abandoned: false };
    this.#undecided.add(run);
    return new Promise((resolve) => {
      const ignored = (): boolean => {
        this.#undecided.delete(run);
        if (!run.abandoned) return false;
        this.#context.logger.debug(
          `ignored the outcome of message ${String(message.properties.messageId)} on queue ${this.topology.queue}: its subscription closed without waiting for it, and it went back to the queue`,
        );
        this.#done();
        resolve();
        return true;
      };
      const broken = (error: unknown) => {
        if (ignored()) return;
        this.#context.logger.error(`handler chain failed unexpectedly on queue ${this.topology.queue}`, {
          error: String(error),
        });
        this.#requeueLater(channel, message);
        this.#done();
        resolve();
      };
      let result: DeliveryResult;
      try {
        result = this.#handler(delivery);
      } catch (error) {
        broken(error);
        return;
      }
      whenDecided(
        result,
        (outcome) => {
          if (!ignored()) void this.#settle(channel, message, given, outcome).then(resolve);
        },
        broken,
      );
    });
  }

  async #settle(
    channel: Channel,
    message: Message,
    given: Identity | undefined,
    outcome: Outcome,
  ): Promise<void> {
    try {
      if (outcome.action === 'retry') {
        await this.#move(channel, message, () =>
          this.#scheduleRetry(message, given, outcome.attempt, outcome.delayMs),
        );
      } else if (outcome.action === 'dead-letter') {
        await this.#move(channel, message, () =>
          this.#deadLetter(message, given, outcome.reason, outcome.attempts),
        );
      } else this.#ack(channel, message);
    } catch (error) {
      this.#context.logger.warn(
        `could not move message ${String(message.properties.messageId)} out of queue ${this.topology.queue}; it will be delivered again`,
        { error: String(error) },
      );
      this.#requeueLater(channel, message);
      this.#redeclareIfGone(error);
    } finally {
      this.#done();
    }
  }

  /**
   * Counts one more redelivery in a row of `message` and sends it to the end of `target` with the
   * count (and its type, which the routing key to the queue no longer says), or past the limit to the
   * dead-letter queue. The copy must never run while the broker could still hand back the original:
   * after the ack, a round trip on the same channel (the broker handles a channel's frames in order)
   * proves the ack arrived, before any copy is tried in this process.
   */
  async #count(channel: Channel, message: Message, target: string): Promise<void> {
    this.#inFlight.begin();
    const redeliveries = redeliveriesOf(message) + 1;
    const limit = this.#context.maxRedeliveries;
    const delivery = this.#decode(message);
    try {
      if (redeliveries > limit) {
        const attempts = delivery.ok ? delivery.message.attempt : delivery.attempt;
        const reason: DeadLetterReason = {
          kind: 'redelivered',
          message: `delivered ${redeliveries} times in a row to a consumer that stopped (crashed, was killed or lost its connection) before settling it`,
        };
        this.#context.logger.error(
          `message ${String(message.properties.messageId)} on queue ${this.topology.queue} went to the dead-letter queue: ${reason.message}`,
        );
        await this.#move(channel, message, () =>
          this.#deadLetter(message, identityOf(delivery), reason, attempts),
        );
      } else {
        const headers = {
          [HEADER.redeliveries]: redeliveries,
          [HEADER.routingKey]: typeOf(wireMessageOf(message)),
        };
        await this.#move(channel, message, () =>
          this.#context.publisher.move(
            target,
            message.content,
            republishOptions(message, headers, identityOf(delivery)),
          ),
        );
      }
      await channel.prefetch(this.spec.concurrency);
    } catch (error) {
      this.#context.logger.warn(
        `could not move redelivered message ${String(message.properties.messageId)} on queue ${this.topology.queue}; it will be delivered again`,
        { error: String(error) },
      );
      this.#requeueLater(channel, message);
      this.#redeclareIfGone(error);
    } finally {
      this.#done();
    }
  }

  /**
   * Tries the redelivered messages one at a time, each alone in this process: handlers of new
   * deliveries wait, running ones finish first, and a message is fetched (basic.get) only when it can
   * start at once. So a message that comes back from the redelivered queue was running alone when its
   * consumer stopped: it is counted, while the others held at that moment come back through the
   * subscription queue and are moved without running.
   */
  #tryRedelivered(): void {
    if (this.#trial !== undefined) {
      this.#tryAgain = true;
      return;
    }
    this.#trying = true;
    this.#trial = this.#trials()
      .catch((error: unknown) => {
        this.#context.logger.warn(`could not try the redelivered messages of queue ${this.topology.queue}`, {
          error: String(error),
        });
      })
      .finally(() => {
        this.#trial = undefined;
        this.#trying = false;
        for (const { channel, message } of this.#held.splice(0)) {
          // A message held on a lost channel comes back from the broker on the new one; one held by a
          // closing consumer goes back to the queue when its channel closes.
          if (channel === this.#channel && !this.#closed) this.#start(channel, message);
        }
      });
  }

  async #trials(): Promise<void> {
    do {
      this.#tryAgain = false;
      for (;;) {
        // Nothing else runs meanwhile, and no move of this process is unfinished: a trial that crashed
        // the process before a move's ack reached the broker would leave that message twice.
        while (this.#running > 0 || this.#moving > 0) {
          await new Promise<void>((wake) => this.#idleWaiters.push(wake));
        }
        const channel = this.#channel;
        if (channel === undefined || this.#closed) return;
        const message = await channel.get(this.topology.redeliveredQueue, { noAck: false });
        if (message === false) break;
        if (message.fields.redelivered) await this.#count(channel, message, this.topology.redeliveredQueue);
        else await this.#run(channel, message);
      }
    } while (this.#tryAgain);
  }

  #scheduleRetry(
    message: Message,
    given: Identity | undefined,
    attempt: number,
    delayMs: number,
  ): Promise<void> {
    // A delay that is not one of the declared levels (a changed configuration) falls back to the
    // nearest longer one, or straight back into the queue.
    let queue = this.topology.retryQueues.get(delayMs);
    if (queue === undefined) {
      const longer = [...this.topology.retryQueues.keys()]
        .filter((d) => d >= delayMs)
        .sort((a, b) => a - b)[0];
      queue = longer === undefined ? this.topology.queue : this.topology.retryQueues.get(longer)!;
    }
    // The handler ran and settled it: redeliveries in a row start again from zero.
    const headers = {
      [HEADER.attempt]: attempt,
      [HEADER.routingKey]: typeOf(wireMessageOf(message)),
      [HEADER.redeliveries]: 0,
    };
    return this.#context.publisher.move(queue, message.content, republishOptions(message, headers, given));
  }

  /**
   * The delivery `message` makes. One that came through the default exchange (a retry, a replay, a
   * counted redelivery, or a message sent straight to the queue) may name its type in a header: a
   * type the subscription's pattern does not match is refused, as its routing key would never have
   * brought it here.
   */
  #decode(message: Message): Delivery {
    const delivery = decodeWireMessage(wireMessageOf(message));
    if (!delivery.ok || fromPublisher(message) || this.#matches(delivery.message.type)) return delivery;
    return {
      ok: false,
      attempt: delivery.message.attempt,
      reason: `the message type ${JSON.stringify(delivery.message.type)} does not match the subscription's pattern ${JSON.stringify(this.spec.pattern)}`,
    };
  }

  /**
   * Moves `message` to the dead-letter queue, with its original routing (read from the bytes, never
   * from the message a handler was handed) and the id and time it was `given`.
   */
  #deadLetter(
    message: Message,
    given: Identity | undefined,
    reason: DeadLetterReason,
    attempts: number,
  ): Promise<void> {
    const previous = message.properties.headers as Record<string, unknown> | undefined;
    const cut = cutReason(reason);
    const headers: Record<string, unknown> = {
      [HEADER.routingKey]: typeOf(wireMessageOf(message)),
      [DEAD_LETTER_HEADER.exchange]: previous?.[DEAD_LETTER_HEADER.exchange] ?? message.fields.exchange,
      [DEAD_LETTER_HEADER.group]: this.spec.group,
      [DEAD_LETTER_HEADER.pattern]: this.spec.pattern,
      [DEAD_LETTER_HEADER.queue]: this.topology.queue,
      [DEAD_LETTER_HEADER.kind]: reason.kind,
      [DEAD_LETTER_HEADER.error]: cut.message,
      [DEAD_LETTER_HEADER.attempts]: attempts,
      [DEAD_LETTER_HEADER.at]: new Date().toISOString(),
      [DEAD_LETTER_HEADER.id]: randomUUID(),
    };
    if (cut.stack !== undefined) headers[DEAD_LETTER_HEADER.stack] = cut.stack;
    return this.#context.publisher.move(
      this.topology.deadLetterQueue,
      message.content,
      republishOptions(message, headers, given),
    );
  }

  /**
   * Sends `message`'s copy with `copy` and, once the broker has confirmed it, acks the original. A
   * close whose wait for the handlers ends meanwhile waits for this too, up to {@link MOVE_GRACE_MS}:
   * handed back then, the message would run again beside its retry or dead letter.
   */
  async #move(channel: Channel, message: Message, copy: () => Promise<void>): Promise<void> {
    this.#moves.begin();
    try {
      await copy();
      this.#ack(channel, message);
    } finally {
      this.#moves.end();
    }
  }

  #ack(channel: Channel, message: Message): void {
    // On a channel from before a reconnect the ack cannot be sent; the broker redelivers the message
    // and the idempotent consumer recognises it.
    if (channel !== this.#channel) return;
    try {
      channel.ack(message);
    } catch {
      // The channel closed under us: same as above.
    }
  }

  /**
   * A move refused as unroutable: a queue of the subscription (its dead-letter, retry or redelivered
   * queue) was deleted under it, by an operator or a policy. The subscription is attached again, which
   * declares its queues again; without it the message was run again every 10 s, for ever.
   */
  #redeclareIfGone(error: unknown): void {
    if (!isUnroutableError(error) || this.#closed) return;
    this.#context.onQueueGone(
      this,
      `a queue of the subscription to ${JSON.stringify(this.spec.pattern)} in group "${this.spec.group}" is gone (deleted?)`,
    );
  }

  #requeueLater(channel: Channel, message: Message): void {
    this.#requeuing++;
    setTimeout(() => {
      this.#requeuing--;
      if (channel === this.#channel) {
        try {
          channel.nack(message, false, true);
        } catch {
          // Closed meanwhile: the broker requeues it anyway.
        }
      }
      // A retired channel gives it back as it closes.
      this.#closeRetiredIfIdle();
    }, REQUEUE_DELAY_MS).unref();
  }

  #done(): void {
    this.#inFlight.end();
    this.#closeRetiredIfIdle();
  }

  /** Messages delivered to this consumer and not settled yet: running, held for a trial, or waiting to be given back. */
  get #holdsMessages(): boolean {
    return this.#inFlight.count > 0 || this.#held.length > 0 || this.#requeuing > 0;
  }

  #closeRetiredIfIdle(): void {
    if (this.#retired.size === 0) return;
    if (this.#holdsMessages) return;
    for (const channel of this.#retired) void closeChannel(channel);
    this.#retired.clear();
  }

  /**
   * Cancels the consumer, waits for handlers in flight, then closes the channel, all within
   * `timeoutMs`. A handler still deciding then is abandoned: its late outcome is ignored (no retry,
   * no dead letter, no ack), and its message goes back to the queue, given back before the channel
   * closes. A move under way then (a retry or dead letter sent, its confirm awaited) is waited for up
   * to {@link MOVE_GRACE_MS} more, so that its message is acked rather than handed back beside its copy. A broker that stops answering without closing TCP (a network partition) never confirms
   * the cancel or the close, so neither is waited for past the timeout. A channel left closing then
   * goes with its connection; the broker requeues what it held either way.
   */
  close(timeoutMs: number, onGiveUp?: () => void): Promise<void> {
    if (onGiveUp !== undefined) {
      if (this.#gaveUp === true) onGiveUp();
      else if (this.#gaveUp === undefined) this.#onGiveUp.push(onGiveUp);
    }
    this.#closeDone ??= this.#closeOnce(timeoutMs);
    return this.#closeDone;
  }

  /** Its close, once begun: a delete of its subscription waits for it (see the transport's). */
  get closing(): Promise<void> | undefined {
    return this.#closeDone;
  }

  async #closeOnce(timeoutMs: number): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watch);
    const deadline = Date.now() + timeoutMs;
    // Counted as consuming until what its handlers hold is back in the queue: in this process it stays
    // among the transport's consumers, and the fence keeps out a delete of another process, which
    // once the consumer was cancelled saw none and deleted the queue with those messages (and the
    // retries their handlers then asked for).
    const release = await this.#fenceForClose(timeoutMs);
    try {
      await this.#close(deadline);
    } finally {
      this.#context.onClosed(this);
      if (release !== undefined) await settledWithin(release(), Math.max(0, deadline - Date.now()));
    }
  }

  /** The fence, had within `timeoutMs` (never waited for past it: a broker that stops answering). */
  async #fenceForClose(timeoutMs: number): Promise<(() => Promise<void>) | undefined> {
    const connection = this.#connection;
    if (connection === undefined || this.#channel === undefined) return undefined;
    const fence = holdFence(connection, this.topology, Math.min(timeoutMs, FENCE_WAIT_MS)).catch(
      () => undefined,
    );
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    });
    const got = await Promise.race([fence, late]);
    clearTimeout(timer);
    if (got === 'late') {
      // Had after all: let it go at once, or every later delete would wait for it.
      void fence.then((release) => release?.());
      return undefined;
    }
    return got;
  }

  async #close(deadline: number): Promise<void> {
    const timeoutMs = Math.max(0, deadline - Date.now());
    const channel = this.#channel;
    if (channel !== undefined && this.#consumerTag !== undefined) {
      await settledWithin(channel.cancel(this.#consumerTag), timeoutMs);
    }
    await this.#inFlight.idle(Math.max(0, deadline - Date.now()));
    // Given up on: what these handlers decide from now on is not carried out. Their messages go back
    // to the queue (below); a retry or dead letter besides would be a copy too many.
    this.#gaveUp = this.#undecided.size > 0;
    for (const run of this.#undecided) run.abandoned = true;
    this.#undecided.clear();
    const told = this.#onGiveUp.splice(0);
    if (this.#gaveUp) for (const onGiveUp of told) onGiveUp();
    // A move under way (a handler's retry or dead letter sent as the wait ended, its confirm awaited)
    // ends with its ack, not with its message handed back beside the copy: given a little longer.
    await this.#moves.idle(MOVE_GRACE_MS);
    this.#channel = undefined;
    for (const retired of this.#retired) void closeChannel(retired);
    this.#retired.clear();
    if (channel === undefined) return;
    if (this.#holdsMessages) {
      // Given back before the close rather than by it: a quorum queue counts a cancelled consumer
      // until the messages it holds are back, and takes back those of a closed channel only some
      // time after confirming the close (a confirmation that a handler using up the timeout leaves
      // no time to wait for anyway). The nack reaches the broker before anything this process sends
      // next: a deleteSubscription right after close was refused with SUBSCRIPTION_IN_USE.
      try {
        channel.nackAll(true);
      } catch {
        // The channel closed meanwhile: the broker requeued what it held.
      }
    }
    await settledWithin(channel.close(), deadline - Date.now());
  }
}

/**
 * A publisher's message that carries no id, or no time (neither a timestamp nor a time header):
 * Ferry would give it a new one at every delivery.
 */
function needsIdentity(message: Message): boolean {
  if (!fromPublisher(message)) return false;
  const p = message.properties;
  if (
    p.messageId &&
    (p.timestamp !== undefined ||
      (p.headers as Record<string, unknown> | undefined)?.[HEADER.time] !== undefined)
  ) {
    return false;
  }
  return true;
}

/** The id and time a delivery was given, for copies of a message that came without its own. */
interface Identity {
  readonly id: string;
  readonly time: string;
}

/** The id and time a delivery was given, kept on the copies Ferry sends of it. */
function identityOf(delivery: Delivery): Identity | undefined {
  return delivery.ok ? { id: delivery.message.id, time: delivery.message.time } : undefined;
}

/** Redeliveries counted so far: the header Ferry sets on the copy it sends back to the queue. */
function redeliveriesOf(message: Message): number {
  // A publisher's own copy of the header counts for nothing (see wireMessageOf).
  if (fromPublisher(message)) return 0;
  const value = (message.properties.headers as Record<string, unknown> | undefined)?.[HEADER.redeliveries];
  const n = typeof value === 'number' ? value : Number(value);
  return Number.isInteger(n) && n > 0 ? n : 0;
}
