import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { describeValue } from '../../errors/describe-value.js';
import { InvalidOptionsError } from '../../errors/ferry-error.js';
import { HTTP_HEADER } from '../headers.js';
import { isJson } from '../response-body.js';
import { canonicalJson } from './canonical-json.js';
import { headerLines } from './header-lines.js';
import { HttpProblemError } from './problem.js';
import type { CapturedResponse } from './response-capture.js';

/** A response kept for replay: status, a subset of headers, and the serialized body. */
export interface StoredResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** How `body` encodes the bytes sent: text as is, or binary as base64. @default 'utf8' */
  readonly encoding?: 'utf8' | 'base64';
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Throws `InvalidOptionsError` unless `response` is one a store can keep and replay as it was: an
 * integer status from 100 to 999 (what Node sends), headers of string values, a string body,
 * `encoding` `utf8` or `base64` (then the body valid base64) or none. Every store checks what
 * `complete` is given, so that an answer is never taken as kept while nothing, or something else,
 * was stored.
 */
export function assertStoredResponse(response: StoredResponse): void {
  const fail = (what: string): never => {
    throw new InvalidOptionsError(`an idempotency store cannot keep this response: ${what}`);
  };
  if (typeof response !== 'object' || response === null) fail('it is not an object');
  const { status, headers, body, encoding } = response;
  if (!Number.isInteger(status) || status < 100 || status > 999)
    fail('status must be an integer from 100 to 999, as Node sends it');
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers))
    fail('headers must be an object');
  for (const value of Object.values(headers))
    if (typeof value !== 'string') fail('header values must be strings');
  if (typeof body !== 'string') fail('body must be a string');
  if (encoding !== undefined && encoding !== 'utf8' && encoding !== 'base64') {
    fail("encoding must be 'utf8' or 'base64'");
  }
  if (encoding === 'base64' && !BASE64.test(body)) fail('body is not valid base64');
}

/** What the store says about a key when a request carrying it arrives. */
export type IdempotencyBeginResult =
  /**
   * The key is now held for this request. A store that lets a claim lapse (a lease) names it with
   * `claim`, which `complete` and `abandon` are then given back.
   */
  | { readonly state: 'new'; readonly claim?: string }
  | { readonly state: 'replay'; readonly response: StoredResponse }
  | { readonly state: 'mismatch' }
  | { readonly state: 'in-progress' };

/**
 * Remembers idempotency keys. `begin` must be atomic: of two concurrent calls with a new key,
 * exactly one gets `new`. A claimed key stays held until `complete` or `abandon`; a store should
 * bound how long (a lease), so that a handler that hangs, or whose process died, does not block its
 * key for good.
 */
export interface IdempotencyStore {
  /** Claims `key` for a request with `fingerprint`, or reports why it cannot run. */
  begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult>;
  /**
   * Records the response of the request that claimed `key`; later requests replay it. With `claim`
   * (from `begin`), does nothing when that claim lapsed and another request holds the key.
   */
  complete(key: string, response: StoredResponse, claim?: string): Promise<void>;
  /**
   * Releases a claimed key without a response (the handler failed): the next request runs again.
   * With `claim`, does nothing when that claim lapsed and another request holds the key.
   */
  abandon(key: string, claim?: string): Promise<void>;
}

export {
  DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS,
  MemoryIdempotencyStore,
  type MemoryIdempotencyStoreOptions,
} from './memory-idempotency-store.js';

// ---------------------------------------------------------------------------------------------
// The protocol, shared by the framework adapters

