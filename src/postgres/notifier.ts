import type { Client, Pool } from 'pg';
import type { Logger } from '../messaging/logger.js';

const NOTIFY_INTERVAL_MS = 10;

export interface NotifierOptions {
  readonly connectionString: string;
  readonly channel: string;
  /** Sends the notifications. */
  readonly pool: Pool;
  readonly logger: Logger;
}

/**
 * Wake-ups through LISTEN/NOTIFY. NOTIFY is sent after an append has committed, from outside its
 * transaction: a NOTIFY inside the append would take PostgreSQL's global notification lock through
 * the commit and serialise every appending transaction. Notifications are coalesced, since they carry
 * nothing but "look again".
 */
export class Notifier {
  readonly #options: NotifierOptions;
  readonly #listeners = new Set<() => void>();
  #client: Client | undefined;
  #connecting: Promise<void> | undefined;
  #sending = false;
  #cooling = false;
  #again = false;
  #closed = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;

  constructor(options: NotifierOptions) {
    this.#options = options;
  }

  /** Tells every listener, in this process and others, that events may have been appended. */
  notify(): void {
    this.#wake();
    if (this.#closed) return;
    if (this.#sending || this.#cooling) {
      this.#again = true;
      return;
    }
    this.#send();
  }

  /**
   * Each NOTIFY is a small write transaction of its own: under a stream of appends they are limited to
   * one per `NOTIFY_INTERVAL_MS`. The first append after a quiet spell is announced at once.
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
        }, NOTIFY_INTERVAL_MS).unref();
      });
  }

  /** Calls `listener` on every wake-up. Starts listening on first use. Returns an unsubscribe function. */
  watch(listener: () => void): () => void {
    this.#listeners.add(listener);
    if (this.#client === undefined && this.#connecting === undefined) this.#connecting = this.#listen();
    return () => {
      this.#listeners.delete(listener);
    };
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
      application_name: 'ferry-listen',
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
    client.on('notification', () => this.#wake());
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      await client.query(`LISTEN "${this.#options.channel}"`);
      if (this.#closed) {
        await client.end();
        return;
      }
      this.#client = client;
      this.#failures = 0;
      // Notifications sent while not listening are lost: have everyone look again.
      this.#wake();
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
  }
}
