/**
 * One service of the distributed shop, as its own process: started by `distributed.ts` (the
 * supervisor), which passes what the process needs in the environment —
 *
 *   SHOP_SERVICE      which service: users | inventory | orders | payments | payment-provider | gateway
 *   SHOP_PORT         the port it listens on (stable across restarts; the gateway's is PORT)
 *   SHOP_TOPOLOGY     JSON: the other services' instance URLs
 *   FERRY_BUS_URL, FERRY_DB_URL, FERRY_ADMIN_TOKEN, FERRY_DATA_DIR, LOG_LEVEL  as for the shop
 *   SHOP_ORDER_TIMEOUT_MS, SHOP_PAYMENT_GIVE_UP_MS  optional tuning (30000 each by default)
 *
 * A configuration error (a setting it cannot use, credentials RabbitMQ refuses, a PostgreSQL
 * database or role that does not exist) ends it with one line saying which, and exit code 2: the
 * supervisor then stops the shop instead of starting the process again and again.
 *
 * It stops cleanly on SIGTERM or SIGINT (the HTTP server first, then its subscriptions, outbox, bus
 * and store), and exits when the supervisor dies.
 */

import { isInvalidOptionsError } from 'ferry';
import {
  isBrokerAccessRefusedError,
  isBrokerPermissionDeniedError,
  isBrokerTlsMismatchError,
  isBrokerVhostNotFoundError,
} from 'ferry/amqp';
import { SERVICES, type ServiceName, startService, type Topology } from './runtime.js';
import {
  CONFIGURATION_ERROR_EXIT_CODE,
  readDistributedSettings,
  readSettings,
  SettingsError,
  shopLogger,
} from './settings.js';
import { exitWithParent } from './supervisor/exit-with-parent.js';

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new SettingsError(`${name} is not set`);
  return value;
}

function port(name: string): number {
  const value = required(name);
  const port = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(port >= 0 && port <= 65_535)) {
    throw new SettingsError(`${name} must be a port number (0-65535), not ${JSON.stringify(value)}`);
  }
  return port;
}

function topology(): Topology {
  try {
    return JSON.parse(required('SHOP_TOPOLOGY')) as Topology;
  } catch (error) {
    if (error instanceof SettingsError) throw error;
    throw new SettingsError(`SHOP_TOPOLOGY must be JSON: ${(error as Error).message}`);
  }
}

/** PostgreSQL's SQLSTATEs for a database that does not exist and a login it refuses. */
const REFUSED_BY_POSTGRES = new Set(['3D000', '28000', '28P01']);

/**
 * Whether `error` is one that starting the process again cannot fix: a setting, credentials or a
 * virtual host RabbitMQ refuses, a database or role PostgreSQL does not know. Its message says
 * which; the process exits with {@link CONFIGURATION_ERROR_EXIT_CODE} and the supervisor stops.
 */
function isConfigurationError(error: unknown): boolean {
  if (
    error instanceof SettingsError ||
    // A URL or option Ferry refuses before connecting (a malformed bus URL, a query parameter it
    // does not read): starting again gives the same refusal.
    isInvalidOptionsError(error) ||
    isBrokerAccessRefusedError(error) ||
    isBrokerVhostNotFoundError(error) ||
    isBrokerPermissionDeniedError(error) ||
    isBrokerTlsMismatchError(error)
  )
    return true;
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && REFUSED_BY_POSTGRES.has(code)) return true;
    // pg's own error (no code) for `sslmode` asking TLS of a server without it.
    if (cause.message === 'The server does not support SSL connections') return true;
  }
  return false;
}

async function main(): Promise<void> {
  const settings = readSettings();
  const distributed = readDistributedSettings();
  const name = required('SHOP_SERVICE') as ServiceName;
  if (!SERVICES.includes(name)) throw new SettingsError(`SHOP_SERVICE must be one of ${SERVICES.join(', ')}`);
  const log = shopLogger(name, settings.logLevel);
  const urls = topology();
  const listenOn = name === 'gateway' ? settings.port : port('SHOP_PORT');
  const { orderTimeoutMs, paymentGiveUpMs } = distributed;

  const service = await startService(name, {
    infrastructure: {
      mode: 'distributed',
      dataDir: settings.dataDir,
      busUrl: distributed.busUrl,
      dbUrl: distributed.dbUrl,
    },
    adminToken: settings.adminToken,
    logger: log,
    port: listenOn,
    topology: () => urls,
    ...(orderTimeoutMs === undefined ? {} : { orderTimeoutMs }),
    ...(paymentGiveUpMs === undefined ? {} : { paymentGiveUpMs }),
  });
  let stopping: Promise<void> | undefined;
  const stop = (why: string) => {
    stopping ??= (async () => {
      log.info(`${why}: stopping`);
      try {
        await service.close();
        process.exit(0);
      } catch (error) {
        log.error(`stopping failed: ${error instanceof Error ? error.message : String(error)}`);
        process.exit(1);
      }
    })();
    return stopping;
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  exitWithParent({ onParentGone: () => stop('the supervisor is gone') });
  // Said once a SIGTERM would stop it cleanly.
  log.info(`ready at ${service.url}`);
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${process.env.SHOP_SERVICE ?? 'service'} could not start: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(isConfigurationError(error) ? CONFIGURATION_ERROR_EXIT_CODE : 1);
});
