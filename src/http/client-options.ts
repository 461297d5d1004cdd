import type { Dispatcher } from 'undici';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { integerOption, positiveIntegerOption } from '../errors/integer-option.js';
import { assertOptionsObject, checkOptions, refuseUnknownKeys } from '../errors/options-object.js';
import type { Backoff } from '../resilience/backoff.js';
import type { RetryBudgetOptions } from '../resilience/budget.js';
import { CircuitBreaker, type CircuitBreakerOptions } from '../resilience/circuit-breaker.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { HTTP_HEADER } from './headers.js';

/** Retry settings of a client or a call. */
export interface ClientRetryOptions {
  /** Attempts in all, the first included. @default 3 */
  readonly maxAttempts?: number;
  /** Wait before each retry. @default exponential, full jitter, 100 ms doubling up to 5 s */
  readonly backoff?: Backoff;
  /** Longest `Retry-After` honoured, in ms from 0 to 2^31 − 1; a longer one ends the retries. @default 30000 */
  readonly maxRetryAfterMs?: number;
  /**
   * Statuses retried (for requests that are safe to retry). A 409 with the problem code
   * `IDEMPOTENCY_KEY_IN_USE` (the server middleware's answer while a request with the same key
   * still runs) is retried too, whatever this says. Integers from 100 to 599.
   * @default [408, 429, 502, 503, 504]
   */
  readonly statuses?: readonly number[];
}

/** Options of a {@link ServiceClient}; every one but `name` and the pool's can be overridden per call. */
export interface ServiceClientOptions {
  /** Names the target in errors and events; not empty. @default the origin */
  readonly name?: string;
  /** Per-attempt timeout in ms. @default 5000 */
  readonly timeout?: number;
  /** Overall budget of a call in ms, retries and waits included; an ambient deadline may shorten it. @default none */
  readonly deadline?: number;
  /** `false` turns retries off. @default { maxAttempts: 3 } for requests that are safe to retry */
  readonly retry?: false | ClientRetryOptions;
  /** Retries may add at most this share of requests (`false`: unlimited). @default { ratio: 0.2, minRetriesPerSecond: 10 } */
  readonly retryBudget?: false | RetryBudgetOptions;
  /**
   * Circuit breakers, one per target: per origin, or per route (method and path template, see the
   * call option `route`). `false` turns them off. Connection errors, timeouts, 5xx and 429 count as
   * failures; other 4xx do not. `isIgnored(error)` returning true leaves an error out of the count
   * (besides what the client never counts: aborts, deadlines, refusals of its own).
   * @default { key: 'origin' } with the breaker's defaults
   */
  readonly breaker?:
    | false
    | (Omit<CircuitBreakerOptions, 'isFailure' | 'name'> & {
        readonly key?: 'origin' | 'route';
        /**
         * Most route breakers kept (with `key: 'route'`). Beyond it the oldest closed one is
         * forgotten; when every one is open, new routes share the origin's breaker. @default 1000
         */
        readonly maxRoutes?: number;
      });
  /** Bounds concurrent calls and those waiting; `false` turns it off. @default { maxConcurrent: 256, maxQueue: 1024 } */
  readonly bulkhead?: false | { readonly maxConcurrent?: number; readonly maxQueue?: number };
  /**
   * Headers sent with every request. An `Idempotency-Key` is refused (`INVALID_OPTIONS`): one key
   * for every call would have the server answer each with the first one's response.
   */
  readonly headers?: Readonly<Record<string, string>>;
  /** Keep-alive connections to the origin, an integer of at least 1. @default 64 */
  readonly connections?: number;
  /**
   * Largest response body read. A 2xx answer's larger body fails the call with `RESPONSE_TOO_LARGE`;
   * another answer is handled by its status as ever, its body cut there (`bodyTruncated`). An
   * integer of at least 1. @default 16777216 (16 MiB)
   */
  readonly maxResponseBytes?: number;
  /** A dispatcher of your own (an undici Agent, a mock…) instead of the client's pool. */
  readonly dispatcher?: Dispatcher;
}

export const DEFAULT_SERVICE_CLIENT_OPTIONS = Object.freeze({
  timeout: 5000,
  retry: Object.freeze({
    maxAttempts: 3,
    maxRetryAfterMs: 30_000,
    statuses: Object.freeze([408, 429, 502, 503, 504]),
  }),
  retryBudget: Object.freeze({ ratio: 0.2, minRetriesPerSecond: 10 }),
  bulkhead: Object.freeze({ maxConcurrent: 256, maxQueue: 1024 }),
  connections: 64,
  maxResponseBytes: 16 * 1024 * 1024,
  // Under `breaker`, where the option goes: the defaults spread into options are options the client takes.
  breaker: Object.freeze({ maxRoutes: 1000 }),
});