/** Options of idempotency-key handling in the server adapters. */
export interface IdempotencyOptions {
  readonly store: IdempotencyStore;
  /** Methods whose `Idempotency-Key` is honoured; others pass through. @default ['POST', 'PATCH'] */
  readonly methods?: readonly string[];
  /**
   * Response headers stored and replayed with the body (and `content-encoding`, always: the body is
   * kept as it was sent). @default DEFAULT_REPLAYED_HEADERS
   */
  readonly replayHeaders?: readonly string[];
  /**
   * Most bytes of a body held in memory to fingerprint it when no body parser read it (a
   * pass-through content-type parser, a multipart route, a handler reading the request stream
   * itself): such a body is received in full before the handler runs, then handed to it unchanged.
   * A larger one is refused with 413 (`IDEMPOTENCY_BODY_TOO_LARGE`). @default 1_048_576 (1 MiB)
   */
  readonly maxHeldBodyBytes?: number;
  /**
   * Most bytes of an answer kept for replay. The answer is taken as it is written to the response,
   * however it is sent (a serialized object, a Buffer, a stream, a hijacked reply written by hand).
   * A larger one is sent but cannot be replayed, yet its handler must not run again: its key stays
   * held, and retries get 409, until the store's lease runs out (as when the client leaves in the
   * middle of a streamed answer, which then never ends). A 5xx releases the key whatever its size.
   * @default 1_048_576 (1 MiB)
   */
  readonly maxStoredBodyBytes?: number;
}

export const DEFAULT_MAX_HELD_BODY_BYTES = 1_048_576;

export const DEFAULT_MAX_STORED_BODY_BYTES = 1_048_576;

export const DEFAULT_REPLAYED_HEADERS: readonly string[] = Object.freeze([
  'content-type',
  'content-language',
  'content-location',
  'location',
  'etag',
  'last-modified',
  'link',
]);

export const DEFAULT_IDEMPOTENT_METHODS: readonly string[] = Object.freeze(['POST', 'PATCH']);

/** Hex SHA-256 of a body. */
export function sha256Hex(body: string | Uint8Array): string {
  return createHash('sha256').update(body).digest('hex');
}

/** What identifies "the same request": method, path with query, and the SHA-256 of the raw body. */
export function requestFingerprint(method: string, path: string, bodySha256: string): string {
  return `${method.toUpperCase()} ${path} sha256:${bodySha256}`;
}

/**
 * SHA-256 (hex) of the {@link canonicalJson} of a parsed body, for {@link IdempotentRequest}'s
 * `jsonSha256`: `undefined` unless `contentType` is JSON (`application/json`, `…+json`) and `body`
 * is plain JSON data (what a JSON parser makes, not a string it left unparsed nor a stream).
 */
export function jsonBodySha256(
  contentType: string | string[] | undefined,
  body: unknown,
): string | undefined {
  if (!isJson(contentType) || typeof body !== 'object' || body === null) return undefined;
  const canonical = canonicalJson(body);
  return canonical === undefined ? undefined : sha256Hex(canonical);
}

/** Response headers as Node and the frameworks return them. */
export type ResponseHeaders = Readonly<Record<string, string | number | readonly string[] | undefined>>;

/** What the adapter should do with a request. */
export type IdempotencyDecision =
  /** No key, or a method whose key is not honoured: run as usual. */
  | { readonly action: 'pass' }
  /**
   * The key (as stored, with its scope) is claimed: run, then `finish` or `abandon` it with `claim`
   * (`undefined` when the store does not name its claims).
   */
  | { readonly action: 'run'; readonly key: string; readonly claim: string | undefined }
  /** Send the stored response (with `idempotent-replayed: true`) without running the handler. */
  | { readonly action: 'replay'; readonly response: StoredResponse }
  /** Refuse with this problem (400 bad key, 409 in progress, 422 key reused for another request). */
  | { readonly action: 'reject'; readonly error: HttpProblemError };

