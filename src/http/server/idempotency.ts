import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { InvalidOptionsError } from '../../errors/ferry-error.js';
import { HTTP_HEADER } from '../headers.js';
import { HttpProblemError } from './problem.js';

/** A response kept for replay: status, a subset of headers, and the serialized body. */
export interface StoredResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** How `body` encodes the bytes sent: text as is, or binary as base64. @default 'utf8' */
  readonly encoding?: 'utf8' | 'base64';
}

/** What the store says about a key when a request carrying it arrives. */
export type IdempotencyBeginResult =
  | { readonly state: 'new' }
  | { readonly state: 'replay'; readonly response: StoredResponse }
  | { readonly state: 'mismatch' }
  | { readonly state: 'in-progress' };

/**
 * Remembers idempotency keys. `begin` must be atomic: of two concurrent calls with a new key,
 * exactly one gets `new`.
 */
export interface IdempotencyStore {
  /** Claims `key` for a request with `fingerprint`, or reports why it cannot run. */
  begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult>;
  /** Records the response of the request that claimed `key`; later requests replay it. */
  complete(key: string, response: StoredResponse): Promise<void>;
  /** Releases a claimed key without a response (the handler failed): the next request runs again. */
  abandon(key: string): Promise<void>;
}

/** Options of a {@link MemoryIdempotencyStore}. */
export interface MemoryIdempotencyStoreOptions {
  /** How long a key is remembered after it was claimed or completed. @default 86_400_000 (24 h) */
  readonly ttlMs?: number;
  /** Most keys kept; the oldest are forgotten first beyond it. @default 10_000 */
  readonly maxEntries?: number;
}

export const DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS = Object.freeze({
  ttlMs: 86_400_000,
  maxEntries: 10_000,
});

interface Entry {
  readonly fingerprint: string;
  response: StoredResponse | undefined;
  expiresAt: number;
}

/**
 * An {@link IdempotencyStore} in process memory, bounded in time and size. Right for one instance;
 * several instances behind a load balancer need a shared store.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #entries = new Map<string, Entry>();
  readonly #ttlMs: number;
  readonly #maxEntries: number;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    this.#ttlMs = options.ttlMs ?? DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS.ttlMs;
    this.#maxEntries = options.maxEntries ?? DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS.maxEntries;
    if (!(this.#ttlMs > 0)) throw new InvalidOptionsError('ttlMs must be positive');
    if (!Number.isInteger(this.#maxEntries) || this.#maxEntries < 1) {
      throw new InvalidOptionsError('maxEntries must be a positive integer');
    }
  }

  /** Keys currently remembered (expired ones included until touched or evicted). */
  get size(): number {
    return this.#entries.size;
  }

  async begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult> {
    const now = Date.now();
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.expiresAt > now) {
      if (entry.fingerprint !== fingerprint) return { state: 'mismatch' };
      return entry.response === undefined
        ? { state: 'in-progress' }
        : { state: 'replay', response: entry.response };
    }
    this.#entries.delete(key);
    this.#entries.set(key, { fingerprint, response: undefined, expiresAt: now + this.#ttlMs });
    this.#evict(now);
    return { state: 'new' };
  }

  async complete(key: string, response: StoredResponse): Promise<void> {
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.response !== undefined) return;
    entry.response = response;
    entry.expiresAt = Date.now() + this.#ttlMs;
    // Re-inserted so that insertion order stays expiry order for eviction.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
  }

  async abandon(key: string): Promise<void> {
    if (this.#entries.get(key)?.response === undefined) this.#entries.delete(key);
  }

  #evict(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && entry.expiresAt > now) break;
      this.#entries.delete(key);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The protocol, shared by the framework adapters

/** Options of idempotency-key handling in the server adapters. */
export interface IdempotencyOptions {
  readonly store: IdempotencyStore;
  /** Methods whose `Idempotency-Key` is honoured; others pass through. @default ['POST', 'PATCH'] */
  readonly methods?: readonly string[];
  /** Response headers stored and replayed with the body. @default DEFAULT_REPLAYED_HEADERS */
  readonly replayHeaders?: readonly string[];
}

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

/** Response headers as Node and the frameworks return them. */
export type ResponseHeaders = Readonly<Record<string, string | number | readonly string[] | undefined>>;

/** What the adapter should do with a request. */
export type IdempotencyDecision =
  /** No key, or a method whose key is not honoured: run as usual. */
  | { readonly action: 'pass' }
  /** The key (as stored, with its scope) is claimed: run, then `finish` or `abandon` it. */
  | { readonly action: 'run'; readonly key: string }
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
  /** SHA-256 of the raw body, hex ({@link sha256Hex} of an empty string when there is none). */
  readonly bodySha256: string;
  /** Whose keys these are (e.g. the authenticated account): keys of different scopes never meet. */
  readonly scope?: string | undefined;
}

