import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { type Envelope, JSON_CONTENT_TYPE } from './envelope.js';
import { rfc3339ToMs } from './expiry.js';
import { isReservedHeader } from './reserved-headers.js';
import { assertMessageType } from './topic.js';
import { isWellFormed } from './well-formed.js';
import { isJsonContentType } from './wire.js';

/**
 * Most UTF-8 bytes of a message id, correlation id or causation id: AMQP carries them as short
 * strings (and header names too), and every transport refuses what one of them cannot carry.
 */
export const MAX_ID_BYTES = 255;
/**
 * Most bytes of application headers as AMQP encodes them: names and values in UTF-8 plus
 * {@link HEADER_OVERHEAD_BYTES} each. AMQP encodes the header table into 64 KiB, which a
 * dead-lettered copy shares with Ferry's own headers (error, stack, origin).
 */
export const MAX_HEADERS_BYTES = 32_768;
/** What AMQP adds to each header in its table: the name's length, a type tag, the value's length. */
export const HEADER_OVERHEAD_BYTES = 6;

/** A plain object (`{}` or `Object.create(null)`), not an array, a Map, a string or null. */
export function isPlainHeaders(value: unknown): value is Readonly<Record<string, string>> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Throws `INVALID_OPTIONS`, naming the field and the limit, for an envelope no transport can carry
 * alike, or whose headers use a reserved name ({@link isReservedHeader}). Cheap on the publish path: a string of at most 85 UTF-16 units is at most 255 bytes, and
 * one longer than the limit in units is longer in bytes, so bytes are counted only in between.
 */
export function assertEnvelopeLimits(envelope: Envelope): void {
  assertShortString('id', envelope.id);
  if (envelope.correlationid !== envelope.id) assertShortString('correlationId', envelope.correlationid);
  if (envelope.causationid !== undefined) assertShortString('causationId', envelope.causationid);
  if (envelope.headers !== undefined) {
    const headers = envelope.headers as unknown;
    if (!isPlainHeaders(headers)) {
      // A Map or a class instance would pass as an object and lose what it holds (Object.keys).
      throw new InvalidOptionsError(
        `headers must be a plain object of strings ({ name: value }), not ${describeType(headers)}`,
      );
    }
    assertHeaders(envelope.headers);
  }
}

/** The last `time` found well-formed: messages published within one millisecond share it. */
let lastGoodTime = '';

/**
 * Throws, naming the field, for an envelope whose attributes a transport would carry other than as
 * given, or not at all: what the bus builds always passes, but an envelope handed to a transport
 * directly (an outbox relay, a custom producer) must be refused alike on memory and RabbitMQ. The
 * checks of {@link assertEnvelopeLimits} included. Cheap on the publish path: types and times
 * already seen are not parsed again.
 */
export function assertEnvelope(envelope: Envelope): void {
  if (envelope.specversion !== '1.0') {
    throw new InvalidOptionsError(`specversion must be '1.0', not ${describeValue(envelope.specversion)}`);
  }
  assertMessageType(envelope.type);
  assertShortString('source', envelope.source);
  if (envelope.time !== lastGoodTime) {
    const ms = assertTime('time', envelope.time);
    // RabbitMQ carries the time as a timestamp in ms from 1970: another form would arrive rewritten.
    if (ms < 0 || new Date(ms).toISOString() !== envelope.time) {
      throw new InvalidOptionsError(
        `time must be a UTC time from 1970 on with milliseconds, as Date.toISOString() writes it (${ms < 0 ? '1970-01-01T00:00:00.000Z or later' : new Date(ms).toISOString()}), not ${JSON.stringify(envelope.time.slice(0, 64))}`,
      );
    }
    lastGoodTime = envelope.time;
  }
  if (envelope.expiresat !== undefined) assertTime('expiresat', envelope.expiresat);
  const contentType = envelope.datacontenttype;
  if (
    contentType !== JSON_CONTENT_TYPE &&
    (typeof contentType !== 'string' || !isJsonContentType(contentType))
  ) {
    throw new InvalidOptionsError(
      `datacontenttype must be a JSON media type (data travels as JSON), not ${describeValue(contentType)}`,
    );
  }
  assertEnvelopeLimits(envelope);
}

