import type { Pool, QueryResult, QueryResultRow } from 'pg';
import { assertStorableKey } from '../errors/storable-text.js';
import type { Inbox, InboxClaim } from '../inbox/inbox.js';
import {
  type DurableInboxOptions,
  holdBackoff,
  leasedClaim,
  resolveDurableInboxOptions,
} from '../inbox/lease.js';
import { storeQuery } from './store-query.js';

const CLEANUP_EVERY_MS = 600_000;

/**
 * A claim's fencing value: its lease end in microseconds. Only the holder moves it, and a takeover
 * happens only after it has passed, at a later lease end: so it names one claim of the key. (A
 * `claim_token` column would say so more plainly; it needs a migration of the shared schema.)
 */
const FENCE = `(extract(epoch FROM lease_until) * 1000000)::bigint::text`;

/**
 * An inbox in PostgreSQL, beside the event store: a key processed by any instance of the service,
 * before or after a restart, is recognised. A claim is a lease, renewed while the handler runs; a
 * holder that dies loses it after `leaseMs` and the message is processed again (at least once: the
 * handler's own writes and the inbox commit separately).
 */
export class PostgresInbox implements Inbox {
  readonly #pool: Pool;
  readonly #table: string;
  readonly #leaseMs: number;
  readonly #retentionMs: number;
  readonly #ended: () => boolean;
  #cleanedAt = 0;

  /**
   * Use `PostgresEventStoreBackend.inbox()`, which shares the store's pool and migrated schema;
   * `ended` tells when the backend has ended the pool (every call then rejects with
   * `EventStoreClosedError`).
   */
  constructor(
    pool: Pool,
    schema: string,
    options: DurableInboxOptions = {},
    ended: () => boolean = () => false,
  ) {
    const o = resolveDurableInboxOptions(options);
    this.#pool = pool;
    this.#ended = ended;
    this.#table = `"${schema}".inbox`;
    this.#leaseMs = o.leaseMs;
    this.#retentionMs = o.retentionMs;
  }

  async begin(key: string): Promise<InboxClaim | null> {
    assertStorableKey('an inbox key', key);
    this.#cleanUp();
    for (let round = 0; ; round++) {
      const claimed = await this.#query(
        `INSERT INTO ${this.#table} (key, state, lease_until) VALUES ($1, 'processing', now() + $2 * interval '1 millisecond')
         ON CONFLICT (key) DO UPDATE SET lease_until = EXCLUDED.lease_until
           WHERE ${this.#table}.state = 'processing' AND ${this.#table}.lease_until < now()
         RETURNING ${FENCE} AS fence`,
        [key, this.#leaseMs],
      );
      const fence = (claimed.rows[0] as { fence: string } | undefined)?.fence;
      if (fence !== undefined) return this.#claim(key, fence);
      const { rows } = await this.#query<{ state: string }>(
        `SELECT state FROM ${this.#table} WHERE key = $1`,
        [key],
      );
      if (rows[0]?.state === 'done') return null;
      // Held by a delivery still running (or just abandoned): look again shortly.
      await holdBackoff(round);
    }
  }

  #claim(key: string, claimedFence: string): InboxClaim {
    let fence = claimedFence;
    const mine = `key = $1 AND state = 'processing' AND ${FENCE} = $2`;
    return leasedClaim(key, this.#leaseMs, {
      renew: async () => {
        const { rows } = await this.#query<{ fence: string }>(
          `UPDATE ${this.#table} SET lease_until = now() + $3 * interval '1 millisecond' WHERE ${mine}
           RETURNING ${FENCE} AS fence`,
          [key, fence, this.#leaseMs],
        );
        if (rows[0] === undefined) return false;
        fence = rows[0].fence;
        return true;
      },
      complete: async () => {
        const done = await this.#query(
          `UPDATE ${this.#table} SET state = 'done', processed_at = now(), lease_until = NULL WHERE ${mine}`,
          [key, fence],
        );
        return done.rowCount === 1;
      },
      release: () => this.#query(`DELETE FROM ${this.#table} WHERE ${mine}`, [key, fence]),
    });
  }

  /** Forgets processed keys past the retention, at most every ten minutes, in the background. */
  #cleanUp(): void {
    const now = Date.now();
    if (now - this.#cleanedAt < CLEANUP_EVERY_MS) return;
    this.#cleanedAt = now;
    this.#query(
      `DELETE FROM ${this.#table} WHERE state = 'done' AND processed_at < now() - $1 * interval '1 millisecond'`,
      [this.#retentionMs],
    ).catch(() => {
      this.#cleanedAt = 0;
    });
  }

  /** A statement; a connection that fails under it rejects `STORE_UNAVAILABLE`, its outcome unknown. */
  async #query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values: readonly unknown[],
  ): Promise<QueryResult<R>> {
    return storeQuery<R>(this.#pool, this.#ended, text, values, { what: 'an inbox statement' });
  }
}