/** The request as the idempotency protocol sees it. */
export interface IdempotentRequest {
  readonly method: string;
  /** Path and query string. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /**
   * The request's header lines as sent (Node's `rawHeaders`): with them, a key sent on more than one
   * line is refused (400 `IDEMPOTENCY_KEY_INVALID`) instead of being read as the one value Node
   * joins them into (`K, K`: a key nobody sent, whose request would run again). The adapters pass them.
   */
  readonly rawHeaders?: readonly string[] | undefined;
  /**
   * SHA-256 of the raw body, hex ({@link sha256Hex} of an empty string when there is none): every
   * byte received, whoever reads them (the adapters see to it, see `maxHeldBodyBytes`).
   */
  readonly bodySha256: string;
  /**
   * {@link jsonBodySha256} of the body a JSON parser read: when set, it stands for the body in the
   * fingerprint instead of `bodySha256`, so that the same data sent again with its members in
   * another order, or other spacing, is the same request (an array in another order is not).
   */
  readonly jsonSha256?: string | undefined;
  /** Whose keys these are (e.g. the authenticated account): keys of different scopes never meet. */
  readonly scope?: string | undefined;
}

/**
 * The `Idempotency-Key` protocol (as Stripe and draft-ietf-httpapi-idempotency-key-header define it)
 * without any framework: the same key with the same request replays the first response; with
 * another request it is refused with 422; while the first is running, with 409. The key is held
 * until the handler has answered (stored) or failed (released), even when the client left before;
 * a handler that does neither holds it for the store's lease. The adapters store the answer before
 * it leaves ({@link settleBeforeSending}): once a client has it, a retry replays it.
 */
/**
 * What the guard reads of its options, checked as the middleware is set up: a missing or wrong
 * store, or a scope that is not a function, answered every request carrying a key with a 500 (every
 * POST a retrying `ServiceClient` sends carries one), and a string `methods` threw a TypeError.
 * @throws InvalidOptionsError
 */
function checkGuardOptions(options: IdempotencyOptions): void {
  const store = options.store as Partial<IdempotencyStore> | null | undefined;
  if (
    typeof store !== 'object' ||
    store === null ||
    typeof store.begin !== 'function' ||
    typeof store.complete !== 'function' ||
    typeof store.abandon !== 'function'
  ) {
    throw new InvalidOptionsError(
      `idempotency.store must be an IdempotencyStore (begin, complete and abandon: new MemoryIdempotencyStore(), or createIdempotencyStore({ url })), not ${describeValue(store)}`,
    );
  }
  for (const name of ['methods', 'replayHeaders'] as const) {
    const list = options[name];
    if (list !== undefined && !(Array.isArray(list) && list.every((item) => typeof item === 'string'))) {
      throw new InvalidOptionsError(
        `idempotency.${name} must be an array of strings, not ${describeValue(list)}`,
      );
    }
  }
  const scope = (options as { readonly scope?: unknown }).scope;
  if (scope !== undefined && typeof scope !== 'function') {
    throw new InvalidOptionsError(
      `idempotency.scope must be a function of the request giving whose keys these are, not ${describeValue(scope)}`,
    );
  }
}

/** A request refused for its key: 400 `IDEMPOTENCY_KEY_INVALID`, saying why. */
function invalidKey(detail: string): IdempotencyDecision {
  return {
    action: 'reject',
    error: new HttpProblemError(400, undefined, { detail, extensions: { code: 'IDEMPOTENCY_KEY_INVALID' } }),
  };
}

export class IdempotencyGuard {
  readonly #store: IdempotencyStore;
  readonly #methods: ReadonlySet<string>;
  readonly #replayHeaders: readonly string[];
  /** See {@link IdempotencyOptions.maxHeldBodyBytes}. */
  readonly maxHeldBodyBytes: number;
  /** See {@link IdempotencyOptions.maxStoredBodyBytes}. */
  readonly maxStoredBodyBytes: number;

