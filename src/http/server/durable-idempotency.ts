import { InvalidOptionsError } from '../../errors/ferry-error.js';
import { positiveIntegerOption } from '../../errors/integer-option.js';
import { assertStoredResponse, type IdempotencyBeginResult, type StoredResponse } from './idempotency.js';

/** Options of the idempotency stores kept in a database (SQLite, PostgreSQL). */
export interface DurableIdempotencyStoreOptions {
  /**
   * How long a completed key (its stored response) is replayed; a positive integer.
   * @default 86400000 (24 h)
   */
  readonly ttlMs?: number | undefined;
  /**
   * How long a claimed key stays held without a response (see `MemoryIdempotencyStoreOptions.leaseMs`):
   * the next request with the key runs after it, and the late answer of the first is not stored.
   * Set it above your slowest handler; a positive integer. @default 300000 (5 min)
   */
  readonly leaseMs?: number | undefined;
  /**
   * Keys of different namespaces never meet: services sharing one database or schema each take
   * their own. At most 100 characters. @default ''
   */
  readonly namespace?: string | undefined;
  /**
   * Least time between two background sweeps that delete expired keys (answers past `ttlMs`, claims
   * past their lease), in batches of {@link IDEMPOTENCY_CLEANUP_BATCH} rows, each batch its own short
   * transaction. A positive integer. @default 600000 (10 min)
   */
  readonly cleanupIntervalMs?: number | undefined;
}

export const DEFAULT_DURABLE_IDEMPOTENCY_STORE_OPTIONS = Object.freeze({
  ttlMs: 86_400_000,
  leaseMs: 300_000,
  namespace: '',
  cleanupIntervalMs: 600_000,
} satisfies Required<{ [K in keyof DurableIdempotencyStoreOptions]: unknown }>);

/** Rows deleted by one statement of a cleanup sweep: small, so that no lock is held for long. */
export const IDEMPOTENCY_CLEANUP_BATCH = 500;

/** Options with defaults applied and values checked. @throws InvalidOptionsError */
export function resolveDurableIdempotencyStoreOptions(options: DurableIdempotencyStoreOptions = {}): {
  readonly ttlMs: number;
  readonly leaseMs: number;
  readonly namespace: string;
  readonly cleanupIntervalMs: number;
} {
  const d = DEFAULT_DURABLE_IDEMPOTENCY_STORE_OPTIONS;
  const namespace = options.namespace ?? d.namespace;
  if (typeof namespace !== 'string' || namespace.length > 100 || namespace.includes('\u0000')) {
    throw new InvalidOptionsError('namespace must be a string of at most 100 characters, without NUL');
  }
  return {
    ttlMs: positiveIntegerOption('ttlMs', options.ttlMs, d.ttlMs),
    leaseMs: positiveIntegerOption('leaseMs', options.leaseMs, d.leaseMs),
    namespace,
    cleanupIntervalMs: positiveIntegerOption(
      'cleanupIntervalMs',
      options.cleanupIntervalMs,
      d.cleanupIntervalMs,
    ),
  };
}

/** A stored response as database columns: the body as the bytes it stands for, so NUL and binary fit. */
export interface StoredResponseColumns {
  readonly status: number;
  /** JSON of the headers, kept as text so that their order and values come back as they were. */
  readonly headers: string;
  readonly body: Buffer;
  /** `null` when the response did not name one (text). */
  readonly encoding: 'utf8' | 'base64' | null;
}

/** Checks `response` first ({@link assertStoredResponse}). */
export function storedResponseToColumns(response: StoredResponse): StoredResponseColumns {
  assertStoredResponse(response);
  const encoding = response.encoding ?? null;
  return {
    status: response.status,
    headers: JSON.stringify(response.headers),
    body: Buffer.from(response.body, encoding === 'base64' ? 'base64' : 'utf8'),
    encoding,
  };
}

export function storedResponseFromColumns(columns: {
  readonly status: number;
  readonly headers: string;
  readonly body: Uint8Array;
  readonly encoding: string | null;
}): StoredResponse {
  const bytes = Buffer.from(columns.body.buffer, columns.body.byteOffset, columns.body.byteLength);
  const base64 = columns.encoding === 'base64';
  const response: StoredResponse = {
    status: columns.status,
    headers: JSON.parse(columns.headers) as Record<string, string>,
    body: bytes.toString(base64 ? 'base64' : 'utf8'),
  };
  return columns.encoding === null ? response : { ...response, encoding: base64 ? 'base64' : 'utf8' };
}

/** A stored key as its row holds it: the request's fingerprint, and the answer once there is one. */
export interface IdempotencyRow {
  readonly fingerprint: string;
  /** `null` while the request that claimed the key still runs. */
  readonly status: number | null;
  readonly headers: string | null;
  readonly body: Uint8Array | null;
  readonly encoding: string | null;
}

/** What a live (unexpired) row answers a request with `fingerprint`. */
export function answerOfLiveRow(row: IdempotencyRow, fingerprint: string): IdempotencyBeginResult {
  if (row.fingerprint !== fingerprint) return { state: 'mismatch' };
  if (row.status === null) return { state: 'in-progress' };
  return {
    state: 'replay',
    response: storedResponseFromColumns({
      status: row.status,
      headers: row.headers ?? '{}',
      body: row.body ?? Buffer.alloc(0),
      encoding: row.encoding,
    }),
  };
}
