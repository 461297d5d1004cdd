import { isUtf8 } from 'node:buffer';
import { isStorableText } from '../errors/storable-text.js';
import { type Clock, systemClock } from '../time/clock.js';
import { type Envelope, JSON_CONTENT_TYPE, newMessageId, toMessage } from './envelope.js';
import { MAX_ID_BYTES } from './envelope-limits.js';
import { MessageNotSerializableError } from './errors.js';
import { rfc3339ToMs } from './expiry.js';
import { isReservedHeader } from './reserved-headers.js';
import { assertMessageType } from './topic.js';
import type { Delivery } from './transport.js';

/** Header names Ferry reserves on the wire. */
export const HEADER = Object.freeze({
  specversion: 'cloudEvents:specversion',
  time: 'cloudEvents:time',
  causationid: 'cloudEvents:causationid',
  /** The `expiresat` extension attribute (RFC 3339), in CloudEvents' AMQP binding form. */
  expiresat: 'cloudEvents:expiresat',
  attempt: 'x-ferry-attempt',
  routingKey: 'x-ferry-routing-key',
  /** Deliveries in a row that ended with the consumer stopping before it settled the message. */
  redeliveries: 'x-ferry-redeliveries',
});

/**
 * `wire` as it reaches a queue for the first time, from a publisher: without the headers only
 * Ferry's own retries, replays and redeliveries carry (attempt, original routing key, redeliveries
 * in a row). A plain producer's copy of them, or headers forwarded from a message it consumed,
 * would otherwise set the message's attempt, or give it a type its routing key does not say (and
 * the subscription's pattern does not match).
 */
export function asPublished(wire: WireMessage): WireMessage {
  const headers = withoutRetryHeaders(wire.headers);
  return headers === wire.headers ? wire : { ...wire, headers };
}

/** `headers` without Ferry's retry headers (see {@link asPublished}); the same object when it has none. */
export function withoutRetryHeaders<H extends Readonly<Record<string, unknown>> | undefined>(headers: H): H {
  if (
    headers === undefined ||
    !(HEADER.attempt in headers || HEADER.routingKey in headers || HEADER.redeliveries in headers)
  ) {
    return headers;
  }
  const {
    [HEADER.attempt]: _attempt,
    [HEADER.routingKey]: _routingKey,
    [HEADER.redeliveries]: _redeliveries,
    ...rest
  } = headers;
  return rest as H;
}

/**
 * A message as bytes plus broker properties: the common form of what arrives from RabbitMQ, from a
 * producer that knows nothing of Ferry, or through `MemoryTransport.publishRaw`.
 */
