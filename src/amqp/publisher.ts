import type { Message as AmqpMessage, ChannelModel, ConfirmChannel, Options } from 'amqplib';
import { Deque } from '../messaging/deque.js';
import {
  BusClosedError,
  PublishBufferFullError,
  PublishNackedError,
  PublishNotConfirmedError,
  UnroutableError,
} from '../messaging/errors.js';
import { InFlight } from '../messaging/in-flight.js';

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
  /** Called when the channel fails on a live connection; the transport then recovers the connection. */
  readonly onChannelFailure: (reason: string) => void;
}

/** amqplib reports a broker nack with exactly this message; any other callback error is a closed channel. */
const NACK_MESSAGE = 'message nacked';

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
    channel.on('error', () => {
      // The 'close' that follows is what matters; without a listener the error would crash the process.
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
      if (!this.#closed) this.#options.onChannelFailure('the publishing channel closed');
    });
    return channel;
  }

  /** Makes `channel` current, re-sends every unconfirmed publish on it, then sends what was waiting. */
  resume(channel: ConfirmChannel): void {
    this.#channel = channel;
    this.#blocked = false;
    this.#returned = new Map();
    const resend = this.#inFlight;
    this.#inFlight = new Set();
    for (const pending of resend) if (!pending.settled) this.#send(pending);
    this.#pump();
  }

  /** Forgets the channel after a connection loss; publishes wait for {@link resume}. */
  detach(): void {
    this.#channel = undefined;
  }

  /** Publishes one message; resolves on the broker's confirm. */
  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
    if (this.#closed) return Promise.reject(new BusClosedError('publisher'));
    const messageId = (options.messageId as string | undefined) ?? '(no id)';
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
      // flight and is re-sent by resume(). Anything else (a header table over 64 KiB) is the caller's.
      if (!(error instanceof Error) || error.name !== 'IllegalOperationError') {
        this.#inFlight.delete(pending);
        this.#settle(pending, error instanceof Error ? error : new Error(String(error)));
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
      if (!pending.settled) this.#settle(pending, new PublishNotConfirmedError(pending.messageId, timeoutMs));
    }
    this.#inFlight.clear();
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
  }
}
