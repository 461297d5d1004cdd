import type { CollectedResponse } from './collect-response.js';
import type { ProblemDetails } from './errors.js';
import { PROBLEM_CONTENT_TYPE } from './headers.js';

/** `Retry-After`: delay seconds or an HTTP date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === '') return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export function isJson(contentType: string | string[] | undefined): boolean {
  const text = Array.isArray(contentType) ? contentType[0] : contentType;
  if (text === undefined) return false;
  // The common exact spellings first, without splitting strings per response.
  if (text === 'application/json' || text.startsWith('application/json;')) return true;
  const type = text.split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || type.endsWith('+json');
}

/** Marks a body the server said was JSON and is not. */
export const MALFORMED_JSON: unique symbol = Symbol('malformed JSON');

/** The body as JSON when the server said JSON (`MALFORMED_JSON` if it is not), else text; undefined when empty. */
export function decodeBody(response: CollectedResponse): unknown {
  if (response.body.length === 0) return undefined;
  const text = response.body.toString('utf8');
  if (!isJson(response.headers['content-type'])) return text;
  try {
    return JSON.parse(text);
  } catch {
    return MALFORMED_JSON;
  }
}

export function problemOf(
  headers: Record<string, string | string[] | undefined>,
  body: unknown,
): ProblemDetails | undefined {
  const type = headers['content-type'];
  const base = (Array.isArray(type) ? type[0] : type)?.split(';')[0]?.trim().toLowerCase();
  if (base !== PROBLEM_CONTENT_TYPE || typeof body !== 'object' || body === null) return undefined;
  return body as ProblemDetails;
}
