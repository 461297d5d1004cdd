import type { Client, Pool } from 'pg';
import type { Logger } from '../logging/logger.js';

export interface NotifierOptions {
  readonly connectionString: string;
  readonly channel: string;
  /** Sends the notifications. */
  readonly pool: Pool;
  readonly logger: Logger;
  /** Least time between two NOTIFYs while appends keep coming. */
  readonly intervalMs: number;
}

/** How long the answer to "does another process listen?" is trusted. */
const LISTENERS_CHECK_MS = 500;

/** Payload of a notification that a subscription's lease was given up: the prefix, then its name. */
const LEASE_RELEASED = 'lease-released:';

/**
 * Wake-ups through LISTEN/NOTIFY. NOTIFY is sent after an append has committed, from outside its
 * transaction: a NOTIFY inside the append would take PostgreSQL's global notification lock through
 * the commit and serialise every appending transaction. Notifications are coalesced, since they carry
 * nothing but "look again", and sent only while another process listens: subscribers in this process
 * are woken directly, and a NOTIFY nobody reads still costs a transaction (about a tenth of append
 * throughput). Listening sessions are found by their application name in `pg_stat_activity`.
 */
export class Notifier {
  readonly #options: NotifierOptions;
  readonly #listeners = new Set<() => void>();
  readonly #leaseListeners = new Set<(subscription: string) => void>();
  #client: Client | undefined;
  #connecting: Promise<void> | undefined;
  #sending = false;
  #cooling = false;
  #again = false;
  #closed = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  /** Backend pid of this process's own LISTEN session, not a reason to notify. */
  #ownListenerPid = -1;
  /** Until known, assume someone listens: a needless NOTIFY is cheaper than a late subscriber. */
  #othersListen = true;
  #checkedAt = 0;
  #checking = false;

  constructor(options: NotifierOptions) {
    this.#options = options;
  }