  constructor(options: IdempotencyOptions) {
    checkGuardOptions(options);
    this.#store = options.store;
    this.#methods = new Set((options.methods ?? DEFAULT_IDEMPOTENT_METHODS).map((m) => m.toUpperCase()));
    // The body is kept as it was sent, so its content coding (a compression plugin's) goes with it.
    this.#replayHeaders = [
      ...new Set([
        ...(options.replayHeaders ?? DEFAULT_REPLAYED_HEADERS).map((h) => h.toLowerCase()),
        'content-encoding',
      ]),
    ];
    this.maxHeldBodyBytes = options.maxHeldBodyBytes ?? DEFAULT_MAX_HELD_BODY_BYTES;
    if (!Number.isInteger(this.maxHeldBodyBytes) || this.maxHeldBodyBytes < 0) {
      throw new InvalidOptionsError('maxHeldBodyBytes must be a non-negative integer');
    }
    this.maxStoredBodyBytes = options.maxStoredBodyBytes ?? DEFAULT_MAX_STORED_BODY_BYTES;
    if (!Number.isInteger(this.maxStoredBodyBytes) || this.maxStoredBodyBytes < 0) {
      throw new InvalidOptionsError('maxStoredBodyBytes must be a non-negative integer');
    }
  }

  /** True when the request carries a key the guard will look at (so its body must be hashed). */
  applies(method: string, headers: IncomingHttpHeaders): boolean {
    return this.#methods.has(method.toUpperCase()) && headers[HTTP_HEADER.idempotencyKey] !== undefined;
  }

  async begin(request: IdempotentRequest): Promise<IdempotencyDecision> {
    if (!this.applies(request.method, request.headers)) return { action: 'pass' };
    if (request.rawHeaders !== undefined && headerLines(request.rawHeaders, HTTP_HEADER.idempotencyKey) > 1) {
      return invalidKey('The Idempotency-Key header was sent more than once: send one key, on one line.');
    }
    const key = parseIdempotencyKey(request.headers[HTTP_HEADER.idempotencyKey]);
    if (key === undefined) return invalidKey('The Idempotency-Key header must hold 1 to 255 characters.');
    const fingerprint =
      request.jsonSha256 === undefined
        ? requestFingerprint(request.method, request.url, request.bodySha256)
        : `${request.method.toUpperCase()} ${request.url} json-sha256:${request.jsonSha256}`;
    // Length-prefixed, so that no scope and key can spell another pair's stored key.
    const storedKey = request.scope === undefined ? key : `${request.scope.length}:${request.scope}:${key}`;
    const result = await this.#store.begin(storedKey, fingerprint);
    switch (result.state) {
      case 'new':
        return { action: 'run', key: storedKey, claim: result.claim };
      case 'replay':
        return { action: 'replay', response: result.response };
      case 'mismatch':
        return {
          action: 'reject',
          error: new HttpProblemError(422, 'Idempotency key reused', {
            detail: 'This Idempotency-Key was already used for a different request (method, path or body).',
            extensions: { code: 'IDEMPOTENCY_KEY_MISMATCH' },
          }),
        };
      case 'in-progress':
        return {
          action: 'reject',
          error: new HttpProblemError(409, 'Request in progress', {
            detail: 'A request with this Idempotency-Key is still being processed; retry later.',
            extensions: { code: 'IDEMPOTENCY_KEY_IN_USE' },
            headers: { 'retry-after': '1' },
          }),
        };
    }
  }

  /**
   * Ends a claimed key with the response the handler gave (sent or not: the client may have left):
   * stored when it is final, released when the client should be able to try again (5xx, 408, 409,
   * 422, 425, 429, 499).
   */
  async finish(
    key: string,
    status: number,
    headers: ResponseHeaders,
    body: string | Uint8Array | undefined,
    claim?: string,
  ): Promise<void> {
    if (!isReplayableStatus(status)) {
      await this.#store.abandon(key, claim);
      return;
    }
    await this.#store.complete(key, this.#toStored(status, headers, body), claim);
  }

  /**
   * Ends a claimed key with the answer captured as it was written ({@link CapturedResponse}), as
   * {@link finish} does; except that an answer whose body was over `maxStoredBodyBytes` is not
   * stored, and its key stays held until the store's lease runs out (unless its status releases
   * it), so that the handler does not run again for an answer nobody can replay; and that an answer
   * marked `final` (a 5xx whose request may have been carried out) is kept as a final one is.
   */
  async finishCaptured(key: string, response: CapturedResponse, claim?: string): Promise<void> {
    if (!isKeptAnswer(response)) {
      await this.#store.abandon(key, claim);
      return;
    }
    if (response.body === undefined) return;
    await this.#store.complete(key, this.#toStored(response.status, response.headers, response.body), claim);
  }

  /**
   * Ends a claimed key with the answer about to be sent ({@link finishCaptured}), which the adapters
   * hold until this resolves: a request arriving once the client has the answer finds it stored.
   * Every failure of the store is given to `report`. When the answer was to be stored and could not
   * be, rejects with the problem to send instead ({@link answerNotStoredProblem}): the client must
   * not get an answer no retry could replay. When the key was to be released (the answer is an
   * error the client may retry) and could not be, resolves: the answer goes out, and its key stays
   * held until the store's lease runs out.
   */
  async settleBeforeSending(
    key: string,
    response: CapturedResponse,
    claim: string | undefined,
    report: (error: unknown) => void,
  ): Promise<void> {
    try {
      await this.finishCaptured(key, response, claim);
    } catch (error) {
      report(error);
      if (isKeptAnswer(response)) throw answerNotStoredProblem(error);
    }
  }

  /** Releases a claimed key without a response. */
  abandon(key: string, claim?: string): Promise<void> {
    return this.#store.abandon(key, claim);
  }

  #toStored(status: number, headers: ResponseHeaders, body: string | Uint8Array | undefined): StoredResponse {
    const kept: Record<string, string> = {};
    for (const name of this.#replayHeaders) {
      const value = headers[name];
      if (value !== undefined) kept[name] = Array.isArray(value) ? value.join(', ') : String(value);
    }
    if (body === undefined) return { status, headers: kept, body: '' };
    if (typeof body === 'string') return { status, headers: kept, body };
    return { status, headers: kept, body: Buffer.from(body).toString('base64'), encoding: 'base64' };
  }
}

