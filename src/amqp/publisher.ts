import type { Message as AmqpMessage, ChannelModel, ConfirmChannel, Options } from 'amqplib';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { Deque } from '../messaging/deque.js';
import {
  BusClosedError,
  PublishBufferFullError,
  PublishNackedError,
  PublishNotConfirmedError,
  UnroutableError,
} from '../messaging/errors.js';
import { InFlight } from '../messaging/in-flight.js';
import { MessageTooLargeError } from './message-too-large-error.js';

/** One publish, kept until the broker confirms it so that it can be re-sent after a connection loss. */
interface Pending {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Options.Publish;
  readonly messageId: string;
  readonly deadline: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  settled: boolean;
  /** Times the broker closed the channel with an error while this publish was unconfirmed on it. */
  refusals: number;
  /** A message the broker delivered, moved to another queue: held only to the broker's limit. */
  readonly move: boolean;
}

/** A snapshot of the publisher. */
export interface PublisherStats {
  /** Sent, awaiting the broker's confirm. */
  readonly inFlight: number;
  /** Held back by the window, the socket's backpressure or a lost connection. */
  readonly waiting: number;
  /** The socket asked to stop writing (`channel.publish` returned false) and has not drained yet. */
  readonly blocked: boolean;
}

export interface ConfirmPublisherOptions {
  /** Most publishes awaiting a confirm at once. */
  readonly window: number;
  /** Most publishes held (in flight plus waiting) before `publish` rejects with `PUBLISH_BUFFER_FULL`. */
  readonly maxBuffered: number;
  readonly confirmTimeoutMs: number;
  /** Largest body sent; a larger one rejects at once with `MESSAGE_TOO_LARGE`. */
  readonly maxMessageBytes: number;
  /** Called when the channel fails on a live connection; the transport then recovers the connection. */
  readonly onChannelFailure: (reason: string) => void;
}

/** amqplib reports a broker nack with exactly this message; any other callback error is a closed channel. */
const NACK_MESSAGE = 'message nacked';
/** How RabbitMQ (3.8+) closes a channel that published a body over its `max_message_size`. */
const TOO_LARGE = /larger than configured max size (\d+)/;
/**
 * A publish unconfirmed on this many channels that the broker closed with an error is rejected rather
 * than sent again: whatever the broker objects to, it would close every next channel too.
 */
const MAX_REFUSALS = 3;

/**
 * Publishes on a confirm channel with many messages in flight (a bounded window), honouring the
 * socket's backpressure (`drain`). Every publish stays in memory until confirmed: on a connection loss
 * the unconfirmed ones are re-sent on the next channel with the same message id, so nothing that was
 * accepted is lost; the caller's promise settles only on a confirm, a nack, a return or the timeout.
 */
export class ConfirmPublisher {
  readonly #options: ConfirmPublisherOptions;
  readonly #waiting = new Deque<Pending>();
  #inFlight = new Set<Pending>();
  /** Message ids the broker returned as unroutable on the current channel, with counts. */
  #returned = new Map<string, number>();
  #channel: ConfirmChannel | undefined;
  #blocked = false;
  #closed = false;
  #sweeper: NodeJS.Timeout | undefined;
  /** The broker's limit, once a channel close told it; until then the configured one. */
  #brokerMaxMessageBytes = Number.POSITIVE_INFINITY;
  /** Why the broker closed the last channel, when it closed it with an error. */
  #channelError: (Error & { code?: number }) | undefined;
  /** Publishes not yet settled, in flight or waiting. */
  readonly #held = new InFlight();

  constructor(options: ConfirmPublisherOptions) {
    this.#options = options;
  }

