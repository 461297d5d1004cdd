import { randomUUID } from 'node:crypto';
import type { Pool, QueryResult, QueryResultRow } from 'pg';
import { assertStorableKey } from '../errors/storable-text.js';
import {
  answerOfLiveRow,
  type DurableIdempotencyStoreOptions,
  IDEMPOTENCY_CLEANUP_BATCH,
  resolveDurableIdempotencyStoreOptions,
  storedResponseToColumns,
} from '../http/server/durable-idempotency.js';
import type { IdempotencyBeginResult, IdempotencyStore, StoredResponse } from '../http/server/idempotency.js';
import { storeQuery } from './store-query.js';

interface Row extends QueryResultRow {
  fingerprint: string;
  status: number | null;
  headers: string | null;
  body: Buffer | null;
  encoding: string | null;
  live: boolean;
}

/** Tries of a statement whose connection broke; each statement here is safe to run twice. */
const ATTEMPTS = 3;

/**
 * An {@link IdempotencyStore} in PostgreSQL, beside the event store: keys hold across every instance
 * of the service and across restarts. A claim is a lease named by a token of its own: once it lapsed
 * and another request took the key over, the first holder's `complete` and `abandon` find another
 * token and change nothing. Lease and retention times are the database server's clock, so the
 * instances' clocks need not agree.
 *
 * A statement whose connection breaks is tried again (up to 3 times): a `begin` whose claim did
 * commit before the break recognises its own token and still runs.
 *
 * @example
 * const backend = new PostgresEventStoreBackend({ url: process.env.DATABASE_URL! });
 * await backend.open();
 * ferryFastify(app, { idempotency: { store: backend.idempotencyStore() } });
 */
export class PostgresIdempotencyStore implements IdempotencyStore {
  readonly #pool: Pool;
  readonly #table: string;
  readonly #namespace: string;
  readonly #leaseMs: number;
  readonly #ttlMs: number;
  readonly #cleanupIntervalMs: number;
  #cleanedAt = 0;
  #cleaning: Promise<number> | undefined;
  readonly #ended: () => boolean;

  /**
   * Use `PostgresEventStoreBackend.idempotencyStore()`, which shares the store's pool and migrated
   * schema; `ended` tells when the backend has ended the pool (every call then rejects with
   * `EventStoreClosedError`).
   */
  constructor(
    pool: Pool,
    schema: string,
    options: DurableIdempotencyStoreOptions = {},
    ended: () => boolean = () => false,
  ) {
    const o = resolveDurableIdempotencyStoreOptions(options);
    this.#pool = pool;
    this.#ended = ended;
    this.#table = `"${schema}".idempotency`;
    this.#namespace = o.namespace;
    this.#leaseMs = o.leaseMs;
    this.#ttlMs = o.ttlMs;
    this.#cleanupIntervalMs = o.cleanupIntervalMs;
  }

  async begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult> {
    assertStorableKey('an idempotency key', key);
    this.#sweepNow();
    const token = randomUUID();
    const t = this.#table;
    for (;;) {
      // Replays and refusals are one read.
      const { rows } = await this.#query<Row>(
        `SELECT fingerprint, status, headers, body, encoding, expires_at > now() AS live
         FROM ${t} WHERE namespace = $1 AND key = $2`,
        [this.#namespace, key],
      );
      const row = rows[0];
      if (row?.live === true) return answerOfLiveRow(row, fingerprint);
      // Free, or its lease or retention is over: claim it, unless another request just did. The
      // own-token case is this very claim, committed before a broken connection made us try again.
      const claimed = await this.#query(
        `INSERT INTO ${t} (namespace, key, fingerprint, claim, expires_at)
         VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond')
         ON CONFLICT (namespace, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, claim = EXCLUDED.claim,
           status = NULL, headers = NULL, body = NULL, encoding = NULL, expires_at = EXCLUDED.expires_at
         WHERE ${t}.expires_at <= now() OR (${t}.status IS NULL AND ${t}.claim = EXCLUDED.claim)`,
        [this.#namespace, key, fingerprint, token, this.#leaseMs],
      );
      if (claimed.rowCount === 1) return { state: 'new', claim: token };
      // Another request claimed it between the read and the insert: read its state.
    }
  }

  async complete(key: string, response: StoredResponse, claim?: string): Promise<void> {
    const c = storedResponseToColumns(response);
    await this.#query(
      `UPDATE ${this.#table} SET status = $4, headers = $5, body = $6, encoding = $7, claim = NULL,
         expires_at = now() + $8 * interval '1 millisecond'
       WHERE ${this.#held()}`,
      [this.#namespace, key, claim ?? null, c.status, c.headers, c.body, c.encoding, this.#ttlMs],
    );
  }

  async abandon(key: string, claim?: string): Promise<void> {
    await this.#query(`DELETE FROM ${this.#table} WHERE ${this.#held()}`, [
      this.#namespace,
      key,
      claim ?? null,
    ]);
  }

  /**
   * Deletes every expired key (answers past `ttlMs`, claims past their lease) of every namespace,
   * a few hundred rows per statement, skipping rows other transactions hold: no lock is held for
   * long. `begin` runs it in the background every `cleanupIntervalMs`. Resolves the number deleted;
   * a call made while one runs joins it, and resolves its count.
   */
  deleteExpired(): Promise<number> {
    this.#cleaning ??= this.#deleteExpired().finally(() => {
      this.#cleaning = undefined;
    });
    return this.#cleaning;
  }

  async #deleteExpired(): Promise<number> {
    const t = this.#table;
    let deleted = 0;
    for (;;) {
      const { rowCount } = await this.#query(
        `DELETE FROM ${t} WHERE (namespace, key) IN (
           SELECT namespace, key FROM ${t} WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)`,
        [IDEMPOTENCY_CLEANUP_BATCH],
      );
      deleted += rowCount ?? 0;
      if ((rowCount ?? 0) < IDEMPOTENCY_CLEANUP_BATCH) return deleted;
    }
  }

  /** The key `$1`/`$2` while held by claim `$3` (by anyone when `$3` is NULL). */
  #held(): string {
    return 'namespace = $1 AND key = $2 AND status IS NULL AND ($3::text IS NULL OR claim = $3::text)';
  }

  #sweepNow(): void {
    const now = Date.now();
    if (now - this.#cleanedAt < this.#cleanupIntervalMs) return;
    this.#cleanedAt = now;
    this.deleteExpired().catch(() => {
      // Tried again at the next begin after the interval; expired keys answer nothing meanwhile.
    });
  }

  async #query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values: readonly unknown[],
  ): Promise<QueryResult<R>> {
    return storeQuery<R>(this.#pool, this.#ended, text, values, {
      what: 'an idempotency statement',
      attempts: ATTEMPTS,
    });
  }
}
