import { errorGuard, FerryError, isFerryError } from '../errors/ferry-error.js';
import type { ValidationIssue } from '../validation/validation-issue.js';

/** `data` does not satisfy the schema registered for its message type. */
export class MessageValidationError extends FerryError {
  readonly type: string;
  readonly issues: readonly ValidationIssue[];
  /** `stage` says which form failed, when not the data as given (`as subscribers receive it …`). */
  constructor(type: string, issues: readonly ValidationIssue[], stage?: string) {
    const detail = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
    const where = stage === undefined ? '' : ` ${stage}`;
    super('MESSAGE_INVALID', `message of type "${type}" failed its schema${where}: ${detail}`);
    this.type = type;
    this.issues = issues;
  }
}
export const isMessageValidationError = errorGuard<MessageValidationError>('MESSAGE_INVALID');

/** A message type, topic pattern or group name that breaks the naming rules. */
export class InvalidTopicError extends FerryError {
  readonly topic: string;
  constructor(topic: string, reason: string) {
    // JSON-quoted: a lone surrogate or a control character shows as its escape, not as U+FFFD.
    // Cut past 300 characters (a topic holds at most 255 bytes): a megabyte string is not quoted whole.
    const shown = topic.length > 300 ? `${topic.slice(0, 300)}…` : topic;
    super('INVALID_TOPIC', `invalid topic ${JSON.stringify(shown)}: ${reason}`);
    this.topic = topic;
  }
}
export const isInvalidTopicError = errorGuard<InvalidTopicError>('INVALID_TOPIC');

/** No subscription matches the message, so the broker would have dropped it. Nothing was stored. */
export class UnroutableError extends FerryError {
  readonly type: string;
  readonly messageId: string;
  constructor(type: string, messageId: string) {
    super(
      'UNROUTABLE',
      `no subscription matches message type "${type}" (message ${messageId} was not stored)`,
    );
    this.type = type;
    this.messageId = messageId;
  }
}
export const isUnroutableError = errorGuard<UnroutableError>('UNROUTABLE');

/** The broker refused to take responsibility for the message (a publisher-confirm nack). */
export class PublishNackedError extends FerryError {
  readonly messageId: string;
  constructor(messageId: string, reason = 'negative publisher confirm') {
    super('PUBLISH_NACKED', `the broker rejected message ${messageId} (${reason})`);
    this.messageId = messageId;
  }
}
export const isPublishNackedError = errorGuard<PublishNackedError>('PUBLISH_NACKED');

/**
 * The broker did not confirm the message within the confirm timeout. The message may or may not have
 * been stored; publishing it again with the same id is safe with an idempotent consumer.
 */
export class PublishNotConfirmedError extends FerryError {
  readonly messageId: string;
  readonly timeoutMs: number;
  /** `closing`: the publisher closed while the confirm was awaited (`timeoutMs` is the close's wait). */
  constructor(messageId: string, timeoutMs: number, closing = false) {
    super(
      'PUBLISH_NOT_CONFIRMED',
      closing
        ? `message ${messageId} was not confirmed by the broker before its connection closed (the close waited ${timeoutMs} ms for confirms)`
        : `message ${messageId} was not confirmed by the broker within ${timeoutMs} ms`,
    );
    this.messageId = messageId;
    this.timeoutMs = timeoutMs;
  }
}
export const isPublishNotConfirmedError = errorGuard<PublishNotConfirmedError>('PUBLISH_NOT_CONFIRMED');

/** Too many publishes are waiting for the broker; the caller should slow down or await its publishes. */
export class PublishBufferFullError extends FerryError {
  readonly limit: number;
  constructor(limit: number) {
    super(
      'PUBLISH_BUFFER_FULL',
      `more than ${limit} publishes are waiting for the broker; await publish() to apply backpressure`,
    );
    this.limit = limit;
  }
}
export const isPublishBufferFullError = errorGuard<PublishBufferFullError>('PUBLISH_BUFFER_FULL');

/**
 * `data` cannot be encoded as JSON (a BigInt, a cycle, nesting too deep for the encoder). Raised at
 * publish by every transport, so nothing was stored.
 */