export interface WireMessage {
  readonly body: Uint8Array;
  /** The routing key it was published with; the message type unless a header overrides it. */
  readonly routingKey: string;
  readonly contentType?: string | undefined;
  readonly messageId?: string | undefined;
  /** Seconds or milliseconds since the epoch: the AMQP spec says seconds, most Node producers send `Date.now()`. */
  readonly timestamp?: number | undefined;
  readonly appId?: string | undefined;
  readonly correlationId?: string | undefined;
  readonly headers?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Refuses, with `MessageNotSerializableError`, `data` that is itself a function or a symbol: JSON
 * has no text for either (it would be sent as `null`), and one passed as a message's data is a
 * mistake (a payload builder not called). Inside an object or array they go as JSON has them
 * (left out, or `null` in an array), like `undefined`; `undefined` as data is sent as `null`.
 */
export function assertDataEncodable(type: string, data: unknown): void {
  const kind = typeof data;
  if (kind === 'function' || kind === 'symbol') {
    throw new MessageNotSerializableError(type, new TypeError(`JSON has no text for a ${kind}`));
  }
}

/**
 * Encodes a message's `data` as the JSON text every transport sends: what `JSON.stringify` makes of
 * it (a `Date` becomes its ISO string, `NaN` and `Infinity` become `null`, `undefined` fields
 * disappear), `null` for a value JSON has no text for (`undefined`; a bus refuses a function or a
 * symbol first, see {@link assertDataEncodable}). Throws
 * `MessageNotSerializableError` (`MESSAGE_NOT_SERIALIZABLE`) for what cannot be encoded: a BigInt, a
 * cycle, a `toJSON` that throws, nesting deeper than the encoder's stack.
 */
export function encodeData(type: string, data: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (error) {
    throw new MessageNotSerializableError(type, error);
  }
  return json ?? 'null';
}

export function isJsonContentType(contentType: string): boolean {
  const base = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  return base === 'application/json' || base === 'text/json' || base.endsWith('+json');
}

/** The last millisecond RFC 3339 can write (a later one is an extended year, `+275760-…`). */
const LAST_RFC3339_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * Seconds before 5138 AD stay below 1e11, milliseconds after March 1973 stay above it. A time
 * outside 1970 to 9999, which `publish` refuses and no RFC 3339 text can say, is taken as absent:
 * the message is stamped with `clock`'s now, as one without a timestamp is.
 */
function timestampToIso(timestamp: number, clock: Clock): string {
  const ms = timestamp < 1e11 ? timestamp * 1000 : timestamp;
  const usable = Number.isFinite(ms) && ms >= 0 && ms <= LAST_RFC3339_MS;
  return new Date(usable ? ms : clock.now()).toISOString();
}

function str(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

/** The delivery attempt a message carries (1 when it carries none). */
export function attemptOf(headers: Readonly<Record<string, unknown>> | undefined): number {
  const value = headers?.[HEADER.attempt];
  const n = typeof value === 'number' ? value : Number(str(value));
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

/** The message type: the original routing key survives retries and replays in a header. */
export function typeOf(wire: WireMessage): string {
  return str(wire.headers?.[HEADER.routingKey]) ?? wire.routingKey;
}

function userHeaders(
  headers: Readonly<Record<string, unknown>> | undefined,
): Record<string, string> | undefined {
  if (headers === undefined) return undefined;
  let out: Record<string, string> | undefined;
  for (const name in headers) {
    // Exactly the names publishing refuses: a plain producer's other `x-` headers (`x-request-id`,
    // `x-deathly`) are the application's and reach handlers.
    if (isReservedHeader(name)) continue;
    const value = headers[name];
    const text = typeof value === 'number' || typeof value === 'boolean' ? String(value) : str(value);
    if (text === undefined) continue;
    if (out === undefined) out = {};
    out[name] = text;
  }
  return out;
}

/** Why a message cannot be taken, as a value (not thrown). */
class Refusal {
  constructor(readonly reason: string) {}
}

/** The RFC 3339 text of time header `name`, `undefined` without one, a {@link Refusal} for anything else. */
function timeHeader(
  headers: Readonly<Record<string, unknown>> | undefined,
  name: string,
): string | Refusal | undefined {
  const value = headers?.[name];
  if (value === undefined || value === null) return undefined;
  const text = str(value);
  if (text === undefined) {
    const kind = Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    return new Refusal(`${name} is ${kind}, not an RFC 3339 time`);
  }
  if (Number.isNaN(rfc3339ToMs(text))) return new Refusal(`${name} ${quoted(text)} is not an RFC 3339 time`);
  return text;
}

/**
 * Which of the message's id, correlation id, causation id and type holds NUL or a lone surrogate, if
 * one does (RabbitMQ carries a lone surrogate as U+FFFD; `MemoryTransport.publishRaw` as it is).
 */
function withNul(wire: WireMessage, headers: WireMessage['headers']): string | undefined {
  if (unkeepable(wire.messageId)) return 'message id';
  if (unkeepable(wire.correlationId)) return 'correlation id';
  if (unkeepable(str(headers?.[HEADER.causationid]))) return 'causation id';
  if (unkeepable(typeOf(wire))) return 'message type';
  return undefined;
}

/**
 * Which of the message's id, correlation id and causation id is longer than publishing allows
 * ({@link MAX_ID_BYTES} in UTF-8), with its length: `MemoryTransport.publishRaw` and a RabbitMQ
 * header can carry one, and a handler's own publishes, which take its correlation id, were refused.
 */
function overlongId(wire: WireMessage, headers: WireMessage['headers']): string | undefined {
  const ids: [string, string | undefined][] = [
    ['message id', wire.messageId],
    ['correlation id', wire.correlationId],
    ['causation id', str(headers?.[HEADER.causationid])],
  ];
  for (const [name, id] of ids) {
    const bytes = id === undefined ? 0 : Buffer.byteLength(id, 'utf8');
    if (bytes > MAX_ID_BYTES) return `the ${name} is ${bytes} bytes long (at most ${MAX_ID_BYTES})`;
  }
  return undefined;
}

/** Why `type` is not a message type `publish` would take, or `undefined` when it is one. */
function invalidType(type: string): string | undefined {
  try {
    assertMessageType(type);
    return undefined;
  } catch (error) {
    return `the message type is not valid: ${(error as Error).message}`;
  }
}

function unkeepable(text: string | undefined): boolean {
  return text !== undefined && !isStorableText(text);
}

/** `text` in quotes, cut to 64 characters: for a reason that names a bad value. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);
}

/**
 * Decodes a wire message into a delivery. Ferry's own messages carry their CloudEvents attributes in
 * properties and headers; a plain producer's message (JSON body, `messageId`, `timestamp`, routing key)
 * is wrapped: `id` = messageId, `time` = timestamp, `type` = routing key, `data` = body. A body that
 * is not JSON yields a failed delivery with the reason, never an exception. A message without a time
 * of its own is stamped with `clock`'s now.
 */
export function decodeWireMessage(
  wire: WireMessage,
  clock: Clock = systemClock,
  /** The attempt, when the transport keeps it outside the message: @default its attempt header, or 1 */
  attemptGiven?: number,
): Delivery {
  const attempt = attemptGiven ?? attemptOf(wire.headers);
  if (wire.contentType !== undefined && !isJsonContentType(wire.contentType)) {
    return { ok: false, attempt, reason: `unsupported content type "${wire.contentType}" (expected JSON)` };
  }
  if (wire.body.byteLength === 0) return { ok: false, attempt, reason: 'empty body (expected JSON)' };
  // JSON text is UTF-8 (RFC 8259, 8.1): bytes that are not would reach the handler altered (U+FFFD).
  if (!isUtf8(wire.body))
    return { ok: false, attempt, reason: 'body is not valid UTF-8 (JSON text must be)' };
  let data: unknown;
  try {
    data = JSON.parse(
      Buffer.from(wire.body.buffer, wire.body.byteOffset, wire.body.byteLength).toString('utf8'),
    );
  } catch (error) {
    return { ok: false, attempt, reason: `body is not valid JSON: ${(error as Error).message}` };
  }
  const headers = wire.headers;
  // A time no reader can take (CloudEvents: RFC 3339 text): an expiry that cannot be read may have passed.
  const time = timeHeader(headers, HEADER.time);
  if (time instanceof Refusal) return { ok: false, attempt, reason: time.reason };
  const expiresat = timeHeader(headers, HEADER.expiresat);
  if (expiresat instanceof Refusal) return { ok: false, attempt, reason: expiresat.reason };
  // What publishing refuses (PostgreSQL text, where the inbox and the outbox keep ids and types,
  // holds no NUL): a plain producer's message with it would fail every attempt on a PostgreSQL inbox.
  const nul = withNul(wire, headers);
  if (nul !== undefined)
    return {
      ok: false,
      attempt,
      reason: `the ${nul} holds NUL or a lone surrogate, which Ferry's stores cannot keep`,
    };
  const overlong = overlongId(wire, headers);
  if (overlong !== undefined) return { ok: false, attempt, reason: overlong };
  const type = typeOf(wire);
  // A routing key publish would refuse as a type (`a b`, `a..b`, `a.*`): the memory transport can
  // never deliver one, and a handler or an outbox passing it on would be refused.
  const badType = invalidType(type);
  if (badType !== undefined) return { ok: false, attempt, reason: badType };
  const id = wire.messageId || newMessageId(clock.now());
  const envelope: { -readonly [P in keyof Envelope]: Envelope[P] } = {
    specversion: '1.0',
    id,
    source: wire.appId || 'unknown',
    type,
    time:
      time ??
      (wire.timestamp !== undefined
        ? timestampToIso(wire.timestamp, clock)
        : new Date(clock.now()).toISOString()),
    datacontenttype: wire.contentType ?? JSON_CONTENT_TYPE,
    data,
    correlationid: wire.correlationId || id,
  };
  const causationid = str(headers?.[HEADER.causationid]);
  if (causationid !== undefined) envelope.causationid = causationid;
  if (expiresat !== undefined) envelope.expiresat = expiresat;
  const extra = userHeaders(headers);
  if (extra !== undefined) envelope.headers = extra;
  return { ok: true, message: toMessage(envelope, attempt) };
}
