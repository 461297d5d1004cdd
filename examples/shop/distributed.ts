/**
 * `npm run start:distributed`: every service of the shop in a process of its own, on RabbitMQ
 * (FERRY_BUS_URL) and PostgreSQL (FERRY_DB_URL, one schema per service), supervised: a process
 * that dies is restarted with backoff; SIGTERM or Ctrl-C stops them all within 10 s, and so does
 * the end of the npm process that started it. Settings are checked before anything starts; a
 * process that exits with a configuration error (code 2: refused credentials, say) stops the shop,
 * which exits with that code.
 *
 *   npm run start:distributed -- --instances payments=2 --instances orders=2
 */
import { fileURLToPath } from 'node:url';
import { type Logger, redactUrl, stderrLogger } from 'ferry';
import { lockDataDir, usableDataDir } from './data-dir.js';
import { runOnWithoutOutput } from './output-errors.js';
import { SERVICES, type ServiceName, type Topology } from './runtime.js';
import {
  CONFIGURATION_ERROR_EXIT_CODE,
  checkPortUsable,
  readDistributedSettings,
  readSettings,
  SettingsError,
  shopLogger,
} from './settings.js';
import { stopOnSignals } from './stop-on-signals.js';
import { claimBackends } from './supervisor/backend-claims.js';
import { freePorts } from './supervisor/free-port.js';
import { InstancesArgumentError, parseInstances } from './supervisor/instances.js';
import { type Supervisor, startSupervisor } from './supervisor/supervisor.js';

export { DEFAULT_BUS_URL, DEFAULT_DB_URL } from './settings.js';

/** Services with HTTP instances the gateway or others call; the gateway and provider run once. */
const SCALABLE: readonly ServiceName[] = ['users', 'inventory', 'orders', 'payments'];

export interface DistributedShopOptions {
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly logger?: Logger;
  /** Where the children's output goes. @default the process's */
  readonly stdout?: NodeJS.WritableStream;
  readonly stderr?: NodeJS.WritableStream;
}

export interface DistributedShop {
  readonly url: string;
  /** The broker the services use (credentials in it: `redactUrl` before printing). */
  readonly busUrl: string;
  readonly supervisor: Supervisor;
  readonly topology: Topology;
  stop(): Promise<void>;
}

/**
 * Starts the supervised processes; resolves once they are spawned (not yet ready: see GET /health).
 * Throws SettingsError or InstancesArgumentError, before starting anything, for a setting or an
 * argument it cannot use.
 */
export async function startDistributedShop(options: DistributedShopOptions): Promise<DistributedShop> {
  const settings = readSettings(options.env);
  // The supervisor tells when the shop is ready by asking the gateway on PORT: it must know it.
  if (settings.port === 0) {
    throw new SettingsError('PORT must be a port number from 1 to 65535 in distributed mode, not "0"');
  }
  // The services read these too: checked here, a bad one stops the shop before it starts.
  const { busUrl, dbUrl } = readDistributedSettings(options.env);
  const { instances, rest } = parseInstances(options.argv, SCALABLE);
  if (rest.length > 0)
    throw new SettingsError(`unknown arguments: ${rest.join(' ')} (only --instances name=n)`);
  // The payment provider keeps its ledger there: refused by that process alone, the shop would
  // start every other service and then stop.
  await usableDataDir(settings.dataDir);
  const unlockDataDir = await lockDataDir(settings.dataDir);
  let unlock = unlockDataDir;
  try {
    const release = await claimBackends({ busUrl, dbUrl, logger: options.logger ?? stderrLogger });
    unlock = () => release().finally(unlockDataDir);
    return await spawnServices(options, settings.port, busUrl, dbUrl, instances, unlock);
  } catch (error) {
    await unlock();
    throw error;
  }
}

