import type { CollectedResponse } from './collect-response.js';
import type { ProblemDetails } from './errors.js';
import { PROBLEM_CONTENT_TYPE } from './headers.js';

type HeaderValue = string | string[] | undefined;

/** The first value of a header (Node gives an array for one sent on several lines). */
function firstValue(header: HeaderValue): string | undefined {
  return Array.isArray(header) ? header[0] : header;
}

/** A content type's media type, without its parameters, in lower case; undefined when there is none. */
function mediaTypeOf(contentType: HeaderValue): string | undefined {
  const text = firstValue(contentType);
  return text === undefined ? undefined : text.split(';')[0]!.trim().toLowerCase();
}

/** `Retry-After`: delay seconds or an HTTP date. */
export function parseRetryAfter(value: HeaderValue, now = Date.now()): number | undefined {
  const text = firstValue(value);
  if (text === undefined || text.trim() === '') return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export function isJson(contentType: HeaderValue): boolean {
  const text = firstValue(contentType);
  if (text === undefined) return false;
  // The common exact spellings first, without splitting strings per response.
  if (text === 'application/json' || text.startsWith('application/json;')) return true;
  const type = mediaTypeOf(text)!;
  return type === 'application/json' || type.endsWith('+json');
}

/** Marks a body the server said was JSON and is not. */
export const MALFORMED_JSON: unique symbol = Symbol('malformed JSON');

/**
 * Whether a media type's bodies are text: `text/*`, JSON and XML (`+json`, `+xml`), forms,
 * JavaScript, YAML (and `+yaml`). Others (`application/octet-stream`, images, PDF, protobuf…) are bytes.
 */
function isTextual(contentType: HeaderValue): boolean {
  const type = mediaTypeOf(contentType);
  if (type === undefined || type === '' || type.startsWith('text/')) return true;
  if (type.endsWith('+json') || type.endsWith('+xml') || type.endsWith('+yaml')) return true;
  return TEXT_TYPES.has(type);
}

const TEXT_TYPES = new Set([
  'application/json',
  'application/xml',
  'application/x-www-form-urlencoded',
  'application/javascript',
  'application/ecmascript',
  'application/x-javascript',
  'application/yaml',
  'application/x-yaml',
  'application/graphql',
  'application/x-ndjson',
  'application/jsonl',
]);

/** The `charset` parameter of a content type, in lower case; `undefined` when none is given. */
function charsetOf(contentType: HeaderValue): string | undefined {
  const text = firstValue(contentType);
  const match = text === undefined ? null : /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(text);
  return match?.[1]?.toLowerCase();
}

/** The body as text in the charset the answer names, whatever its type (a body cut short, JSON that is not). */
export function bodyText(response: CollectedResponse): string {
  return decodeText(response.body, charsetOf(response.headers['content-type']));
}

/** Text in the charset the answer names (UTF-8 when none, or one Node does not know). */
function decodeText(body: Buffer, charset: string | undefined): string {
  if (charset === undefined || charset === 'utf-8' || charset === 'utf8') return body.toString('utf8');
  try {
    return new TextDecoder(charset).decode(body);
  } catch {
    return body.toString('utf8');
  }
}

/**
 * The body as JSON when the server said JSON (a leading byte-order mark ignored; `MALFORMED_JSON` if
 * it is not JSON), as text for a textual type or none (in its charset), else as the bytes sent (a
 * Buffer); undefined when empty.
 */
export function decodeBody(response: CollectedResponse): unknown {
  if (response.body.length === 0) return undefined;
  const contentType = response.headers['content-type'];
  if (isJson(contentType)) {
    const text = response.body.toString('utf8');
    try {
      return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    } catch {
      return MALFORMED_JSON;
    }
  }
  if (!isTextual(contentType)) return Buffer.from(response.body);
  return bodyText(response);
}

export function problemOf(headers: Record<string, HeaderValue>, body: unknown): ProblemDetails | undefined {
  if (
    mediaTypeOf(headers['content-type']) !== PROBLEM_CONTENT_TYPE ||
    typeof body !== 'object' ||
    body === null
  )
    return undefined;
  return body as ProblemDetails;
}