/**
 * Sent instead of an answer the store failed to keep (500, `IDEMPOTENCY_STORE_FAILED`; the store's
 * error as `cause`, never sent). The request did run: its key stays held until the store's lease
 * runs out, so that a retry gets 409 meanwhile, not a second run.
 */
export function answerNotStoredProblem(cause: unknown): HttpProblemError {
  return new HttpProblemError(500, 'Answer not recorded', {
    detail:
      'The request was processed, but its answer could not be recorded for this Idempotency-Key; retrying with the key gets 409 until its lease ends.',
    extensions: { code: 'IDEMPOTENCY_STORE_FAILED' },
    cause,
  });
}

/**
 * Whether a captured answer is kept for its key (a final status, or marked final: a 5xx whose request
 * may have been carried out), rather than the key released for the request to run again.
 */
function isKeptAnswer(response: CapturedResponse): boolean {
  return response.final === true || isReplayableStatus(response.status);
}

/** Statuses that are a final answer to the request, so that a retry gets the same one. */
export function isReplayableStatus(status: number): boolean {
  if (status < 200 || status >= 500) return false;
  // 499: the client left before the answer (see problemFromError); nothing final was said.
  return !(
    status === 408 ||
    status === 409 ||
    status === 422 ||
    status === 425 ||
    status === 429 ||
    status === 499
  );
}

/** The body of a stored response as bytes to send. */
export function storedBody(response: StoredResponse): Buffer {
  return Buffer.from(response.body, response.encoding === 'base64' ? 'base64' : 'utf8');
}

/**
 * Writes a stored answer to the raw response as it was sent (status, replayed headers, the body's
 * bytes), marked `idempotent-replayed: true`; headers already set on `res` stay unless replaced.
 */
export function replayStoredResponse(res: ServerResponse, response: StoredResponse): void {
  res.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  res.setHeader(HTTP_HEADER.idempotentReplay, 'true');
  res.end(storedBody(response));
}

/**
 * The key from the header: 1 to 255 characters, surrounding quotes removed (the IETF draft sends it
 * as a structured-field string, Stripe as a bare token). `undefined` when invalid.
 */
export function parseIdempotencyKey(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const key = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
  return key.length >= 1 && key.length <= 255 ? key : undefined;
}
