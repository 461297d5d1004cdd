import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import type { EventStore } from '../eventstore/store.js';
import {
  type DurableIdempotencyStoreOptions,
  resolveDurableIdempotencyStoreOptions,
} from '../http/server/durable-idempotency.js';
import type { IdempotencyStore } from '../http/server/idempotency.js';
import { MemoryIdempotencyStore } from '../http/server/memory-idempotency-store.js';
import type { Logger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import { createEventStore, POSTGRES_URL_OPTION_NAMES } from './create-event-store.js';
import type { PostgresUrlOptions } from './postgres-url-options.js';

/** Options of {@link createIdempotencyStore}: a `url` or an `eventStore`, and the store's own options. */
export interface CreateIdempotencyStoreOptions extends DurableIdempotencyStoreOptions {
  /**
   * `memory://` (this process only), `sqlite:./path/app.db` or
   * `postgres://user@host:5432/db[?schema=name]`: the database is opened (created, migrated) for
   * the store alone, and `close()` closes it.
   */
  readonly url?: string;
  /**
   * An open event store whose database keeps the keys too (its SQLite file, its PostgreSQL schema
   * and pool); `close()` leaves it open. A memory event store gives a memory idempotency store.
   */
  readonly eventStore?: EventStore;
  /** PostgreSQL options, when `url` selects it (`schema`, `poolSize`…). */
  readonly postgres?: PostgresUrlOptions;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

/** An idempotency store that {@link createIdempotencyStore} opened. */
export interface OpenIdempotencyStore extends IdempotencyStore {
  /**
   * Deletes every expired key (answers past `ttlMs`, claims past their lease) now, as the store does
   * in the background every `cleanupIntervalMs`. Resolves the number of keys deleted;
   * a call made while one runs joins it, and resolves its count.
   */
  deleteExpired(): Promise<number>;
  /** Closes the database opened for the store (nothing when it came with `eventStore`). Idempotent. */
  close(): Promise<void>;
}

/** What the SQLite and PostgreSQL backends offer (duck-typed: connect/ names no adapter's type). */
interface WithIdempotencyStore {
  idempotencyStore(options: DurableIdempotencyStoreOptions): IdempotencyStore & {
    deleteExpired(): Promise<number>;
  };
}

function hasIdempotencyStore(backend: unknown): backend is WithIdempotencyStore {
  return typeof (backend as Partial<WithIdempotencyStore>).idempotencyStore === 'function';
}

/** What {@link createIdempotencyStore} reads. */
const IDEMPOTENCY_STORE_OPTION_NAMES = [
  'url',
  'eventStore',
  'postgres',
  'logger',
  'ttlMs',
  'leaseMs',
  'namespace',
  'cleanupIntervalMs',
] as const satisfies readonly (keyof CreateIdempotencyStoreOptions)[];

/**
 * Opens an HTTP idempotency store shared by every instance of a service and kept across restarts
 * (SQLite, PostgreSQL), for services with or without an event store. The driver (better-sqlite3,
 * pg) is loaded only when its URL is used. Rejects like `createEventStore` when the database cannot
 * be opened (`STORE_UNAVAILABLE`, the password masked), and with `InvalidOptionsError` for bad options.
 *
 * @example
 * const idempotency = await createIdempotencyStore({ url: process.env.DATABASE_URL! });
 * ferryFastify(app, { idempotency: { store: idempotency } });
 * app.addHook('onClose', () => idempotency.close());
 */
export async function createIdempotencyStore(
  options: CreateIdempotencyStoreOptions,
): Promise<OpenIdempotencyStore> {
  // A misspelt key (`namespce`, `postgres: { poolsize }`) is refused, named by this call.
  checkOptions('createIdempotencyStore', options, IDEMPOTENCY_STORE_OPTION_NAMES);
  checkOptions('createIdempotencyStore postgres', options.postgres, POSTGRES_URL_OPTION_NAMES);
  if ((options.url === undefined) === (options.eventStore === undefined)) {
    throw new InvalidOptionsError('createIdempotencyStore needs exactly one of `url` and `eventStore`');
  }
  const { url, eventStore, postgres, logger, ...storeOptions } = options;
  loggerOption('createIdempotencyStore', logger);
  // Checked before any database is opened.
  const o = resolveDurableIdempotencyStoreOptions(storeOptions);
  const owned =
    eventStore ??
    (await createEventStore({
      url: url!,
      ...(postgres === undefined ? {} : { postgres }),
      ...(logger === undefined ? {} : { logger }),
    }));
  const backend = owned.backend;
  const store = hasIdempotencyStore(backend)
    ? backend.idempotencyStore(storeOptions)
    : new MemoryIdempotencyStore({ ttlMs: o.ttlMs, leaseMs: o.leaseMs });
  let closing: Promise<void> | undefined;
  return {
    begin: (key, fingerprint) => store.begin(key, fingerprint),
    complete: (key, response, claim) => store.complete(key, response, claim),
    abandon: (key, claim) => store.abandon(key, claim),
    deleteExpired: () => store.deleteExpired(),
    close: () => {
      closing ??= eventStore === undefined ? owned.close() : Promise.resolve();
      return closing;
    },
  };
}