  /** Tells every listener, in this process and others, that events may have been appended. */
  notify(): void {
    this.#wake();
    if (this.#closed) return;
    if (Date.now() - this.#checkedAt > LISTENERS_CHECK_MS) this.#checkListeners();
    if (!this.#othersListen) return;
    if (this.#sending || this.#cooling) {
      this.#again = true;
      return;
    }
    this.#send();
  }

  /**
   * Announces, inside the caller's own transaction on `db`, the events it has just appended there
   * (`appendInTransaction`): this process cannot see that transaction end, but PostgreSQL delivers a
   * NOTIFY sent inside it when it commits, and never if it rolls back, to every listening session,
   * this process's own too. Sent while anyone listens (subscribers here or elsewhere); a NOTIFY
   * inside the transaction takes the notification lock through its commit, which serialises the
   * commits of such transactions only.
   */
  async notifyOnCommit(db: { query(text: string, values: unknown[]): Promise<unknown> }): Promise<void> {
    if (this.#closed) return;
    if (Date.now() - this.#checkedAt > LISTENERS_CHECK_MS) this.#checkListeners();
    if (this.#listeners.size === 0 && !this.#othersListen) return;
    await db.query('SELECT pg_notify($1, NULL)', [this.#options.channel]);
  }

  /**
   * Each NOTIFY is a small write transaction of its own: under a stream of appends they are limited to
   * one per `intervalMs`. The first append after a quiet spell is announced at once.
   */
  #send(): void {
    this.#sending = true;
    this.#options.pool
      .query('SELECT pg_notify($1, NULL)', [this.#options.channel])
      .catch((error: Error) => this.#options.logger.debug('NOTIFY failed', { error: error.message }))
      .finally(() => {
        this.#sending = false;
        this.#cooling = true;
        setTimeout(() => {
          this.#cooling = false;
          if (this.#again && !this.#closed) {
            this.#again = false;
            this.#send();
          }
        }, this.#options.intervalMs).unref();
      });
  }

  get #applicationName(): string {
    return `ferry-listen:${this.#options.channel}`.slice(0, 63);
  }

  #checkListeners(): void {
    if (this.#checking) return;
    this.#checking = true;
    this.#options.pool
      .query<{ any: boolean }>(
        'SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND pid <> $2) AS any',
        [this.#applicationName, this.#ownListenerPid],
      )
      .then(({ rows }) => {
        this.#othersListen = rows[0]?.any !== false;
        this.#checkedAt = Date.now();
      })
      .catch(() => {
        this.#othersListen = true;
      })
      .finally(() => {
        this.#checking = false;
      });
  }

  /** Calls `listener` on every wake-up. Starts listening on first use. Returns an unsubscribe function. */
  watch(listener: () => void): () => void {
    this.#listeners.add(listener);
    this.#startListening();
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /**
   * Calls `listener` with a subscription's name when its lease was given up ({@link leaseReleased}),
   * in this process or another that listens. Starts listening on first use.
   */
  watchLeases(listener: (subscription: string) => void): () => void {
    this.#leaseListeners.add(listener);
    this.#startListening();
    return () => {
      this.#leaseListeners.delete(listener);
    };
  }

  /**
   * Tells the standbys of `subscription`, here at once and in other processes by a NOTIFY, that its
   * lease was given up. Sent whoever listens, and not coalesced: a release is rare, and a standby
   * that missed it waits for its next poll. Never rejects.
   */
  async leaseReleased(subscription: string): Promise<void> {
    this.#wakeLeases(subscription);
    if (this.#closed) return;
    await this.#options.pool
      .query('SELECT pg_notify($1, $2)', [this.#options.channel, `${LEASE_RELEASED}${subscription}`])
      .catch((error: Error) => this.#options.logger.debug('NOTIFY failed', { error: error.message }));
  }

  #startListening(): void {
    if (this.#client === undefined && this.#connecting === undefined) this.#connecting = this.#listen();
  }

  #wakeLeases(subscription: string): void {
    queueMicrotask(() => {
      for (const listener of this.#leaseListeners) listener(subscription);
    });
  }

  #wake(): void {
    queueMicrotask(() => {
      for (const listener of this.#listeners) listener();
    });
  }

  async #listen(): Promise<void> {
    const pg = (await import('pg')).default;
    const client = new pg.Client({
      connectionString: this.#options.connectionString,
      application_name: this.#applicationName,
    });
    const lost = (error?: Error) => {
      if (this.#client !== client) return;
      this.#client = undefined;
      client.end().catch(() => {});
      if (this.#closed) return;
      this.#options.logger.warn('lost the PostgreSQL LISTEN connection; reconnecting', {
        error: error?.message,
      });
      this.#scheduleReconnect();
    };
    client.on('notification', (message) => {
      const payload = message.payload ?? '';
      if (payload.startsWith(LEASE_RELEASED)) this.#wakeLeases(payload.slice(LEASE_RELEASED.length));
      else this.#wake();
    });
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      await client.query(`LISTEN "${this.#options.channel}"`);
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      this.#ownListenerPid = rows[0]?.pid ?? -1;
      if (this.#closed) {
        await client.end();
        return;
      }
      this.#client = client;
      this.#failures = 0;
      // Notifications sent while not listening are lost: have everyone look again, now and while
      // appending processes may still believe nobody listens (until their next check).
      this.#wake();
      for (const delay of [LISTENERS_CHECK_MS / 2, LISTENERS_CHECK_MS, LISTENERS_CHECK_MS * 1.5]) {
        setTimeout(() => this.#wake(), delay).unref();
      }
    } catch (error) {
      await client.end().catch(() => {});
      if (!this.#closed) {
        this.#options.logger.warn('could not LISTEN on PostgreSQL; retrying', {
          error: (error as Error).message,
        });
        this.#scheduleReconnect();
      }
    } finally {
      this.#connecting = undefined;
    }
  }

  #scheduleReconnect(): void {
    const delay = Math.min(5000, 100 * 2 ** this.#failures++);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (!this.#closed) this.#connecting = this.#listen();
    }, delay);
    this.#retryTimer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    await this.#connecting?.catch(() => {});
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
    this.#listeners.clear();
    this.#leaseListeners.clear();
  }
}
