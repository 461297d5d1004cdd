import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { assertStorableKey } from '../errors/storable-text.js';
import { EventStoreClosedError } from '../eventstore/errors.js';
import type { Inbox, InboxClaim } from '../inbox/inbox.js';
import {
  type DurableInboxOptions,
  holdBackoff,
  leasedClaim,
  resolveDurableInboxOptions,
} from '../inbox/lease.js';
import { DEFAULT_BUSY_TIMEOUT_MS, whileBusy } from './store-busy.js';
import { type CommitSync, SYNCED_IN_COMMIT } from './wal-sync.js';
import type { StoreWrite } from './write-lock.js';

type Look = { claimed: true } | { claimed: false; done: boolean };

/**
 * An inbox in the SQLite file of the event store: processed keys survive restarts and are shared by
 * every process on the file. Claims are leases renewed while the handler runs (see `PostgresInbox`).
 */
export class SqliteInbox implements Inbox {
  readonly #leaseMs: number;
  readonly #write: StoreWrite;
  readonly #retentionMs: number;
  readonly #look: Database.Transaction<(key: string, token: string, now: number) => Look>;
  readonly #renew: Database.Statement<[number, string, string]>;
  readonly #complete: Database.Statement<[number, string, string]>;
  readonly #abandon: Database.Statement<[string, string]>;
  readonly #cleanUp: Database.Statement<[number]>;
  readonly #sync: CommitSync;
  readonly #db: Database.Database;
  #cleanedAt = 0;

  /**
   * Use `SqliteEventStoreBackend.inbox()`, which shares the store's connection, its
   * migrated schema and its turns at the file's write lock (`write`).
   */
  constructor(
    db: Database.Database,
    options: DurableInboxOptions = {},
    write: number | StoreWrite = DEFAULT_BUSY_TIMEOUT_MS,
    sync: CommitSync = SYNCED_IN_COMMIT,
  ) {
    this.#sync = sync;
    this.#db = db;
    const o = resolveDurableInboxOptions(options);
    // A number: the busy timeout of a connection on its own, outside its store's turns at the file.
    this.#write = typeof write === 'number' ? (operation) => whileBusy(write, operation) : write;
    this.#leaseMs = o.leaseMs;
    this.#retentionMs = o.retentionMs;
    const find = db.prepare<[string], { state: string; lease_until: bigint | null }>(
      'SELECT state, lease_until FROM ferry_inbox WHERE key = ?',
    );
    const upsert = db.prepare<[string, number, string]>(
      `INSERT INTO ferry_inbox (key, state, lease_until, claim_token) VALUES (?, 'processing', ?, ?)
       ON CONFLICT (key) DO UPDATE SET state = 'processing', lease_until = excluded.lease_until,
         claim_token = excluded.claim_token`,
    );
    this.#look = db.transaction((key: string, token: string, now: number): Look => {
      const row = find.get(key);
      if (row?.state === 'done') return { claimed: false, done: true };
      if (row !== undefined && Number(row.lease_until ?? 0) > now) return { claimed: false, done: false };
      upsert.run(key, now + this.#leaseMs, token);
      return { claimed: true };
    });
    const mine = "key = ? AND claim_token = ? AND state = 'processing'";
    this.#renew = db.prepare(`UPDATE ferry_inbox SET lease_until = ? WHERE ${mine}`);
    this.#complete = db.prepare(
      `UPDATE ferry_inbox SET state = 'done', processed_at = ?, lease_until = NULL, claim_token = NULL WHERE ${mine}`,
    );
    this.#abandon = db.prepare(`DELETE FROM ferry_inbox WHERE ${mine}`);
    this.#cleanUp = db.prepare("DELETE FROM ferry_inbox WHERE state = 'done' AND processed_at < ?");
  }

  async begin(key: string): Promise<InboxClaim | null> {
    assertStorableKey('an inbox key', key);
    this.#forgetOld();
    for (let round = 0; ; round++) {
      const token = randomUUID();
      const look = await this.#busy(() => this.#look.immediate(key, token, Date.now()));
      if (look.claimed) return this.#claim(key, token);
      if (look.done) return null;
      await holdBackoff(round);
    }
  }

  #claim(key: string, token: string): InboxClaim {
    return leasedClaim(key, this.#leaseMs, {
      renew: async () =>
        (await this.#busy(() => this.#renew.run(Date.now() + this.#leaseMs, key, token))).changes === 1,
      // Marked done once that survives a power cut: the message is acked only after.
      complete: async () => {
        const marked = (await this.#busy(() => this.#complete.run(Date.now(), key, token))).changes === 1;
        await this.#sync.afterCommit();
        return marked;
      },
      release: () => this.#busy(() => this.#abandon.run(key, token)),
    });
  }

  #busy<T>(operation: () => T): Promise<T> {
    return this.#write(() => {
      // Closed with its store: said as the store says it, not as the driver's bare TypeError.
      if (!this.#db.open) throw new EventStoreClosedError();
      return operation();
    });
  }

  #forgetOld(): void {
    const now = Date.now();
    if (now - this.#cleanedAt < 600_000) return;
    this.#cleanedAt = now;
    this.#busy(() => this.#cleanUp.run(now - this.#retentionMs)).catch(() => {
      this.#cleanedAt = 0;
    });
  }
}
