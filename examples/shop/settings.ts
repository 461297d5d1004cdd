/**
 * The shop's settings, from the environment only:
 *
 *   PORT               the gateway's port (default 3000)
 *   FERRY_DATA_DIR     embedded mode: where the SQLite files live (default ./data)
 *   FERRY_BUS_URL      distributed mode: RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672
 *   FERRY_DB_URL       distributed mode: PostgreSQL, e.g. postgres://postgres@127.0.0.1:5432/postgres
 *   FERRY_ADMIN_TOKEN  operator token for the admin routes (embedded mode generates one when unset)
 *   LOG_LEVEL          debug | info | warn | error (default info)
 *   SHOP_ORDER_TIMEOUT_MS, SHOP_PAYMENT_GIVE_UP_MS  distributed mode: the saga's deadline and
 *                      payments' give-up time, in ms (30000 each by default)
 *
 * A value the shop cannot use stops it at once with a {@link SettingsError} naming the variable, and
 * exit code {@link CONFIGURATION_ERROR_EXIT_CODE}. Credentials in the URLs never reach a log line:
 * `redactUrl` masks them.
 */
import { resolve } from 'node:path';
import { isInvalidOptionsError, type Logger, redactUrl } from 'ferry';
import { assertAmqpUrl } from 'ferry/amqp';
import { isPortFree } from './supervisor/free-port.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

export interface ShopSettings {
  readonly port: number;
  readonly dataDir: string;
  readonly busUrl: string | undefined;
  readonly dbUrl: string | undefined;
  readonly adminToken: string | undefined;
  readonly logLevel: LogLevel;
}

/** A setting with a value the shop cannot use; the message names the variable and what it takes. */
export class SettingsError extends Error {
  override readonly name = 'SettingsError';
}

/**
 * Exit code of a shop process stopped by its configuration (a setting, refused credentials, a
 * database that does not exist): starting it again as it is cannot help, so the supervisor does not.
 */
export const CONFIGURATION_ERROR_EXIT_CODE = 2;

export const DEFAULT_BUS_URL = 'amqp://guest:guest@127.0.0.1:5672';
export const DEFAULT_DB_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

/** What the distributed shop reads on top of {@link ShopSettings}, checked. */
export interface DistributedSettings {
  readonly busUrl: string;
  readonly dbUrl: string;
  /** Unset: the orders service's default. */
  readonly orderTimeoutMs: number | undefined;
  /** Unset: the payments service's default. */
  readonly paymentGiveUpMs: number | undefined;
}

/** Node's longest timer: a longer delay fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

export function readSettings(env: NodeJS.ProcessEnv = process.env): ShopSettings {
  // Digits only: Number() would take `1e4`, ` 80 `, `0x50` or `3000.0` for a port.
  const port =
    env.PORT === undefined || env.PORT === ''
      ? 3000
      : /^\d{1,5}$/.test(env.PORT)
        ? Number(env.PORT)
        : Number.NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new SettingsError(`PORT must be a port number (0-65535), not ${JSON.stringify(env.PORT)}`);
  }
  const level = (env.LOG_LEVEL || 'info').toLowerCase();
  if (!LEVELS.includes(level as LogLevel)) {
    throw new SettingsError(
      `LOG_LEVEL must be one of ${LEVELS.join(', ')}, not ${JSON.stringify(env.LOG_LEVEL)}`,
    );
  }
  const adminToken = env.FERRY_ADMIN_TOKEN || undefined;
  // What a client can send back in `Authorization: Bearer …`: visible ASCII (a header's bytes are
  // compared, so other characters never match as typed), short enough for a request's headers.
  if (adminToken !== undefined && !isSendableToken(adminToken)) {
    throw new SettingsError(
      `FERRY_ADMIN_TOKEN must be 1 to 1024 visible ASCII characters (no spaces), a ${adminToken.length}-character value is not`,
    );
  }
  // A folder named by spaces, or with a space at an end, is a typing slip far more often than meant.
  const dataDir = env.FERRY_DATA_DIR || './data';
  if (dataDir.trim() !== dataDir) {
    throw new SettingsError(
      `FERRY_DATA_DIR must not start or end with a space, tab or line break, not ${JSON.stringify(dataDir)} (unset it for ./data)`,
    );
  }
  return {
    port,
    dataDir: resolve(dataDir),
    busUrl: env.FERRY_BUS_URL || undefined,
    dbUrl: env.FERRY_DB_URL || undefined,
    adminToken,
    logLevel: level as LogLevel,
  };
}

/** Whether a client can send `token` back in `Authorization: Bearer …` as it is. */
export const isSendableToken = (token: string): boolean => /^[\x21-\x7e]{1,1024}$/.test(token);

