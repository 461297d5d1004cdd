/**
 * What every backend can store, checked above the backends so that memory, SQLite and PostgreSQL
 * accept and refuse the same things and read back the same values.
 */

import { describeThrown } from '../errors/describe-thrown.js';

/** Limits on what an event store accepts, the same on every backend. */
export const EVENT_LIMITS = {
  /** UTF-16 code units in a stream id. */
  streamIdLength: 500,
  /** UTF-16 code units in an event type. */
  typeLength: 200,
  /**
   * Nesting of arrays and objects in data, metadata and snapshot state. PostgreSQL refuses jsonb
   * nested some thousands deep (its stack limit); a lower, fixed bound is the same everywhere.
   */
  depth: 100,
  /**
   * UTF-8 bytes in one string or key of data, metadata and snapshot state: PostgreSQL's jsonb holds
   * strings shorter than 2^28 bytes ("string too long to represent as jsonb string").
   */
  jsonStringBytes: 268_435_455,
} as const;

/** A string of at most this many UTF-16 code units is within {@link EVENT_LIMITS.jsonStringBytes}: one unit is at most 3 bytes of UTF-8. */
const SURELY_SHORT_ENOUGH = Math.floor(EVENT_LIMITS.jsonStringBytes / 3);

// With the u flag a surrogate pair is one code point: only lone surrogates match.
const LONE_SURROGATE = /\p{Surrogate}/u;

/**
 * Why a string cannot be stored as a name (stream id, event type), or undefined when it can: a
 * non-empty string of at most `max` UTF-16 code units, well-formed (no lone surrogate, which
 * PostgreSQL would turn into U+FFFD and so merge distinct ids), without NUL (which PostgreSQL text
 * refuses).
 */
export function nameProblem(value: unknown, max: number): string | undefined {
  if (typeof value !== 'string') return `is ${describe(value)}, not a string`;
  if (value.length === 0) return 'is empty';
  if (value.length > max) return `has ${value.length} characters, more than ${max}`;
  return stringProblem(value);
}

function stringProblem(value: string): string | undefined {
  if (value.includes('\u0000')) return 'contains NUL (\\u0000)';
  if (LONE_SURROGATE.test(value)) return 'contains a lone surrogate (malformed UTF-16)';
  return undefined;
}

/** A value that cannot be stored as JSON; `message` says where and why, `cause` what was thrown, if anything. */
export class JsonEncodingProblem {
  constructor(
    readonly message: string,
    readonly cause?: unknown,
  ) {}
}

/** Why a string (a value or a key) of data cannot be stored, or undefined when it can. */
function jsonStringProblem(value: string): string | undefined {
  // Counting bytes reads the whole string: only for those that may be too long.
  if (value.length > SURELY_SHORT_ENOUGH) {
    const bytes = Buffer.byteLength(value, 'utf8');
    if (bytes > EVENT_LIMITS.jsonStringBytes) {
      return `is ${bytes} bytes long in UTF-8, more than the ${EVENT_LIMITS.jsonStringBytes} a string may have`;
    }
  }
  return stringProblem(value);
}

/**
 * `value` as every backend stores it: a fresh copy through a JSON round trip (a Date becomes its ISO
 * string, undefined object members disappear, NaN and Infinity become null, a Map becomes {} and so
 * on, as `JSON.stringify` has it). Returns a {@link JsonEncodingProblem} for what JSON cannot hold
 * or what a backend would refuse or change: BigInt, cycles, a top-level value with no JSON form
 * (function, symbol, `toJSON` returning undefined), strings or keys with NUL or lone surrogates or
 * longer than {@link EVENT_LIMITS.jsonStringBytes} in UTF-8, nesting deeper than {@link EVENT_LIMITS.depth}.
 */
export function encodeJson(value: unknown): unknown {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    return new JsonEncodingProblem(`cannot be encoded as JSON: ${describeThrown(error).message}`, error);
  }
  if (json === undefined) return new JsonEncodingProblem(`is ${describe(value)}, which has no JSON form`);
  const copy: unknown = JSON.parse(json);
  const problem = walk(copy, '', 0);
  return problem === undefined ? copy : new JsonEncodingProblem(problem);
}

function walk(value: unknown, path: string, depth: number): string | undefined {
  if (typeof value === 'string') {
    const problem = jsonStringProblem(value);
    return problem === undefined ? undefined : `${where(path)} ${problem}`;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  if (depth >= EVENT_LIMITS.depth) return `is nested deeper than ${EVENT_LIMITS.depth} levels`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = walk(value[i], `${path}[${i}]`, depth + 1);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  for (const [key, child] of Object.entries(value)) {
    const keyProblem = jsonStringProblem(key);
    if (keyProblem !== undefined) return `${where(path)} has a key that ${keyProblem}`;
    const problem = walk(child, `${path}.${JSON.stringify(key).slice(1, -1)}`, depth + 1);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function where(path: string): string {
  return path === '' ? 'the value' : `value at ${path.startsWith('.') ? path.slice(1) : path}`;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'string') return 'a string';
  if (value === undefined) return 'undefined';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
