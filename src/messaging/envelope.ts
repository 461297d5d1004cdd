import { uuidv7 } from '../ids/uuidv7.js';

/**
 * A message as it travels: CloudEvents 1.0 context attributes (lower-case names, as the spec
 * requires) plus Ferry's correlation and causation extension attributes.
 */
export interface Envelope<T = unknown, K extends string = string> {
  readonly specversion: '1.0';
  /** Unique per source; the key of idempotent consumers. */
  readonly id: string;
  /** The publishing service. */
  readonly source: string;
  /** The message type, a dot-separated topic such as `order.created`. */
  readonly type: K;
  /** RFC 3339 time of publication. */
  readonly time: string;
  readonly datacontenttype: string;
  readonly data: T;
  /** Shared by every message stemming from one original request. */
  readonly correlationid: string;
  /** Id of the message whose handling produced this one, absent at the start of a flow. */
  readonly causationid?: string;
  /** Application headers, carried as strings. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Extension attribute: RFC 3339 time from which the message must not be handled (a delivery at
   * that time or later dead-letters it with reason kind `expired`, or drops it). Absent: it never
   * expires.
   */
  readonly expiresat?: string;
}

/** What a handler receives: the envelope plus delivery facts. */
export interface Message<T = unknown, K extends string = string> extends Envelope<T, K> {
  /** 1 on first delivery, incremented on each delayed retry. */
  readonly attempt: number;
}

export const JSON_CONTENT_TYPE = 'application/json';

let lastMs = 0;
let lastIso = '';

/**
 * `new Date().toISOString()` costs close to a microsecond on a small machine, more than the rest of an
 * in-memory publish; messages published within the same millisecond share the string.
 */
export function nowIso(ms: number = Date.now()): string {
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** A new message id: a UUID v7, unique and ordered by creation time (`ms`: the clock, read once by callers that also need it). */
export function newMessageId(ms: number = Date.now()): string {
  return uuidv7(ms);
}

/**
 * Copies an envelope into a message for one delivery attempt, with `data` (the envelope's unless
 * given) and headers of its own, as a message decoded from bytes has. Built field by field: a spread
 * costs more on the hot path.
 */
export function toMessage<T, K extends string>(
  envelope: Envelope<T, K>,
  attempt: number,
  data: T = envelope.data,
): Message<T, K> {
  const message: {
    -readonly [P in keyof Message<T, K>]: Message<T, K>[P];
  } = {
    specversion: envelope.specversion,
    id: envelope.id,
    source: envelope.source,
    type: envelope.type,
    time: envelope.time,
    datacontenttype: envelope.datacontenttype,
    data,
    correlationid: envelope.correlationid,
    attempt,
  };
  if (envelope.causationid !== undefined) message.causationid = envelope.causationid;
  // No headers and empty headers are one thing, as RabbitMQ carries them: the field is left out.
  if (envelope.headers !== undefined) {
    for (const _ in envelope.headers) {
      message.headers = { ...envelope.headers };
      break;
    }
  }
  if (envelope.expiresat !== undefined) message.expiresat = envelope.expiresat;
  return message;
}