/** Epoch ms of `value`, an RFC 3339 time; throws `INVALID_OPTIONS` naming `field` for anything else. */
function assertTime(field: string, value: unknown): number {
  const ms = typeof value === 'string' ? rfc3339ToMs(value) : Number.NaN;
  if (Number.isNaN(ms)) {
    throw new InvalidOptionsError(
      `${field} must be an RFC 3339 time, not ${typeof value === 'string' ? JSON.stringify(value.slice(0, 64)) : describeType(value)}`,
    );
  }
  return ms;
}

function assertShortString(field: string, value: string): void {
  if (typeof value !== 'string') {
    throw new InvalidOptionsError(`${field} must be a string, not ${describeType(value)}`);
  }
  if (value === '') throw new InvalidOptionsError(`${field} must not be empty`);
  // A lone surrogate has no UTF-8 form: RabbitMQ would carry U+FFFD instead, another id.
  if (!isWellFormed(value)) throw new InvalidOptionsError(`${field} must not contain a lone surrogate`);
  // PostgreSQL text cannot hold NUL: an id is a column of the outbox and of the inbox's marks.
  if (value.includes('\u0000')) throw new InvalidOptionsError(`${field} must not contain NUL`);
  if (value.length <= 85) return;
  const bytes = value.length > MAX_ID_BYTES ? value.length : Buffer.byteLength(value);
  if (bytes > MAX_ID_BYTES) {
    throw new InvalidOptionsError(
      `${field} must be at most ${MAX_ID_BYTES} bytes of UTF-8 (an AMQP short string); it has ${Buffer.byteLength(value)}`,
    );
  }
}

function describeType(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

function assertHeaders(headers: Readonly<Record<string, string>>): void {
  let units = 0;
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (isReservedHeader(name)) {
      throw new InvalidOptionsError(`header "${name.slice(0, 40)}" is reserved by Ferry or the broker`);
    }
    // Two names differing only in their lone surrogates would be one header on RabbitMQ.
    if (!isWellFormed(name) || (typeof value === 'string' && !isWellFormed(value))) {
      throw new InvalidOptionsError(
        `header "${name.slice(0, 40)}" must not contain a lone surrogate in its name or value (it has no UTF-8 form)`,
      );
    }
    if (name.length > 85 && Buffer.byteLength(name) > MAX_ID_BYTES) {
      throw new InvalidOptionsError(
        `header name "${name.slice(0, 40)}…" must be at most ${MAX_ID_BYTES} bytes of UTF-8 (an AMQP short string)`,
      );
    }
    // RabbitMQ hands a number or a boolean back as text, and memory would hand it back as it is.
    if (typeof value !== 'string')
      throw new InvalidOptionsError(
        `header "${name.slice(0, 40)}" must be a string, not ${describeType(value)}`,
      );
    units += HEADER_OVERHEAD_BYTES + name.length + value.length;
  }
  if (units * 3 <= MAX_HEADERS_BYTES) return;
  let bytes = units;
  if (units <= MAX_HEADERS_BYTES) {
    bytes = 0;
    for (const name of Object.keys(headers)) {
      const value = headers[name];
      bytes +=
        HEADER_OVERHEAD_BYTES +
        Buffer.byteLength(name) +
        (typeof value === 'string' ? Buffer.byteLength(value) : 0);
    }
  }
  if (bytes > MAX_HEADERS_BYTES) {
    throw new InvalidOptionsError(
      `headers must be at most ${MAX_HEADERS_BYTES} bytes as AMQP encodes them (names and values in UTF-8, plus ${HEADER_OVERHEAD_BYTES} per header); they have ${bytes}${bytes === units ? ' or more' : ''}`,
    );
  }
}
