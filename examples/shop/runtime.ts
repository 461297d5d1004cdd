/**
 * How one service of the shop starts, whatever the mode: its own store (a SQLite file in embedded
 * mode, its own PostgreSQL schema in distributed mode), its own bus connection (the in-memory broker
 * or RabbitMQ), its outbox, then the service itself. Embedded mode calls {@link startService} for
 * every service in one process; distributed mode once per process.
 */
import { join } from 'node:path';
import {
  type Bus,
  createBus,
  createEventStore,
  createOutbox,
  type EventStore,
  type Logger,
  type Outbox,
  redactUrl,
} from 'ferry';
import { CATALOG } from './catalog.js';
import { type ShopContracts, shopContracts } from './contracts.js';
import { diskRoomCheck, RUNNING_MIN_FREE_BYTES, usableDataDir } from './data-dir.js';
import { firstReady } from './first-ready.js';
import { type ServiceUrls, startGateway } from './gateway/gateway.js';
import { startInventoryService } from './inventory/service.js';
import { serviceLookups } from './orders/lookups.js';
import { startOrdersService } from './orders/service.js';
import { startPaymentProvider } from './payment-provider/provider.js';
import { startPaymentsService } from './payments/payments-service.js';
import { Upstream } from './upstream.js';
import { startUsersService } from './users/service.js';

export const SERVICES = ['payment-provider', 'users', 'inventory', 'orders', 'payments', 'gateway'] as const;
export type ServiceName = (typeof SERVICES)[number];

/** Where the services' instances answer: what the gateway and the callers between services use. */
export type Topology = ServiceUrls;

/** Embedded: SQLite files and the in-memory bus. Distributed: PostgreSQL schemas and RabbitMQ. */
export type Infrastructure =
  | {
      readonly mode: 'embedded';
      readonly dataDir: string;
      /** The in-memory broker's name: one per shop in a process. @default 'shop' */
      readonly broker?: string;
    }
  | {
      readonly mode: 'distributed';
      readonly dataDir: string;
      readonly busUrl: string;
      readonly dbUrl: string;
    };

export interface ServiceSettings {
  readonly infrastructure: Infrastructure;
  readonly adminToken: string | undefined;
  readonly logger: Logger;
  /** The port this service listens on (the gateway's is fixed; the others may take 0, a free one). */
  readonly port: number;
  readonly host?: string;
  /** Where the other services are (the gateway, orders and payments call them). */
  readonly topology: () => Topology;
  /** Orders: time until a pending order is cancelled (`timeout`). @default 30000 */
  readonly orderTimeoutMs?: number;
  /**
   * Inventory: seed the catalog as it starts, once an orders instance is ready (waited for up to 30 s).
   * Embedded mode seeds once every service is up instead: either way `inventory.updated` finds its
   * subscribers at once. @default true
   */
  readonly seedCatalog?: boolean;
  /** Payments: how long an unavailable provider is retried before `payment_unavailable`. @default 30000 */
  readonly paymentGiveUpMs?: number;
}

export interface RunningService {
  readonly name: ServiceName;
  readonly url: string;
  /** Inventory: adds the catalog's products whose id is not taken yet. */
  readonly seed?: () => Promise<void>;
  close(): Promise<void>;
}

/** Distributed: how long inventory waits for orders to be ready before it seeds the catalog. */
const SEED_WAIT_MS = 30_000;

/**
 * The outbox relay in distributed mode. Its lease is how long the messages of a process that died
 * between publishing them and deleting their rows wait before its restarted process (or another
 * instance) sends them again: the library's 30 s for a durable broker equals the order's deadline,
 * so an order whose command or reply was caught in that window ended `timeout` (1 or 2 in 20 when
 * orders and payments were killed together); 10 s leaves it time to complete. Each publish is
 * allowed 5 s, well within the lease, so a live relay never has its rows taken over.
 */
export const DISTRIBUTED_RELAY_OPTIONS = Object.freeze({ leaseMs: 10_000, publishTimeoutMs: 5_000 });

/**
 * The event stores in distributed mode (PostgreSQL). A statement may wait for a lock 10 s, and a
 * transaction left idle between two statements (its process stopped, say by SIGSTOP) is ended by the
 * server after 10 s, its locks freed: with the library's 30 s, one stopped inventory instance held
 * the stock locks of the others for the whole order deadline, and the orders behind it ended
 * `timeout`. Every unit of work of the shop is a few short statements.
 */
export const DISTRIBUTED_STORE_OPTIONS = Object.freeze({ statementTimeoutMs: 10_000 });

/** Stock commands of each kind inventory handles at once in embedded mode (see `startService`). */
const EMBEDDED_STOCK_CONCURRENCY = 32;

/** The event store URL of `service`: its own SQLite file, or its own PostgreSQL schema. */
export function storeUrl(infrastructure: Infrastructure, service: string): string {
  if (infrastructure.mode === 'embedded') return `sqlite:${join(infrastructure.dataDir, `${service}.db`)}`;
  const url = new URL(infrastructure.dbUrl);
  url.searchParams.set('schema', `shop_${service.replaceAll('-', '_')}`);
  return url.toString();
}

/** The bus URL: one in-memory broker per process, or RabbitMQ. */
export function busUrl(infrastructure: Infrastructure): string {
  return infrastructure.mode === 'embedded'
    ? `memory://${infrastructure.broker ?? 'shop'}`
    : infrastructure.busUrl;
}

interface Plumbing {
  readonly store: EventStore;
  readonly bus: Bus<ShopContracts>;
  readonly outbox: Outbox<ShopContracts>;
  close(): Promise<void>;
}