/** Options of one call. */
export interface CallOptions {
  readonly headers?: Readonly<Record<string, string>>;
  /** Per-attempt timeout in ms. */
  readonly timeout?: number;
  /** Overall budget in ms. */
  readonly deadline?: number;
  readonly signal?: AbortSignal;
  readonly retry?: false | ClientRetryOptions;
  /**
   * Makes a POST or PATCH safe to retry: the server stores the first response under this key. With
   * retries on, the client generates one when none is given. 1 to 255 printable ASCII characters,
   * spaces only inside (surrounding double quotes not counted), as the server middleware reads it;
   * another is refused with `INVALID_OPTIONS` (an `Idempotency-Key` header, with `INVALID_REQUEST`),
   * and so is a call whose `Idempotency-Key` header holds another key (`INVALID_REQUEST`).
   */
  readonly idempotencyKey?: string;
  /**
   * Path template for per-route breakers, e.g. `/users/:id`. Default: the path without its query,
   * with segments that look like ids (digits, UUIDs, 16+ hex digits) read as `:id`.
   */
  readonly route?: string;
  /** Query parameters, appended to the path (before its `#fragment`, which is never sent). */
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
}

/** Retry settings with the defaults applied. */
export type RetrySettings = Required<Omit<ClientRetryOptions, 'backoff'>> & { readonly backoff?: Backoff };

/** What the client reads of its own options, checked. */
export interface ClientSettings {
  readonly name: string;
  readonly connections: number;
  readonly maxResponseBytes: number;
}

/**
 * The client's settings, its options checked as it is made: a value that would lift a limit
 * (`maxResponseBytes: NaN`, `connections: 0`, which undici reads as unlimited) or fail every call
 * later (a breaker setting its breakers, built by the first calls, would refuse) is refused here.
 * The retry settings are checked by {@link retrySettingsOf}, the budget's and the bulkhead's by their
 * constructors, which the client calls at once.
 * @throws InvalidOptionsError naming the option and what it accepts
 */
export function clientSettingsOf(options: ServiceClientOptions, origin: string): ClientSettings {
  checkOptions('ServiceClient', options, CLIENT_OPTION_NAMES);
  const name = options.name === undefined ? origin : options.name;
  if (typeof name !== 'string' || name === '') {
    throw new InvalidOptionsError(`name must be a non-empty string, not ${describeValue(name)}`);
  }
  for (const group of ['retryBudget', 'breaker', 'bulkhead'] as const) checkGroup(group, options[group]);
  validateTimes(options);
  checkBreaker(options.breaker, name);
  checkDispatcher(options.dispatcher);
  const d = DEFAULT_SERVICE_CLIENT_OPTIONS;
  return {
    name,
    connections: positiveIntegerOption('connections', options.connections, d.connections),
    maxResponseBytes: positiveIntegerOption('maxResponseBytes', options.maxResponseBytes, d.maxResponseBytes),
  };
}

/**
 * A dispatcher is anything with undici's `dispatch`: another value failed every call with a
 * `ConnectionError` that opened the breaker as if the target were down. @throws InvalidOptionsError
 */
function checkDispatcher(dispatcher: unknown): void {
  if (dispatcher === undefined) return;
  if (
    typeof dispatcher !== 'object' ||
    dispatcher === null ||
    typeof (dispatcher as { dispatch?: unknown }).dispatch !== 'function'
  ) {
    throw new InvalidOptionsError(
      `dispatcher must be an undici Dispatcher (an Agent, a Pool, a MockAgent…: an object with a dispatch method), not ${describeValue(dispatcher)}`,
    );
  }
}

/**
 * The client's breaker settings are those of every breaker it builds as calls need them: a breaker
 * built now with them refuses what those would, once, rather than every call.
 */