/** The distributed shop's settings, checked up front by the supervisor and by each service. */
export function readDistributedSettings(env: NodeJS.ProcessEnv = process.env): DistributedSettings {
  return {
    busUrl: url(env, 'FERRY_BUS_URL', DEFAULT_BUS_URL, ['amqp:', 'amqps:']),
    dbUrl: url(env, 'FERRY_DB_URL', DEFAULT_DB_URL, ['postgres:', 'postgresql:']),
    orderTimeoutMs: milliseconds(env, 'SHOP_ORDER_TIMEOUT_MS'),
    paymentGiveUpMs: milliseconds(env, 'SHOP_PAYMENT_GIVE_UP_MS'),
  };
}

function milliseconds(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const value = env[name];
  if (value === undefined || value === '') return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(ms >= 1 && ms <= MAX_TIMER_MS)) {
    throw new SettingsError(
      `${name} must be a whole number of milliseconds from 1 to ${MAX_TIMER_MS}, not ${JSON.stringify(value)}`,
    );
  }
  return ms;
}

function url(env: NodeJS.ProcessEnv, name: string, fallback: string, schemes: readonly string[]): string {
  const value = env[name] || fallback;
  let parsed: URL | undefined;
  try {
    parsed = new URL(value);
  } catch {
    // Said below, without the value: it may hold a password.
  }
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(value)?.[0].toLowerCase();
  if (parsed === undefined && scheme !== undefined && schemes.includes(scheme)) {
    // The scheme is right: the rest does not parse (a port over 65535, a space in the host, a / ? #
    // or @ left unencoded in the password).
    throw new SettingsError(
      `${name} is not a valid URL: check its host and port (1 to 65535), and that the user name and password percent-encode characters such as / ? # @ and spaces (${redactUrl(value)})`,
    );
  }
  if (parsed === undefined || !schemes.includes(parsed.protocol)) {
    throw new SettingsError(
      `${name} must be a URL starting with ${schemes.map((s) => `${s}//`).join(' or ')}, not ${parsed === undefined ? 'something unparseable' : redactUrl(value)}`,
    );
  }
  if (parsed.protocol.startsWith('amqp')) {
    // What the bus would refuse in every service (a bad percent-escape, a query parameter amqplib
    // does not read): said once, before anything starts. The message masks the password.
    try {
      assertAmqpUrl(value);
    } catch (error) {
      if (isInvalidOptionsError(error)) throw new SettingsError(`${name}: ${error.message}`);
      throw error;
    }
  }
  return value;
}

/** One line per entry on stderr, `time level [service] message`, at `level` and above. */
export function shopLogger(service: string, level: LogLevel): Logger {
  const min = LEVELS.indexOf(level);
  const at = (l: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (LEVELS.indexOf(l) < min) return;
    const tail = fields !== undefined && Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
    process.stderr.write(`${new Date().toISOString()} ${l.padEnd(5)} [${service}] ${message}${tail}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/**
 * Stops the start, as a setting, when the gateway could not listen on `port`: another program
 * listens there, or this user may not bind it (ports below 1024 without the privilege). `command`
 * is how the shop was started, for the example in the message.
 */
export async function checkPortUsable(port: number, command: string): Promise<void> {
  if (port === 0) return;
  let free: boolean;
  try {
    free = await isPortFree(port);
  } catch (error) {
    if ((error as { code?: string }).code !== 'EACCES') throw error;
    throw new SettingsError(
      `PORT ${port} may not be used by this user (ports below 1024 need privileges): set PORT to another one, e.g. PORT=3001 ${command}`,
    );
  }
  if (!free) {
    throw new SettingsError(
      `PORT ${port} is in use by another program: set PORT to another one, e.g. PORT=3001 ${command}`,
    );
  }
}
