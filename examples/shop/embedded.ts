/**
 * The whole shop in one process: every service on its own SQLite file under `dataDir`, one
 * in-memory bus between them, the gateway on `port`. Nothing to install, and durable: an order
 * answered 201 is in orders' SQLite file with the message that starts its saga, so it completes
 * after a crash and a restart.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'ferry';
import { lockDataDir, usableDataDir, withoutErrorCode } from './data-dir.js';
import { type RunningService, type ServiceName, startService, type Topology } from './runtime.js';
import { isSendableToken, SettingsError } from './settings.js';

export interface EmbeddedShopOptions {
  readonly dataDir: string;
  /** The gateway's port; 0 takes a free one. */
  readonly port: number;
  readonly host?: string;
  /** Unset: one is generated on first start and kept in `dataDir/admin-token`. */
  readonly adminToken?: string | undefined;
  readonly logger: (service: ServiceName) => Logger;
  /** The in-memory broker's name (tests run several shops in one process). @default 'shop' */
  readonly broker?: string;
  readonly orderTimeoutMs?: number;
  readonly paymentGiveUpMs?: number;
}

export type AdminTokenSource = 'FERRY_ADMIN_TOKEN' | 'generated' | 'file';

export interface EmbeddedShop {
  /** The gateway's URL. */
  readonly url: string;
  readonly adminToken: string;
  /**
   * Where the token comes from: `FERRY_ADMIN_TOKEN` (the operator's: never shown), `generated` on this
   * start, or the data folder's `admin-token` file (generated on an earlier start, or written there by
   * hand). Only the last two may be shown.
   */
  readonly adminTokenSource: AdminTokenSource;
  readonly services: ReadonlyMap<ServiceName, RunningService>;
  /** Stops the gateway first, then the services, then the provider. */
  close(): Promise<void>;
}

/** Free space the data folder's disk must have for the shop to start. */
export const MIN_FREE_BYTES = 32 * 1024 * 1024;

/** Services in start order: a service's callees before it, the gateway last. */
const START_ORDER: readonly ServiceName[] = ['payment-provider', 'users', 'inventory', 'orders', 'payments'];

export async function startEmbeddedShop(options: EmbeddedShopOptions): Promise<EmbeddedShop> {
  // Room for the services' SQLite files and their write-ahead logs: with less, one of them fails
  // while the shop starts ("database or disk is full", "disk I/O error"), the variable unnamed.
  await usableDataDir(options.dataDir, { minFreeBytes: MIN_FREE_BYTES });
  const unlock = await lockDataDir(options.dataDir);
  let token: string;
  let source: AdminTokenSource;
  try {
    ({ token, source } = await adminToken(options.dataDir, options.adminToken));
  } catch (error) {
    await unlock();
    throw error;
  }
  const services = new Map<ServiceName, RunningService>();
  const urlOf = (name: ServiceName) => services.get(name)?.url ?? '';
  const topology = (): Topology => ({
    users: [urlOf('users')],
    inventory: [urlOf('inventory')],
    orders: [urlOf('orders')],
    payments: [urlOf('payments')],
    paymentProvider: urlOf('payment-provider'),
  });
  const infrastructure = {
    mode: 'embedded',
    dataDir: options.dataDir,
    ...(options.broker === undefined ? {} : { broker: options.broker }),
  } as const;

  async function closeAll(): Promise<void> {
    for (const name of ['gateway', ...[...START_ORDER].reverse()] as ServiceName[]) {
      const service = services.get(name);
      services.delete(name);
      await service?.close().catch((error: unknown) => {
        options.logger(name).error(`closing: ${error instanceof Error ? error.message : String(error)}`);
      });
    }
  }

  try {
    for (const name of START_ORDER) {
      const settings = {
        infrastructure,
        adminToken: token,
        logger: options.logger(name),
        port: 0,
        topology,
        ...(options.host === undefined ? {} : { host: options.host }),
        ...(options.orderTimeoutMs === undefined ? {} : { orderTimeoutMs: options.orderTimeoutMs }),
        ...(options.paymentGiveUpMs === undefined ? {} : { paymentGiveUpMs: options.paymentGiveUpMs }),
      };
      services.set(name, await startService(name, { ...settings, seedCatalog: false }));
    }
    // Once orders listens to `inventory.updated`.
    await services.get('inventory')?.seed?.();
    services.set(
      'gateway',
      await startService('gateway', {
        infrastructure,
        adminToken: token,
        logger: options.logger('gateway'),
        port: options.port,
        topology,
        ...(options.host === undefined ? {} : { host: options.host }),
      }),
    );
  } catch (error) {
    await closeAll();
    await unlock();
    throw error;
  }

  let closing: Promise<void> | undefined;
  return {
    url: urlOf('gateway'),
    adminToken: token,
    adminTokenSource: source,
    services,
    close: () => {
      closing ??= closeAll().finally(unlock);
      return closing;
    },
  };
}

/** The operator's token: the one given, else the one generated on first start (kept, mode 0600). */
async function adminToken(
  dataDir: string,
  given: string | undefined,
): Promise<{ token: string; source: AdminTokenSource }> {
  if (given !== undefined && given !== '') return { token: given, source: 'FERRY_ADMIN_TOKEN' };
  const file = join(dataDir, 'admin-token');
  let kept = '';
  try {
    kept = (await readFile(file, 'utf8')).trim();
  } catch (error) {
    // ENOENT: the first start. Anything else (a folder by that name) is the operator's to mend.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new SettingsError(
        `the admin token file ${file} cannot be read (${withoutErrorCode(error)}): make it a file, delete it to have one generated, or set FERRY_ADMIN_TOKEN`,
      );
    }
  }
  if (kept !== '') {
    // Edited by hand, it is held to the rule FERRY_ADMIN_TOKEN is: otherwise no request could open
    // the admin routes with it.
    if (!isSendableToken(kept)) {
      throw new SettingsError(
        `the admin token kept in ${file} must be 1 to 1024 visible ASCII characters (no spaces): correct it, delete the file to have one generated, or set FERRY_ADMIN_TOKEN`,
      );
    }
    return { token: kept, source: 'file' };
  }
  const token = randomBytes(18).toString('base64url');
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  return { token, source: 'generated' };
}