  /** What the publisher holds right now. */
  get stats(): PublisherStats {
    return { inFlight: this.#inFlight.size, waiting: this.#waiting.length, blocked: this.#blocked };
  }

  /** Publishes held, in flight or waiting. */
  get pending(): number {
    return this.#held.count;
  }

  /** Opens a confirm channel on `connection`; call {@link resume} once the topology is declared. */
  async attach(connection: ChannelModel): Promise<ConfirmChannel> {
    const channel = await connection.createConfirmChannel();
    channel.on('error', (error: Error & { code?: number }) => {
      // Without a listener the error would crash the process. The broker's reason is kept: a body
      // over its size limit closes the channel, and the publish must then not be sent again.
      if (channel !== this.#channel) return;
      this.#channelError = error;
      const limit = TOO_LARGE.exec(error.message)?.[1];
      if (limit !== undefined) this.#brokerMaxMessageBytes = Number(limit);
    });
    channel.on('return', (message: AmqpMessage) => {
      if (channel !== this.#channel) return;
      const id = message.properties.messageId as string | undefined;
      if (id !== undefined) this.#returned.set(id, (this.#returned.get(id) ?? 0) + 1);
    });
    channel.on('drain', () => {
      if (channel !== this.#channel) return;
      this.#blocked = false;
      this.#pump();
    });
    channel.on('close', () => {
      if (channel !== this.#channel) return;
      this.#channel = undefined;
      const cause = this.#channelError;
      if (cause !== undefined) {
        // What must not be sent again fails now, not after the reconnect.
        for (const pending of this.#inFlight) {
          pending.refusals++;
          const refused = this.#refusal(pending, cause);
          if (refused === undefined) continue;
          this.#inFlight.delete(pending);
          if (!pending.settled) this.#settle(pending, refused);
        }
      }
      if (!this.#closed) this.#options.onChannelFailure('the publishing channel closed');
    });
    return channel;
  }

  /** Makes `channel` current, re-sends every unconfirmed publish on it, then sends what was waiting. */
  resume(channel: ConfirmChannel): void {
    this.#channel = channel;
    this.#blocked = false;
    this.#returned = new Map();
    const cause = this.#channelError;
    this.#channelError = undefined;
    const resend = this.#inFlight;
    this.#inFlight = new Set();
    for (const pending of resend) {
      if (pending.settled) continue;
      const refused = this.#refusal(pending, cause);
      if (refused !== undefined) this.#settle(pending, refused);
      else this.#send(pending);
    }
    this.#pump();
  }

  /** The largest body the broker takes: the configured limit, or lower if the broker said so. */
  get maxMessageBytes(): number {
    return Math.min(this.#options.maxMessageBytes, this.#brokerMaxMessageBytes);
  }

  /**
   * The largest body a publish may have: {@link maxMessageBytes}, or for a move of a message the broker
   * delivered (a retry, a dead letter, a redelivery, an id given, a replay) the broker's limit only: it
   * took that message once. A plain producer's message over `maxMessageBytes` could be handled but
   * never retried nor dead-lettered, and came back for ever.
   */
  #limit(move: boolean): number {
    return move ? this.#brokerMaxMessageBytes : this.maxMessageBytes;
  }

  /** Why an unconfirmed publish must not be sent again, if it must not. */
  #refusal(pending: Pending, cause: Error | undefined): Error | undefined {
    const limit = this.#limit(pending.move);
    if (pending.content.length > limit) {
      return new MessageTooLargeError(pending.messageId, pending.content.length, limit, { cause });
    }
    if (pending.refusals >= MAX_REFUSALS) {
      return new PublishNackedError(
        pending.messageId,
        `the broker closed the channel ${pending.refusals} times while it was unconfirmed${cause === undefined ? '' : `: ${cause.message}`}`,
      );
    }
    return undefined;
  }

  /** Forgets the channel after a connection loss; publishes wait for {@link resume}. */
  detach(): void {
    this.#channel = undefined;
  }

  /** Publishes one message; resolves on the broker's confirm. */
  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
    return this.#publish(exchange, routingKey, content, options, false);
  }

  /**
   * Sends a message the broker delivered on to `queue` (a retry, a dead letter, a redelivery, an id
   * given, a replay), through the default exchange; resolves on the broker's confirm. Held to the
   * broker's limit only, not `maxMessageBytes`.
   */
  move(queue: string, content: Buffer, options: Options.Publish): Promise<void> {
    return this.#publish('', queue, content, options, true);
  }

  #publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    move: boolean,
  ): Promise<void> {
    if (this.#closed) return Promise.reject(new BusClosedError('publisher'));
    const messageId = (options.messageId as string | undefined) ?? '(no id)';
    const limit = this.#limit(move);
    if (content.length > limit) {
      return Promise.reject(new MessageTooLargeError(messageId, content.length, limit));
    }
    if (this.pending >= this.#options.maxBuffered) {
      return Promise.reject(new PublishBufferFullError(this.#options.maxBuffered));
    }
    this.#sweeper ??= this.#startSweeper();
    this.#held.begin();
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = {
        exchange,
        routingKey,
        content,
        options,
        messageId,
        deadline: Date.now() + this.#options.confirmTimeoutMs,
        resolve,
        reject,
        settled: false,
        refusals: 0,
        move,
      };
      if (this.#channel !== undefined && !this.#blocked && this.#waiting.length === 0 && this.#hasRoom()) {
        this.#send(pending);
      } else this.#waiting.push(pending);
    });
  }

  #hasRoom(): boolean {
    return this.#inFlight.size < this.#options.window;
  }

  #send(pending: Pending): void {
    const channel = this.#channel!;
    this.#inFlight.add(pending);
    let accepted: boolean;
    try {
      accepted = channel.publish(
        pending.exchange,
        pending.routingKey,
        pending.content,
        pending.options,
        (error) => this.#onConfirm(channel, pending, error),
      );
    } catch (error) {
      // amqplib throws synchronously when the channel is already closing; the publish stays in
      // flight and is re-sent by resume(). Anything else is properties AMQP cannot encode (a short
      // string over 255 bytes, a header table over 64 KiB): the caller's, and said so in a typed error.
      if (!(error instanceof Error) || error.name !== 'IllegalOperationError') {
        this.#inFlight.delete(pending);
        this.#settle(
          pending,
          new InvalidOptionsError(
            `RabbitMQ cannot carry the properties of this message: ${error instanceof Error ? error.message : String(error)}`,
          ),
        );
      }
      return;
    }
    if (!accepted) this.#blocked = true;
  }

  #onConfirm(channel: ConfirmChannel, pending: Pending, error: unknown): void {
    if (pending.settled) return;
    if (error !== null && error !== undefined) {
      // A closed channel errors every unconfirmed callback: keep those for re-sending.
      if (!(error instanceof Error) || error.message !== NACK_MESSAGE) return;
      this.#inFlight.delete(pending);
      this.#settle(pending, new PublishNackedError(pending.messageId));
    } else {
      this.#inFlight.delete(pending);
      const returned = channel === this.#channel ? this.#returned.get(pending.messageId) : undefined;
      if (returned !== undefined) {
        if (returned <= 1) this.#returned.delete(pending.messageId);
        else this.#returned.set(pending.messageId, returned - 1);
        this.#settle(pending, new UnroutableError(pending.routingKey, pending.messageId));
      } else this.#settle(pending, undefined);
    }
    this.#pump();
  }