/**
 * The `Idempotency-Key` protocol (as Stripe and draft-ietf-httpapi-idempotency-key-header define it)
 * without any framework: the same key with the same request replays the first response; with
 * another request it is refused with 422; while the first is running, with 409. A request that
 * failed (5xx, or no response) releases its key so that the client can retry.
 */
export class IdempotencyGuard {
  readonly #store: IdempotencyStore;
  readonly #methods: ReadonlySet<string>;
  readonly #replayHeaders: readonly string[];

  constructor(options: IdempotencyOptions) {
    this.#store = options.store;
    this.#methods = new Set((options.methods ?? DEFAULT_IDEMPOTENT_METHODS).map((m) => m.toUpperCase()));
    this.#replayHeaders = (options.replayHeaders ?? DEFAULT_REPLAYED_HEADERS).map((h) => h.toLowerCase());
  }

  /** True when the request carries a key the guard will look at (so its body must be hashed). */
  applies(method: string, headers: IncomingHttpHeaders): boolean {
    return this.#methods.has(method.toUpperCase()) && headers[HTTP_HEADER.idempotencyKey] !== undefined;
  }

  async begin(request: IdempotentRequest): Promise<IdempotencyDecision> {
    if (!this.applies(request.method, request.headers)) return { action: 'pass' };
    const key = parseIdempotencyKey(request.headers[HTTP_HEADER.idempotencyKey]);
    if (key === undefined) {
      return {
        action: 'reject',
        error: new HttpProblemError(400, undefined, {
          detail: 'The Idempotency-Key header must hold 1 to 255 characters.',
          extensions: { code: 'IDEMPOTENCY_KEY_INVALID' },
        }),
      };
    }
    const fingerprint = requestFingerprint(request.method, request.url, request.bodySha256);
    // Length-prefixed, so that no scope and key can spell another pair's stored key.
    const storedKey = request.scope === undefined ? key : `${request.scope.length}:${request.scope}:${key}`;
    const result = await this.#store.begin(storedKey, fingerprint);
    switch (result.state) {
      case 'new':
        return { action: 'run', key: storedKey };
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
   * Ends a claimed key with the response sent: stored when it is final, released when the client
   * should be able to try again (5xx, 408, 409, 422, 425, 429, 499).
   */
  async finish(
    key: string,
    status: number,
    headers: ResponseHeaders,
    body: string | Uint8Array | undefined,
  ): Promise<void> {
    if (!isReplayableStatus(status)) {
      await this.#store.abandon(key);
      return;
    }
    await this.#store.complete(key, this.#toStored(status, headers, body));
  }

  /** Releases a claimed key without a response. */
  abandon(key: string): Promise<void> {
    return this.#store.abandon(key);
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
 * The key from the header: 1 to 255 characters, surrounding quotes removed (the IETF draft sends it
 * as a structured-field string, Stripe as a bare token). `undefined` when invalid.
 */
export function parseIdempotencyKey(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const key = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
  return key.length >= 1 && key.length <= 255 ? key : undefined;
}