function checkBreaker(breaker: ServiceClientOptions['breaker'], name: string): void {
  if (breaker === undefined || breaker === false) return;
  const { key, maxRoutes, ...settings } = breaker;
  // The client's breakers count failures its own way and are named after it and their route: a
  // given isFailure or name would be dropped (500s still opened a breaker told they were no failure).
  if ('isFailure' in settings) {
    throw new InvalidOptionsError(
      'breaker.isFailure is not read by ServiceClient: its breakers count connection errors, timeouts, 5xx and 429; leave errors out with breaker.isIgnored',
    );
  }
  if ('name' in settings) {
    throw new InvalidOptionsError(
      "breaker.name is not read by ServiceClient: its breakers are named after the client's name (and their route); set the client's name",
    );
  }
  if (key !== undefined && key !== 'origin' && key !== 'route') {
    throw new InvalidOptionsError(`breaker.key must be 'origin' or 'route', not ${describeValue(key)}`);
  }
  integerOption('breaker.maxRoutes', maxRoutes, DEFAULT_SERVICE_CLIENT_OPTIONS.breaker.maxRoutes, 1);
  // isFailure is the client's own (see ServiceClient#breaker); a given isIgnored is added to its own.
  new CircuitBreaker({ ...settings, name, isFailure: () => true });
}

/**
 * What the client, its `retry` and a call read: any other key is a misspelt or misplaced option
 * (`timeOut`, `idempotencykey`: a POST sent without its key), refused rather than dropped.
 */
const CLIENT_OPTION_NAMES = [
  'name',
  'timeout',
  'deadline',
  'retry',
  'retryBudget',
  'breaker',
  'bulkhead',
  'headers',
  'connections',
  'maxResponseBytes',
  'dispatcher',
] as const satisfies readonly (keyof ServiceClientOptions)[];
const RETRY_OPTION_NAMES = [
  'maxAttempts',
  'backoff',
  'maxRetryAfterMs',
  'statuses',
] as const satisfies readonly (keyof ClientRetryOptions)[];
const CALL_OPTION_NAMES = new Set<string>([
  'headers',
  'timeout',
  'deadline',
  'signal',
  'retry',
  'idempotencyKey',
  'route',
  'query',
] satisfies (keyof CallOptions)[]);

/** What `request(init)` reads besides a call's options. */
const REQUEST_INIT_NAMES = new Set(['method', 'path', 'body']);

/**
 * Refuses a key a call does not read (`request` also takes `method`, `path` and `body`): a loop over
 * the keys given, a few ns a call. @throws InvalidOptionsError
 */
export function refuseUnknownCallOptions(options: object, requestInit: boolean): void {
  for (const key in options) {
    // Inherited keys too: the call reads them.
    if (CALL_OPTION_NAMES.has(key) || (requestInit && REQUEST_INIT_NAMES.has(key))) continue;
    const known = [...(requestInit ? REQUEST_INIT_NAMES : []), ...CALL_OPTION_NAMES];
    refuseUnknownKeys(requestInit ? 'request' : 'the call', options, known);
  }
}

/** A nested group of options is `false` (turned off), an object, or left out. */
function checkGroup(name: string, value: unknown): void {
  if (value !== undefined && value !== false && (typeof value !== 'object' || value === null)) {
    throw new InvalidOptionsError(`${name} must be false or an object, not ${describeValue(value)}`);
  }
}

/**
 * The retry settings of the client or of a call, defaults applied.
 * @throws InvalidOptionsError naming the option and what it accepts
 */
export function retrySettingsOf(options: false | ClientRetryOptions | undefined): RetrySettings | undefined {
  if (options === false) return undefined;
  checkGroup('retry', options);
  if (options !== undefined) refuseUnknownKeys('retry', options, RETRY_OPTION_NAMES);
  const d = DEFAULT_SERVICE_CLIENT_OPTIONS.retry;
  const maxAttempts = integerOption('retry.maxAttempts', options?.maxAttempts, d.maxAttempts, 1, 100);
  const maxRetryAfterMs = options?.maxRetryAfterMs ?? d.maxRetryAfterMs;
  if (!(typeof maxRetryAfterMs === 'number' && maxRetryAfterMs >= 0 && maxRetryAfterMs <= MAX_TIMER_MS)) {
    throw new InvalidOptionsError(
      `retry.maxRetryAfterMs must be a number of milliseconds in [0, ${MAX_TIMER_MS}], not ${describeValue(maxRetryAfterMs)}`,
    );
  }
  const statuses = options?.statuses ?? d.statuses;
  if (!Array.isArray(statuses) || !statuses.every(isStatus)) {
    throw new InvalidOptionsError(
      `retry.statuses must be an array of HTTP statuses (integers from 100 to 599), not ${describeValue(statuses)}`,
    );
  }
  const backoff = options?.backoff;
  if (backoff === undefined) return { maxAttempts, maxRetryAfterMs, statuses };
  if (typeof backoff !== 'function') {
    throw new InvalidOptionsError(
      `retry.backoff must be a function (attempt, previousDelayMs) => ms, such as exponentialBackoff(), not ${describeValue(backoff)}`,
    );
  }
  return { maxAttempts, maxRetryAfterMs, statuses, backoff };
}

