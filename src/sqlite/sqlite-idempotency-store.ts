import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { assertStorableKey } from '../errors/storable-text.js';
import { EventStoreClosedError } from '../eventstore/errors.js';
import {
  answerOfLiveRow,
  type DurableIdempotencyStoreOptions,
  IDEMPOTENCY_CLEANUP_BATCH,
  resolveDurableIdempotencyStoreOptions,
  type StoredResponseColumns,
  storedResponseToColumns,
} from '../http/server/durable-idempotency.js';
import type { IdempotencyBeginResult, IdempotencyStore, StoredResponse } from '../http/server/idempotency.js';
import { atEndOfTurn, endOfTurn } from '../time/end-of-turn.js';
import { boundLimit } from './bound-limit.js';
import { DEFAULT_BUSY_TIMEOUT_MS, whileBusy } from './store-busy.js';
import { type CommitSync, SYNCED_IN_COMMIT } from './wal-sync.js';
import { withoutDiskSync } from './without-disk-sync.js';
import type { StoreWrite } from './write-lock.js';

/** Which claim of a key a statement acts on; `claim: null` for whoever holds it. */
interface Held {
  namespace: string;
  key: string;
  claim: string | null;
}

interface Row {
  fingerprint: string;
  status: number | null;
  headers: string | null;
  body: Buffer | null;
  encoding: string | null;
  expires_at: number;
}

type AnswerColumns = Held & StoredResponseColumns & { expiresAt: number };

interface QueuedAnswer {
  readonly answer: AnswerColumns;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** A row's answer to a request, or `undefined` when the row is no answer (gone, or lapsed). */
function answerOf(
  row: Row | undefined,
  fingerprint: string,
  now: number,
): IdempotencyBeginResult | undefined {
  if (row === undefined || row.expires_at <= now) return undefined;
  return answerOfLiveRow(row, fingerprint);
}

/**
 * An {@link IdempotencyStore} in the SQLite file of the event store: keys hold across every process
 * on the file and across restarts. A claim is a lease with a token of its own (`claim`): once it
 * lapsed and another request took the key over, the first holder's `complete` and `abandon` find
 * another token and change nothing. Times are the host's clock, which the processes on a file share.
 *
 * @example
 * const backend = new SqliteEventStoreBackend({ path: './data/app.db' });
 * await backend.open();
 * ferryFastify(app, { idempotency: { store: backend.idempotencyStore() } });
 */
export class SqliteIdempotencyStore implements IdempotencyStore {
  readonly #namespace: string;
  readonly #leaseMs: number;
  readonly #ttlMs: number;
  readonly #cleanupIntervalMs: number;
  readonly #db: Database.Database;
  readonly #write: StoreWrite;
  readonly #find: Database.Statement<[string, string], Row>;
  readonly #claim: (key: string, fingerprint: string, token: string) => IdempotencyBeginResult;
  /** Answers of one turn of the event loop, stored together: one commit, one disk sync. */
  readonly #completeAll: Database.Transaction<(answers: readonly AnswerColumns[]) => unknown[]>;
  readonly #answers: QueuedAnswer[] = [];
  readonly #abandon: Database.Statement<[Held]>;
  readonly #cleanUp: Database.Statement<[number, number]>;
  readonly #sync: CommitSync;
  #cleanedAt = 0;
  #cleaning: Promise<number> | undefined;

  /**
   * Use `SqliteEventStoreBackend.idempotencyStore()`, which shares the store's connection, its
   * migrated schema and its turns at the file's write lock (`write`).
   */
  constructor(
    db: Database.Database,
    options: DurableIdempotencyStoreOptions = {},
    write: number | StoreWrite = DEFAULT_BUSY_TIMEOUT_MS,
    sync: CommitSync = SYNCED_IN_COMMIT,
  ) {
    this.#sync = sync;
    const o = resolveDurableIdempotencyStoreOptions(options);
    this.#db = db;
    this.#namespace = o.namespace;
    this.#leaseMs = o.leaseMs;
    this.#ttlMs = o.ttlMs;
    this.#cleanupIntervalMs = o.cleanupIntervalMs;
    // A number: the busy timeout of a connection on its own, outside its store's turns at the file.
    this.#write = typeof write === 'number' ? (operation) => whileBusy(write, operation) : write;
    // Times and statuses are small integers: plain numbers, whatever the connection's default.
    this.#find = db
      .prepare<[string, string], Row>(
        `SELECT fingerprint, status, headers, body, encoding, expires_at FROM ferry_idempotency
         WHERE namespace = ? AND key = ?`,
      )
      .safeIntegers(false);
    const take = db.prepare<[string, string, string, string, number]>(
      `INSERT INTO ferry_idempotency (namespace, key, fingerprint, claim, expires_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (namespace, key) DO UPDATE SET fingerprint = excluded.fingerprint, claim = excluded.claim,
         status = NULL, headers = NULL, body = NULL, encoding = NULL, expires_at = excluded.expires_at`,
    );
    // Under BEGIN IMMEDIATE: no other connection writes between the look and the claim.
    const claim = db.transaction(
      (key: string, fingerprint: string, token: string): IdempotencyBeginResult => {
        const now = Date.now();
        const answer = answerOf(this.#find.get(this.#namespace, key), fingerprint, now);
        if (answer !== undefined) return answer;
        take.run(this.#namespace, key, fingerprint, token, now + this.#leaseMs);
        return { state: 'new', claim: token };
      },
    );
    // A claim commits without waiting for the disk: a power cut loses only claims whose work died
    // with the machine (a lapsed claim is taken over and run again anyway), and one whose work
    // writes to this file is synced with that work's commit. Answers commit with FULL, before sent.
    const relaxed = withoutDiskSync(db);
    this.#claim = (key, fingerprint, token) => relaxed(() => claim.immediate(key, fingerprint, token));
    // Without a claim (a store user that does not keep them), whoever holds the key.
    const held =
      'namespace = @namespace AND key = @key AND status IS NULL AND (@claim IS NULL OR claim = @claim)';
    const complete = db.prepare<[AnswerColumns]>(
      `UPDATE ferry_idempotency SET status = @status, headers = @headers, body = @body, encoding = @encoding,
         claim = NULL, expires_at = @expiresAt WHERE ${held}`,
    );
    // A statement that fails is undone alone (SQLite's statement rollback): the others commit.
    this.#completeAll = db.transaction((answers: readonly AnswerColumns[]) =>
      answers.map((answer) => {
        try {
          complete.run(answer);
          return undefined;
        } catch (error) {
          return error ?? new Error('the answer could not be stored');
        }
      }),
    );
    this.#abandon = db.prepare(`DELETE FROM ferry_idempotency WHERE ${held}`);
    this.#cleanUp = db.prepare(
      `DELETE FROM ferry_idempotency WHERE rowid IN
         (SELECT rowid FROM ferry_idempotency WHERE expires_at <= ? ${boundLimit()})`,
    );
  }

