import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError, isFerryError } from '../errors/ferry-error.js';
import { refuseUnknownKeys } from '../errors/options-object.js';
import type { EventStoreBackend } from '../eventstore/backend.js';
import { isStoreUnavailableError, StoreUnavailableError } from '../eventstore/errors.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import type { Logger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import { redactUrl, urlSecrets } from '../url/redact-url.js';
import type { PostgresUrlOptions } from './postgres-url-options.js';

/** Options of {@link createEventStore}. Give a `url` or a `backend`. */
export interface CreateEventStoreOptions {
  /**
   * `memory://[name]`, `sqlite:./path/events.db` (or `sqlite::memory:`) or
   * `postgres://user@host:5432/db[?schema=name]`.
   */
  readonly url?: string;
  /** A backend instance, instead of a URL. */
  readonly backend?: EventStoreBackend;
  /** PostgreSQL options, when `url` selects it. */
  readonly postgres?: PostgresUrlOptions;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

/**
 * Opens an event store: creates or migrates its storage, then returns it. A backend's driver (pg,
 * better-sqlite3) is loaded only when its URL is used. Rejects with `StoreUnavailableError` (code
 * `STORE_UNAVAILABLE`, the driver's error as `cause`, any password masked) when the storage cannot
 * be opened, and with `InvalidOptionsError` for a URL it cannot use.
 */
export async function createEventStore(options: CreateEventStoreOptions): Promise<EventStore> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidOptionsError(
      "createEventStore needs options: { url } ('sqlite:…', 'postgres://…', 'memory://') or { backend }",
    );
  }
  refuseUnknownKeys('createEventStore', options, ['url', 'backend', 'postgres', 'logger']);
  loggerOption('createEventStore', options.logger);
  if (options.url !== undefined && typeof options.url !== 'string') {
    throw new InvalidOptionsError(`createEventStore url must be a string, not ${describeValue(options.url)}`);
  }
  if ((options.url === undefined) === (options.backend === undefined)) {
    throw new InvalidOptionsError('createEventStore needs exactly one of `url` and `backend`');
  }
  // Checked whatever the URL, so that a bad value shows before the URL is switched to PostgreSQL.
  if (options.postgres !== undefined) await checkPostgresOptions(options.postgres);
  const backend = options.backend ?? (await backendFromUrl(options.url!, options));
  try {
    await backend.open();
  } catch (error) {
    // A backend that says itself where it could not open: passed on, any password masked.
    if (isStoreUnavailableError(error)) {
      throw new StoreUnavailableError(error.backend, masked(error.message, options.url), {
        cause: error.cause,
      });
    }
    // The backend's own typed errors (invalid options…) already carry a stable code.
    if (isFerryError(error)) throw error;
    const where = options.url === undefined ? '' : ` at ${redactUrl(options.url)}`;
    const reason = masked(error instanceof Error ? error.message : String(error), options.url);
    throw new StoreUnavailableError(
      backend.name,
      `could not open the ${backend.name} event store${where}: ${reason}`,
      { cause: error },
    );
  }
  return new EventStore(backend, options.logger === undefined ? {} : { logger: options.logger });
}

/** Options of the PostgreSQL backend other than `schema`: given in `postgres`, never in the URL. */
const BACKEND_OPTION_NAMES = [
  'poolSize',
  'notifyIntervalMs',
  'horizonWaitMs',
  'longTransactionWarnMs',
  'statementTimeoutMs',
] as const satisfies readonly (keyof PostgresUrlOptions)[];

/** What `postgres` (of createEventStore, createIdempotencyStore) takes. */
export const POSTGRES_URL_OPTION_NAMES: readonly string[] = ['schema', ...BACKEND_OPTION_NAMES];

/** Throws what the PostgreSQL backend would throw for `postgres`, without connecting (nor loading pg). */
async function checkPostgresOptions(postgres: PostgresUrlOptions): Promise<void> {
  if (typeof postgres !== 'object' || postgres === null || Array.isArray(postgres)) {
    throw new InvalidOptionsError('postgres options must be an object');
  }
  refuseUnknownKeys('createEventStore postgres', postgres, POSTGRES_URL_OPTION_NAMES);
  const { PostgresEventStoreBackend } = await import('../postgres/postgres-backend.js');
  new PostgresEventStoreBackend({ ...postgres, url: 'postgres://localhost/unused' });
}

/** `text` with the URL's secrets (password, secret query parameters) replaced by `***`, in case the driver quoted them. */
function masked(text: string, url: string | undefined): string {
  if (url === undefined) return text;
  let out = text;
  for (const secret of urlSecrets(url)) out = out.replaceAll(secret, '***');
  return out;
}

async function backendFromUrl(url: string, options: CreateEventStoreOptions): Promise<EventStoreBackend> {
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  switch (scheme) {
    case 'memory':
      return MemoryEventStoreBackend.named(url.slice('memory://'.length).replace(/\/+$/, '') || 'default');
    case 'sqlite': {
      const path = url.slice('sqlite:'.length);
      // `sqlite://./x.db` would open /x.db at the root of the file system (`//` is `/`).
      if (path.startsWith('//')) {
        throw new InvalidOptionsError(
          `unsupported event store URL ${redactUrl(url)}: a SQLite URL is sqlite:<path> (sqlite:./data/events.db, sqlite:/var/lib/app/events.db), without //`,
        );
      }
      const { SqliteEventStoreBackend } = await import('../sqlite/sqlite-backend.js');
      return new SqliteEventStoreBackend({ path });
    }
    case 'postgres':
    case 'postgresql': {
      const { PostgresEventStoreBackend } = await import('../postgres/postgres-backend.js');
      // `?schema=name` in the URL chooses the schema; PostgreSQL itself must not see it.
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        // Node's own error would quote the URL, password included.
        throw new InvalidOptionsError(`invalid PostgreSQL URL ${redactUrl(url)}`);
      }
      // Ferry's other options are not read from the URL (pg would ignore them): said, not dropped.
      for (const name of BACKEND_OPTION_NAMES) {
        if (parsed.searchParams.has(name)) {
          throw new InvalidOptionsError(
            `the PostgreSQL URL ${redactUrl(url)} sets ${name}, which is not read from the URL: give it as createEventStore({ url, postgres: { ${name} } }) (only schema may be in the URL)`,
          );
        }
      }
      const schema = parsed.searchParams.get('schema');
      parsed.searchParams.delete('schema');
      if (schema !== null && options.postgres?.schema !== undefined && options.postgres.schema !== schema) {
        throw new InvalidOptionsError(
          `the PostgreSQL URL ${redactUrl(url)} names schema ${JSON.stringify(schema)} and the postgres option ${JSON.stringify(options.postgres.schema)}: give one`,
        );
      }
      return new PostgresEventStoreBackend({
        ...(schema === null ? {} : { schema }),
        ...options.postgres,
        url: parsed.toString(),
        ...(options.logger === undefined ? {} : { logger: options.logger }),
      });
    }
    default:
      throw new InvalidOptionsError(
        `unsupported event store URL ${redactUrl(url)}: expected memory://[name], sqlite:<path> or postgres://user@host:5432/db`,
      );
  }
}
