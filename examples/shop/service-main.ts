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
 * It stops cleanly on SIGTERM or SIGINT (the HTTP server first, then its subscriptions, outbox, bus
 * and store), and exits when the supervisor dies.
 */

import { SERVICES, type ServiceName, startService, type Topology } from './runtime.js';
import { readSettings, SettingsError, shopLogger } from './settings.js';
import { exitWithParent } from './supervisor/exit-with-parent.js';

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new SettingsError(`${name} is not set`);
  return value;
}

function optionalMs(name: string): number | undefined {
  const value = process.env[name];
  if (value === undefined || value === '') return undefined;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 1)
    throw new SettingsError(`${name} must be a positive integer (ms), not ${value}`);
  return ms;
}

async function main(): Promise<void> {
  const settings = readSettings();
  const name = required('SHOP_SERVICE') as ServiceName;
  if (!SERVICES.includes(name)) throw new SettingsError(`SHOP_SERVICE must be one of ${SERVICES.join(', ')}`);
  const log = shopLogger(name, settings.logLevel);
  const topology = JSON.parse(required('SHOP_TOPOLOGY')) as Topology;
  const port = name === 'gateway' ? settings.port : Number(required('SHOP_PORT'));
  const orderTimeoutMs = optionalMs('SHOP_ORDER_TIMEOUT_MS');
  const paymentGiveUpMs = optionalMs('SHOP_PAYMENT_GIVE_UP_MS');

  const service = await startService(name, {
    infrastructure: {
      mode: 'distributed',
      dataDir: settings.dataDir,
      busUrl: required('FERRY_BUS_URL'),
      dbUrl: required('FERRY_DB_URL'),
    },
    adminToken: settings.adminToken,
    logger: log,
    port,
    topology: () => topology,
    ...(orderTimeoutMs === undefined ? {} : { orderTimeoutMs }),
    ...(paymentGiveUpMs === undefined ? {} : { paymentGiveUpMs }),
  });
  log.info(`ready at ${service.url}`);

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
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${process.env.SHOP_SERVICE ?? 'service'} could not start: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(1);
});
