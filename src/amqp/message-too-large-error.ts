import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * The encoded message is larger than the broker accepts (RabbitMQ's `max_message_size`). Nothing was
 * stored; sending it again cannot succeed, so it is rejected at once instead of being retried.
 */
export class MessageTooLargeError extends FerryError {
  readonly messageId: string;
  /** Size of the encoded body in bytes. */
  readonly size: number;
  /** The largest body accepted, in bytes. */
  readonly limit: number;
  constructor(messageId: string, size: number, limit: number, options: { cause?: unknown } = {}) {
    super(
      'MESSAGE_TOO_LARGE',
      `message ${messageId} is ${size} bytes once encoded, more than the broker accepts (${limit} bytes): publish a reference to the data (a URL or a key in a store) instead, or raise RabbitMQ's max_message_size and the transport's maxMessageBytes together`,
      options,
    );
    this.messageId = messageId;
    this.size = size;
    this.limit = limit;
  }
}
export const isMessageTooLargeError = errorGuard<MessageTooLargeError>('MESSAGE_TOO_LARGE');
