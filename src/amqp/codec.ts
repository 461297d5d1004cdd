import type { Message as AmqpMessage, Options } from 'amqplib';
import { type Envelope, JSON_CONTENT_TYPE } from '../messaging/envelope.js';
import { MessageNotSerializableError } from '../messaging/errors.js';
import { encodeData, HEADER, type WireMessage, withoutRetryHeaders } from '../messaging/wire.js';

/**
 * `data` cannot be encoded as JSON (a BigInt, a cycle…): the messaging core's
 * {@link MessageNotSerializableError}, under the name this module used before, so that every
 * transport rejects the same data with the same error.
 */
export const MessageEncodingError = MessageNotSerializableError;
export type MessageEncodingError = MessageNotSerializableError;

/** An encoded message, ready for `channel.publish`. */
export interface EncodedMessage {
  readonly content: Buffer;
  readonly options: Options.Publish;
}

let lastTime = '';
let lastTimeMs = 0;

/** Milliseconds of an envelope time; consecutive publishes mostly share one, so the parse is cached. */
function timeMs(time: string): number {
  if (time !== lastTime) {
    const ms = Date.parse(time);
    lastTime = time;
    lastTimeMs = Number.isNaN(ms) ? Date.now() : ms;
  }
  return lastTimeMs;
}

/**
 * Binary content mode: the body is `data` as JSON, so plain AMQP consumers read it directly; the
 * CloudEvents attributes travel as AMQP properties: `messageId` = id, `appId` = source, `timestamp`
 * = time in ms (as Node producers send it; Ferry's times have ms precision, so nothing is lost),
 * `correlationId` when it differs from the id, `contentType`. Headers are sent only when there is
 * something to say (causation id, application headers): every byte of properties costs the broker,
 * and the header table alone cost 10-15% of publish throughput.
 */
export function encodeEnvelope(envelope: Envelope): EncodedMessage {
  // The same encoding as the memory transport's: the same data is refused, and reads back the same.
  const json = encodeData(envelope.type, envelope.data);
  const options: Options.Publish = {
    persistent: true,
    mandatory: true,
    contentType: envelope.datacontenttype || JSON_CONTENT_TYPE,
    messageId: envelope.id,
    timestamp: timeMs(envelope.time),
    appId: envelope.source,
  };
  if (envelope.correlationid !== envelope.id) options.correlationId = envelope.correlationid;
  if (
    envelope.causationid !== undefined ||
    envelope.headers !== undefined ||
    envelope.expiresat !== undefined
  ) {
    const headers: Record<string, unknown> = { ...envelope.headers };
    if (envelope.causationid !== undefined) headers[HEADER.causationid] = envelope.causationid;
    if (envelope.expiresat !== undefined) headers[HEADER.expiresat] = envelope.expiresat;
    options.headers = headers;
  }
  return { content: Buffer.from(json), options };
}

/**
 * True when `message` came from a publisher, through an exchange, rather than from Ferry itself:
 * Ferry sends its retries, replays and counted redeliveries to a queue through the default exchange
 * (`''`, which delay queues dead-letter to as well), and only those may carry its retry headers.
 */
export function fromPublisher(message: AmqpMessage): boolean {
  return message.fields.exchange !== '';
}

/**
 * Reads an amqplib message into the transport-neutral wire form; a publisher's without Ferry's retry
 * headers ({@link withoutRetryHeaders}): a plain producer cannot set its attempt or its type that way.
 */
export function wireMessageOf(message: AmqpMessage): WireMessage {
  const p = message.properties;
  const headers = p.headers as Record<string, unknown> | undefined;
  return {
    body: message.content,
    routingKey: message.fields.routingKey,
    contentType: p.contentType as string | undefined,
    messageId: p.messageId as string | undefined,
    timestamp: p.timestamp as number | undefined,
    appId: p.appId as string | undefined,
    correlationId: p.correlationId as string | undefined,
    headers: fromPublisher(message) ? withoutRetryHeaders(headers) : headers,
  };
}

const BROKER_HEADERS = ['x-death', 'x-first-death-exchange', 'x-first-death-queue', 'x-first-death-reason'];

/**
 * Publish options that re-send a received message unchanged but for `headers`: used to move a
 * message to a delay queue or a dead-letter queue. The broker's death records are dropped so that
 * headers do not grow with every retry.
 */
export function republishOptions(
  message: AmqpMessage,
  headers: Record<string, unknown>,
  /**
   * The id and time the delivery was given, for a message that came without its own (a plain
   * producer's without `messageId` or `timestamp`): kept on the copy, so that its retries, its dead
   * letter and the inbox see one message, not a new one at every attempt.
   */
  given?: { readonly id: string; readonly time: string },
): Options.Publish {
  const p = message.properties;
  // A publisher's copy of Ferry's retry headers is not carried on: the copy sent goes through the
  // default exchange, where they would be believed.
  const headersIn = p.headers as Record<string, unknown> | undefined;
  const own = fromPublisher(message) ? withoutRetryHeaders(headersIn) : headersIn;
  const merged: Record<string, unknown> = { ...own, ...headers };
  for (const name of BROKER_HEADERS) delete merged[name];
  for (const name of Object.keys(merged)) if (name.startsWith('x-last-death')) delete merged[name];
  const options: Options.Publish = { persistent: true, mandatory: true, headers: merged };
  if (p.contentType !== undefined) options.contentType = p.contentType as string;
  if (p.contentEncoding !== undefined) options.contentEncoding = p.contentEncoding as string;
  if (p.messageId !== undefined) options.messageId = p.messageId as string;
  else if (given !== undefined) options.messageId = given.id;
  if (p.timestamp !== undefined) options.timestamp = p.timestamp as number;
  else if (given !== undefined && merged[HEADER.time] === undefined)
    options.timestamp = Date.parse(given.time);
  if (p.appId !== undefined) options.appId = p.appId as string;
  if (p.correlationId !== undefined) options.correlationId = p.correlationId as string;
  if (p.type !== undefined) options.type = p.type as string;
  return options;
}