export class MessageNotSerializableError extends FerryError {
  readonly type: string;
  constructor(type: string, cause: unknown) {
    super('MESSAGE_NOT_SERIALIZABLE', `data of message type "${type}" cannot be encoded as JSON`, { cause });
    this.type = type;
  }
}
export const isMessageNotSerializableError =
  errorGuard<MessageNotSerializableError>('MESSAGE_NOT_SERIALIZABLE');

/** The bus or subscription was closed; the operation was not performed. */
export class BusClosedError extends FerryError {
  /** `detail` says what became of an operation that the close cut short. */
  constructor(what = 'bus', options: { readonly detail?: string; readonly cause?: unknown } = {}) {
    super(
      'BUS_CLOSED',
      `the ${what} is closed${options.detail === undefined ? '' : `: ${options.detail}`}`,
      options.cause === undefined ? {} : { cause: options.cause },
    );
  }
}
export const isBusClosedError = errorGuard<BusClosedError>('BUS_CLOSED');

/** What `connect()` of a transport closed, or whose first connect failed, rejects with, on every transport. */
export function connectWhenClosedError(): BusClosedError {
  return new BusClosedError('transport', {
    detail: 'it was closed, or its first connect failed: create another to connect',
  });
}

/**
 * A connection to the broker could not be established or was lost for good. `BROKER_UNAVAILABLE`
 * when waiting did not help (broker down, network, timeout); the refusals that waiting cannot fix
 * are subclasses with their own code (`BROKER_ACCESS_REFUSED`, `BROKER_VHOST_NOT_FOUND`,
 * `BROKER_PERMISSION_DENIED`, `BROKER_TLS_MISMATCH`, from `ferry/amqp`).
 */
export class BrokerConnectionError extends FerryError {
  constructor(
    message: string,
    options: { cause?: unknown } = {},
    code: BrokerConnectionCode = 'BROKER_UNAVAILABLE',
  ) {
    super(code, message, options);
  }
}

/** Every code of a {@link BrokerConnectionError}. */
export const BROKER_CONNECTION_CODES = Object.freeze([
  'BROKER_UNAVAILABLE',
  'BROKER_ACCESS_REFUSED',
  'BROKER_VHOST_NOT_FOUND',
  'BROKER_PERMISSION_DENIED',
  'BROKER_TLS_MISMATCH',
] as const);
export type BrokerConnectionCode = (typeof BROKER_CONNECTION_CODES)[number];

/**
 * True for any failure to connect to the broker: unavailable, or refused for a reason waiting cannot
 * fix (each of those also has its own guard in `ferry/amqp`).
 */
export function isBrokerConnectionError(error: unknown): error is BrokerConnectionError {
  return isFerryError(error) && (BROKER_CONNECTION_CODES as readonly string[]).includes(error.code);
}

/** A received message could not be decoded into an envelope. */
export class MalformedMessageError extends FerryError {
  constructor(reason: string) {
    super('MESSAGE_MALFORMED', reason);
  }
}
export const isMalformedMessageError = errorGuard<MalformedMessageError>('MESSAGE_MALFORMED');

/** A subscription cannot be deleted while a consumer is attached to it, in this process or another. */
export class SubscriptionInUseError extends FerryError {
  readonly group: string;
  readonly pattern: string;
  constructor(group: string, pattern: string) {
    super(
      'SUBSCRIPTION_IN_USE',
      `subscription "${pattern}" of group "${group}" has consumers attached; close them before deleting it`,
    );
    this.group = group;
    this.pattern = pattern;
  }
}
export const isSubscriptionInUseError = errorGuard<SubscriptionInUseError>('SUBSCRIPTION_IN_USE');

export { describeThrown } from '../errors/describe-thrown.js';

/**
 * The encoded message is larger than the broker accepts (the transport's `maxMessageBytes`, RabbitMQ's `max_message_size`). Nothing was
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
      `message ${messageId} is ${size} bytes once encoded, more than the broker accepts (${limit} bytes): publish a reference to the data (a URL or a key in a store) instead, or raise the transport's maxMessageBytes (on RabbitMQ together with its max_message_size)`,
      options,
    );
    this.messageId = messageId;
    this.size = size;
    this.limit = limit;
  }
}
export const isMessageTooLargeError = errorGuard<MessageTooLargeError>('MESSAGE_TOO_LARGE');
