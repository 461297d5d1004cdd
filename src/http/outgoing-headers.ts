import type { FerryContext } from '../context/context.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { HTTP_HEADER } from './headers.js';
import { childTraceparent, isValidCorrelationId, newTraceparent } from './server/request-context.js';

/**
 * The headers of an outgoing call, every name in lower case: the ambient correlation id and a child
 * span of the ambient trace, then the client's headers, then the call's, so that explicit headers
 * win whatever the case they were written in (`X-Correlation-Id` replaces the ambient one rather
 * than travelling beside it, where Node would join the two into one value).
 *
 * An ambient correlation id that is not a valid header value (it may come from a message or any
 * caller) is replaced by a new one, as the server middleware does with an incoming one.
 */
export function outgoingHeaders(
  context: FerryContext | undefined,
  clientHeaders: Readonly<Record<string, string>> | undefined,
  callHeaders: Readonly<Record<string, string>> | undefined,
): Record<string, string> {
  // Assigned one by one: a literal with computed keys and spreads makes a slower dictionary object.
  const headers: Record<string, string> = {};
  const correlationId = context?.correlationId;
  headers[HTTP_HEADER.correlationId] = isValidCorrelationId(correlationId) ? correlationId : uuidv7();
  headers[HTTP_HEADER.traceparent] = context?.traceparent
    ? childTraceparent(context.traceparent)
    : newTraceparent();
  if (clientHeaders !== undefined) assignLowerCase(headers, clientHeaders);
  if (callHeaders !== undefined) assignLowerCase(headers, callHeaders);
  return headers;
}

function assignLowerCase(target: Record<string, string>, source: Readonly<Record<string, string>>): void {
  for (const name in source) {
    const value = source[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    // Assigned, `__proto__` set the object's prototype (to nothing, a string) and was not sent.
    if (lower === '__proto__') {
      Object.defineProperty(target, lower, { value, enumerable: true, writable: true, configurable: true });
    } else target[lower] = value;
  }
}

/** 1 to 255 printable ASCII characters, spaces only inside (HTTP trims them at the ends). */
const IDEMPOTENCY_KEY = /^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$/;

/**
 * Whether `value` can be sent as an `Idempotency-Key` and arrives as the same key: 1 to 255
 * printable ASCII characters, spaces only inside; surrounding double quotes (a structured-field
 * string, as the IETF draft writes it) are not counted, as the server middleware reads the key.
 */
export function isValidIdempotencyKey(value: unknown): value is string {
  return typeof value === 'string' && IDEMPOTENCY_KEY.test(unquotedIdempotencyKey(value));
}

/** An `Idempotency-Key` as the server middleware reads it: without surrounding double quotes. */
export function unquotedIdempotencyKey(value: string): string {
  return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
}