async function spawnServices(
  options: DistributedShopOptions,
  port: number,
  busUrl: string,
  dbUrl: string,
  instances: Record<(typeof SCALABLE)[number], number>,
  unlock: () => Promise<void>,
): Promise<DistributedShop> {
  const log = options.logger ?? stderrLogger;
  log.info(`bus ${redactUrl(busUrl)}, database ${redactUrl(dbUrl)}`);

  const counts: Record<ServiceName, number> = { ...instances, gateway: 1, 'payment-provider': 1 };
  const ports = new Map<ServiceName, number[]>();
  const total = SERVICES.filter((s) => s !== 'gateway').reduce((n, s) => n + counts[s], 0);
  const free = await freePorts(total);
  for (const service of SERVICES) {
    if (service !== 'gateway') ports.set(service, free.splice(0, counts[service]));
  }
  const urls = (service: ServiceName) => (ports.get(service) ?? []).map((p) => `http://127.0.0.1:${p}`);
  const topology: Topology = {
    users: urls('users'),
    inventory: urls('inventory'),
    orders: urls('orders'),
    payments: urls('payments'),
    paymentProvider: urls('payment-provider')[0] as string,
  };
  const entry = fileURLToPath(new URL('./service-main.ts', import.meta.url));
  const supervisor = startSupervisor({
    logger: log,
    fatalExitCodes: [CONFIGURATION_ERROR_EXIT_CODE],
    ...(options.stdout === undefined ? {} : { stdout: options.stdout as never }),
    ...(options.stderr === undefined ? {} : { stderr: options.stderr as never }),
    processes: SERVICES.map((service) => ({
      name: service,
      instances: counts[service],
      command: process.execPath,
      args: ['--conditions=ferry-source', '--import', 'tsx', entry],
      env: (instance: number) => ({
        ...options.env,
        SHOP_SERVICE: service,
        SHOP_PORT: String(service === 'gateway' ? port : ports.get(service)?.[instance]),
        SHOP_TOPOLOGY: JSON.stringify(topology),
        FERRY_BUS_URL: busUrl,
        FERRY_DB_URL: dbUrl,
      }),
    })),
  });
  return {
    url: `http://127.0.0.1:${port}`,
    busUrl,
    supervisor,
    topology,
    stop: () => supervisor.stop().finally(unlock),
  };
}

async function main(): Promise<void> {
  runOnWithoutOutput();
  // Read before the (slow) start: an npm gone meanwhile is then noticed too.
  const parentPid = process.ppid;
  const settings = readSettings();
  // Checked before anything starts: the gateway would fail to listen and be restarted forever,
  // while the other program's answers to GET /health passed for the shop being ready.
  await checkPortUsable(settings.port, 'npm run start:distributed');
  const log = shopLogger('supervisor', settings.logLevel);
  // Installed before the start: a signal while it starts stops what it started once started,
  // instead of killing the supervisor and leaving its children to notice alone.
  const lifecycle = stopOnSignals<Awaited<ReturnType<typeof startDistributedShop>>>({
    close: (shop) => shop.stop(),
    onStop: (reason) => log.info(`${reason}: stopping every service (at most 10 s)`),
    parentPid,
  });
  const shop = await lifecycle.started(
    startDistributedShop({ argv: process.argv.slice(2), env: process.env, logger: log }),
  );
  if (shop === undefined) return;
  // Said once the settings passed: a refused one is then the only line printed.
  if (settings.adminToken === undefined) {
    log.warn('FERRY_ADMIN_TOKEN is not set: the admin routes answer 401 (set it to use them)');
  }
  void shop.supervisor.waitForExit().then((exit) => {
    if (exit.reason !== 'fatal-exit') return;
    process.stderr.write(
      `The shop stopped: ${exit.label} exited with code ${exit.code}, a configuration error (its own line above says which); every service is stopped\n`,
    );
    process.exit(exit.code);
  });
  // Ready once the gateway says every service is.
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (lifecycle.stopping()) return;
    try {
      if ((await fetch(`${shop.url}/health`)).status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      log.warn(`not every service is ready after 120 s: see the lines above, and ${shop.url}/health`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const url = shop.url.replace('127.0.0.1', 'localhost');
  process.stdout.write(
    `\nFerry shop (distributed) is ready at ${url}: ${shop.supervisor.status().length} processes, bus ${redactUrl(shop.busUrl)}\n` +
      `  Try: curl -s ${url}/health\n  Ctrl-C stops every service.\n\n`,
  );
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((error: unknown) => {
    const known = error instanceof SettingsError || error instanceof InstancesArgumentError;
    process.stderr.write(
      `The shop could not start: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    process.exit(known ? CONFIGURATION_ERROR_EXIT_CODE : 1);
  });
}