/** Opens `service`'s store, bus and outbox; closes what it opened if a later step fails. */
async function plumbing(service: string, settings: ServiceSettings): Promise<Plumbing> {
  const { infrastructure, logger } = settings;
  const url = storeUrl(infrastructure, service);
  logger.info(`opening the event store at ${redactUrl(url)}`);
  const store = await createEventStore({
    url,
    logger,
    ...(infrastructure.mode === 'distributed' ? { postgres: DISTRIBUTED_STORE_OPTIONS } : {}),
  });
  let bus: Bus<ShopContracts> | undefined;
  try {
    bus = await createBus({ url: busUrl(infrastructure), service, contracts: shopContracts, logger });
    const outbox = await createOutbox({
      store,
      bus,
      logger,
      // Embedded, every service closes in one process, one after the other: a relay waiting at close
      // for its messages to be settled would wait for services already closed (5 s each). Rows not
      // yet settled stay in the outbox and go out again at the next start; inboxes drop the copies.
      relay: infrastructure.mode === 'embedded' ? { settleOnCloseMs: 0 } : DISTRIBUTED_RELAY_OPTIONS,
    });
    return {
      store,
      bus,
      outbox,
      async close() {
        await outbox.close();
        await bus?.close();
        await store.close();
      },
    };
  } catch (error) {
    await bus?.close();
    await store.close();
    throw error;
  }
}

/** Starts `name` on its own plumbing; `close()` stops it and closes the plumbing. */
export async function startService(name: ServiceName, settings: ServiceSettings): Promise<RunningService> {
  const { logger, adminToken, port } = settings;
  const listen = { port, ...(settings.host === undefined ? {} : { host: settings.host }) };

  if (name === 'payment-provider') {
    await usableDataDir(settings.infrastructure.dataDir);
    const provider = await startPaymentProvider({
      ...listen,
      file: join(settings.infrastructure.dataDir, 'payment-provider.db'),
      ...(adminToken === undefined ? {} : { adminToken }),
      logger,
    });
    return { name, url: provider.url, close: () => provider.close() };
  }

  if (name === 'gateway') {
    const { infrastructure } = settings;
    const gateway = await startGateway({
      ...listen,
      services: settings.topology(),
      adminToken,
      logger,
      // Embedded, every service keeps its SQLite file there: a full disk fails every order.
      ...(infrastructure.mode === 'embedded'
        ? { readiness: { disk: diskRoomCheck(infrastructure.dataDir, RUNNING_MIN_FREE_BYTES) } }
        : {}),
    });
    return { name, url: gateway.url, close: () => gateway.close() };
  }

  const p = await plumbing(name, settings);
  const { bus, store, outbox } = p;
  try {
    switch (name) {
      case 'users': {
        const users = await startUsersService({ ...listen, bus, store, outbox, logger });
        return { name, url: users.url, close: after(users, p) };
      }
      case 'inventory': {
        // Not ready (GET /health/ready 503, and so the gateway's /health) until the catalog it seeds
        // as it starts is in: a client told the shop is ready finds the products.
        let seeded = settings.seedCatalog === false;
        const inventory = await startInventoryService({
          readiness: {
            catalog: () => {
              if (!seeded) throw new Error('the catalog is being seeded');
            },
          },
          ...listen,
          bus,
          store,
          outbox,
          adminToken,
          logger,
          // On SQLite the units of work run one at a time whatever this says, each seeing those before
          // it: more at once share a commit (one disk sync) instead of one each. On PostgreSQL each
          // holds a pooled connection (10): the service's default there.
          ...(settings.infrastructure.mode === 'embedded' ? { concurrency: EMBEDDED_STOCK_CONCURRENCY } : {}),
        });
        // Seeded on first start: products whose id is taken are left as they are.
        const seed = async () => {
          await inventory.seed(CATALOG);
        };
        if (settings.seedCatalog !== false) {
          // Distributed: orders binds its queue to `inventory.updated` as it starts, in a process of
          // its own. Seeded before that, the messages are refused as unroutable and retried (a warning
          // each on a fresh broker): wait for an orders instance to be ready first, not for ever.
          if (
            settings.infrastructure.mode === 'distributed' &&
            !(await firstReady('orders', settings.topology().orders, { withinMs: SEED_WAIT_MS }))
          ) {
            logger.info(
              `orders is not ready after ${SEED_WAIT_MS / 1000} s: seeding the catalog now (its inventory.updated messages wait in the outbox until orders subscribes)`,
            );
          }
          await seed();
          seeded = true;
        }
        return { name, url: inventory.url, seed, close: after(inventory, p) };
      }
      case 'orders': {
        const topology = settings.topology();
        const users = new Upstream('users', topology.users);
        const inventory = new Upstream('inventory', topology.inventory);
        const orders = await startOrdersService({
          ...listen,
          bus,
          store,
          outbox,
          lookups: serviceLookups(users, inventory),
          ...(settings.orderTimeoutMs === undefined ? {} : { sagaTimeoutMs: settings.orderTimeoutMs }),
          logger,
        });
        return {
          name,
          url: orders.url,
          close: async () => {
            await orders.close();
            await Promise.all([users.close(), inventory.close()]);
            await p.close();
          },
        };
      }
      case 'payments': {
        const payments = await startPaymentsService({
          ...listen,
          bus,
          store,
          outbox,
          providerUrl: settings.topology().paymentProvider,
          ...(settings.paymentGiveUpMs === undefined ? {} : { giveUpAfterMs: settings.paymentGiveUpMs }),
          logger,
        });
        return { name, url: payments.url, close: after(payments, p) };
      }
    }
  } catch (error) {
    await p.close();
    throw error;
  }
}

/** Closes the service, then its plumbing. */
function after(service: { close(): Promise<void> }, p: Plumbing): () => Promise<void> {
  return async () => {
    await service.close();
    await p.close();
  };
}