function isStatus(status: unknown): boolean {
  return Number.isInteger(status) && (status as number) >= 100 && (status as number) <= 599;
}

/** An HTTP method or field name (RFC 9110 token). */
export const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What undici sends of a `connection` header: close or keep-alive, and nothing else. */
const CONNECTION_VALUE = /^\s*(close|keep-alive)\s*$/i;
/** Hop-by-hop headers undici refuses on any request: the connection's own framing decides them. */
const UNDICI_REFUSES = new Set(['transfer-encoding', 'upgrade', 'keep-alive']);
/**
 * Headers that cannot go with every call though a call may send them: `expect`, and a
 * `content-length`, which is each body's own (the client sets it).
 */
const NOT_CLIENT_HEADERS = new Set(['expect', 'content-length']);

/**
 * The client's headers go with every call, so they are checked as the client is made: a value
 * undici would refuse (a line break, a bad name, `transfer-encoding`…) failed every call with
 * `INVALID_REQUEST` instead, and a string was sent as headers `0`, `1`…. An Idempotency-Key among
 * them would make the server answer every POST with the response stored for the first.
 * @throws InvalidOptionsError
 */
export function checkClientHeaders(headers: unknown): void {
  if (headers === undefined) return;
  assertPlainHeaders('ServiceClient headers', headers);
  for (const name of Object.keys(headers as object)) {
    const value = (headers as Record<string, unknown>)[name];
    if (value === undefined) continue;
    assertHeaderString('ServiceClient headers', name, value);
    const problem = unsendableHeader(name, value);
    if (problem !== undefined) throw new InvalidOptionsError(`ServiceClient headers: ${problem}`);
    const lower = name.toLowerCase();
    if (NOT_CLIENT_HEADERS.has(lower)) {
      throw new InvalidOptionsError(
        `ServiceClient headers must not hold ${name}: it cannot go with every call (the client sets what each needs)`,
      );
    }
    if (lower === HTTP_HEADER.idempotencyKey) {
      throw new InvalidOptionsError(
        'ServiceClient headers must not hold an Idempotency-Key: every call would send the same one, and the server would answer each with the response stored for the first. Give each call its own (the call option idempotencyKey), or let the client make one per call',
      );
    }
  }
}

/**
 * A call's headers are a plain object of names and string values, as the client's are: a number, a
 * boolean or an array was sent as its `String()` (`5`, `true`, `a,b`) while the constructor refused
 * it. What else a call may send (its own Idempotency-Key, content-length…) is checked as it is made.
 * @throws InvalidOptionsError
 */
export function checkCallHeaders(headers: unknown): void {
  assertPlainHeaders('the call headers', headers);
  for (const name of Object.keys(headers as object)) {
    const value = (headers as Record<string, unknown>)[name];
    if (value !== undefined) assertHeaderString('the call headers', name, value);
  }
}

/**
 * `<name> holds a line break or control character (…)` when `value` has one HTTP does not allow in
 * a header value, else undefined. The value is not shown: it may be a secret (a token read with its
 * trailing newline).
 */
export function controlCharacter(name: string, value: string): string | undefined {
  const at = value.search(/[^\t\x20-\x7e\x80-\xff]/);
  if (at < 0) return undefined;
  const code = value.charCodeAt(at).toString(16).toUpperCase().padStart(4, '0');
  const what =
    value.charCodeAt(at) > 0xff
      ? 'a character a header cannot carry (outside Latin-1)'
      : 'a line break or control character';
  return `${name} holds ${what} (U+${code} at index ${at} of ${value.length}; the value is not shown, it may be a secret)`;
}

/**
 * Why a call's headers cannot be sent as given, or undefined: checked before anything is sent,
 * since undici, given such a header, refused the call but kept one of the pool's connections for
 * good (after `connections` such calls every later call timed out, nothing sent).
 */