  #settle(pending: Pending, error: Error | undefined): void {
    pending.settled = true;
    if (error === undefined) pending.resolve();
    else pending.reject(error);
    this.#held.end();
  }

  #pump(): void {
    while (this.#channel !== undefined && !this.#blocked && this.#waiting.length > 0 && this.#hasRoom()) {
      const pending = this.#waiting.shift()!;
      if (!pending.settled) this.#send(pending);
    }
  }

  #startSweeper(): NodeJS.Timeout {
    const period = Math.max(10, Math.min(1000, this.#options.confirmTimeoutMs / 10));
    const timer = setInterval(() => this.#expire(Date.now()), period);
    timer.unref();
    return timer;
  }

  /** Rejects publishes past their confirm deadline; waiting ones are in deadline order. */
  #expire(now: number): void {
    for (const pending of this.#inFlight) {
      if (pending.deadline <= now) {
        this.#inFlight.delete(pending);
        this.#settle(
          pending,
          new PublishNotConfirmedError(pending.messageId, this.#options.confirmTimeoutMs),
        );
      }
    }
    for (let head = this.#waiting.peek(); head !== undefined; head = this.#waiting.peek()) {
      if (!head.settled && head.deadline > now) break;
      this.#waiting.shift();
      if (!head.settled) {
        this.#settle(head, new PublishNotConfirmedError(head.messageId, this.#options.confirmTimeoutMs));
      }
    }
    this.#pump();
  }

  /**
   * Stops accepting publishes and waits up to `timeoutMs` for the pending ones to be confirmed; those
   * still pending then reject with `PUBLISH_NOT_CONFIRMED`.
   */
  async close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    await this.#held.idle(timeoutMs);
    for (const pending of [...this.#inFlight, ...this.#waiting.drain()]) {
      if (!pending.settled) {
        this.#settle(pending, new PublishNotConfirmedError(pending.messageId, timeoutMs, true));
      }
    }
    this.#inFlight.clear();
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
  }
}