  async begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult> {
    assertStorableKey('an idempotency key', key);
    this.#sweepNow();
    // Replays and refusals need no write lock: a plain read answers them.
    const found = await this.#busy(() => this.#find.get(this.#namespace, key));
    const answer = answerOf(found, fingerprint, Date.now());
    // A replay sends only an answer that outlives a power cut.
    if (answer !== undefined) {
      if (answer.state === 'replay') await this.#sync.durable();
      return answer;
    }
    const token = randomUUID();
    return this.#busy(() => this.#claim(key, fingerprint, token));
  }

  /**
   * Stores the answer, with the connection's disk sync, before resolving. The answers of concurrent
   * requests completed in the same turn of the event loop commit together (one sync for all of
   * them): each resolves once that commit succeeded, or rejects with what kept its answer out.
   */
  complete(key: string, response: StoredResponse, claim?: string): Promise<void> {
    // In the executor: a response that cannot be stored rejects, as from an async function.
    return new Promise<void>((resolve, reject) => {
      const answer = {
        namespace: this.#namespace,
        key,
        claim: claim ?? null,
        ...storedResponseToColumns(response),
        expiresAt: Date.now() + this.#ttlMs,
      };
      this.#answers.push({ answer, resolve, reject });
      if (this.#answers.length === 1) atEndOfTurn(() => void this.#storeAnswers());
    });
  }

  async #storeAnswers(): Promise<void> {
    const queued = this.#answers.splice(0);
    let outcomes: unknown[];
    try {
      outcomes = await this.#busy(() => this.#completeAll.immediate(queued.map((q) => q.answer)));
      await this.#sync.afterCommit();
    } catch (error) {
      for (const q of queued) q.reject(error);
      return;
    }
    for (const [i, q] of queued.entries()) {
      const error = outcomes[i];
      if (error === undefined) q.resolve();
      else q.reject(error);
    }
  }

  async abandon(key: string, claim?: string): Promise<void> {
    await this.#busy(() => this.#abandon.run({ namespace: this.#namespace, key, claim: claim ?? null }));
  }

  /**
   * Deletes every expired key (answers past `ttlMs`, claims past their lease) of every namespace,
   * in batches of a few hundred rows, each its own short write, letting the event loop and other
   * connections run between them. `begin` runs it in the background every `cleanupIntervalMs`.
   * Resolves the number of keys deleted; a call made while one runs joins it, and resolves its count.
   */
  deleteExpired(): Promise<number> {
    this.#cleaning ??= this.#deleteExpired().finally(() => {
      this.#cleaning = undefined;
    });
    return this.#cleaning;
  }

  async #deleteExpired(): Promise<number> {
    const before = Date.now();
    let deleted = 0;
    for (;;) {
      const { changes } = await this.#busy(() => this.#cleanUp.run(before, IDEMPOTENCY_CLEANUP_BATCH));
      deleted += changes;
      if (changes < IDEMPOTENCY_CLEANUP_BATCH) return deleted;
      await endOfTurn();
    }
  }

  #sweepNow(): void {
    const now = Date.now();
    if (now - this.#cleanedAt < this.#cleanupIntervalMs) return;
    this.#cleanedAt = now;
    this.deleteExpired().catch(() => {
      // Tried again at the next begin after the interval; expired keys answer nothing meanwhile.
    });
  }

  #busy<T>(operation: () => T): Promise<T> {
    return this.#write(() => {
      // Closed with its store: said as the store says it, not as the driver's bare TypeError.
      if (!this.#db.open) throw new EventStoreClosedError();
      return operation();
    });
  }
}