export function callHeaderProblem(headers: Readonly<Record<string, string | undefined>>): string | undefined {
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (value === undefined) continue;
    const problem = unsendableHeader(name, value);
    if (problem !== undefined) return `its header ${problem}`;
  }
  return undefined;
}

/**
 * Why undici would refuse to send this header, or undefined: a name that is not a header name, a
 * line break or control character in the value, a hop-by-hop header the connection's own framing
 * decides (`transfer-encoding`, `keep-alive`, `upgrade`), a `connection` but for close or
 * keep-alive. The value is never shown: it may be a secret (a token read with its trailing newline).
 */
function unsendableHeader(name: string, value: string): string | undefined {
  if (!HTTP_TOKEN.test(name)) return `${describeValue(name)} is not a header name`;
  const control = controlCharacter(name, value);
  if (control !== undefined) return control;
  const lower = name.toLowerCase();
  if (UNDICI_REFUSES.has(lower)) {
    return `${name} is the connection's own: it cannot be set (the client sets what each call needs)`;
  }
  if (lower === 'connection' && !CONNECTION_VALUE.test(value)) {
    return 'connection may only say close or keep-alive (undici refuses any other)';
  }
  return undefined;
}

/**
 * A header value is a string. It is not quoted when refused: it may be a credential (a token read
 * with its trailing newline). @throws InvalidOptionsError
 */
function assertHeaderString(where: string, name: string, value: unknown): asserts value is string {
  if (typeof value === 'string') return;
  const kind = Array.isArray(value)
    ? 'an array'
    : value === null
      ? 'null'
      : typeof value === 'object'
        ? 'an object'
        : `a ${typeof value}`;
  throw new InvalidOptionsError(`${where}: ${name} must be a string, not ${kind}`);
}

/**
 * Headers are a plain object of names and values: a `Headers` or a `Map` has none of its own to
 * read (a Map's were never sent, a Headers failed every call). @throws InvalidOptionsError
 */
function assertPlainHeaders(name: string, headers: unknown): void {
  assertPlainObject(
    name,
    headers,
    'header names and string values',
    'a Headers or a Map: pass Object.fromEntries(headers)',
  );
}

/**
 * An object whose own members are what a call reads (`{}` or `Object.create(null)`): a class
 * instance such as a `Map` keeps its entries elsewhere, which were never sent. `holding` says what
 * its members are, `hint` what to pass instead. @throws InvalidOptionsError
 */
function assertPlainObject(name: string, value: unknown, holding: string, hint: string): void {
  assertOptionsObject(name, value);
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) {
    throw new InvalidOptionsError(
      `${name} must be a plain object of ${holding}, not ${describeValue(value)} (${hint})`,
    );
  }
}

/**
 * A call's `query` is a plain object of names and strings, numbers or booleans (`undefined` left
 * out): a `URLSearchParams` or a `Map` has no members of its own and went out as no query at all, a
 * string as `?0=s&1=t…`, an array or object member as its `String()`. @throws InvalidOptionsError
 */
export function checkQuery(query: unknown): void {
  assertPlainObject(
    'the call query',
    query,
    'parameter names and values',
    'a URLSearchParams or a Map: pass Object.fromEntries(params), or put the query in the path',
  );
  for (const name of Object.keys(query as object)) {
    const value = (query as Record<string, unknown>)[name];
    const kind = typeof value;
    if (
      value === undefined ||
      kind === 'string' ||
      kind === 'boolean' ||
      (kind === 'number' && Number.isFinite(value))
    ) {
      continue;
    }
    throw new InvalidOptionsError(
      `the call query parameter ${JSON.stringify(name)} must be a string, a finite number, a boolean or undefined, not ${describeValue(value)}`,
    );
  }
}

/** A call's `signal` is an AbortSignal: anything else failed the call with a TypeError. @throws InvalidOptionsError */
export function checkSignal(signal: unknown): void {
  if (signal instanceof AbortSignal) return;
  throw new InvalidOptionsError(`the call signal must be an AbortSignal, not ${describeValue(signal)}`);
}

/** @throws InvalidOptionsError */
export function validateTimes(options: ServiceClientOptions | CallOptions): void {
  for (const name of ['timeout', 'deadline'] as const) {
    const value = options[name];
    if (value !== undefined && !(typeof value === 'number' && value > 0 && value <= MAX_TIMER_MS)) {
      throw new InvalidOptionsError(
        `${name} must be a number of milliseconds in (0, ${MAX_TIMER_MS}], not ${describeValue(value)}`,
      );
    }
  }
}
