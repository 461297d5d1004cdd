/**
 * The inventory service: the catalog over HTTP, and the stock the order saga reserves, releases and
 * commits over the bus. It keeps everything as events in `store` (memory, SQLite or PostgreSQL alike)
 * and publishes through `outbox`, whose transactions also mark each command handled.
 */

import Fastify from 'fastify';
import type { Bus, EventStore, HealthCheck, Logger, Outbox } from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import type { ShopContracts } from '../contracts.js';
import { listen } from '../listen.js';
import {
  type Catalog,
  catalogRoutes,
  type NewProduct,
  newProduct,
  catalog as openCatalog,
  type ProductView,
} from './routes.js';
import { stockHandlers } from './stock-handlers.js';

export interface InventoryServiceOptions {
  readonly bus: Bus<ShopContracts>;
  readonly store: EventStore;
  /** The outbox of `store`: replies and `inventory.updated` go through it, in the command's transaction. */
  readonly outbox: Outbox<ShopContracts>;
  /** Token that `POST /products` requires (`Authorization: Bearer …`). Unset: every such call gets 401. */
  readonly adminToken: string | undefined;
  /** @default 0 (a free port) */
  readonly port?: number;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /**
   * Commands of each kind (reserve, release, commit) handled at once. Orders compete for the same
   * products: each unit of work locks the order's record, then its products (`work.lock`), so on
   * PostgreSQL units on one product take turns instead of losing races, and those on other products
   * run beside them. (On SQLite and memory, units of work run one at a time per process whatever
   * this says; several at once share a commit.)
   * @default 4
   */
  readonly concurrency?: number;
  /** For the HTTP server's problems (5xx). @default stderr */
  readonly logger?: Logger;
  /** More checks of `GET /health/ready`, beside the outbox's (the runtime's: the catalog seeded). */
  readonly readiness?: Readonly<Record<string, HealthCheck>>;
}

export interface InventoryService {
  readonly url: string;
  /** Adds these products (a product with an `id` already stored is left as it is). */
  seed(products: readonly NewProduct[]): Promise<ProductView[]>;
  readonly catalog: Catalog;
  /** Stops the HTTP server and the subscriptions; the bus, store and outbox are the caller's to close. */
  close(): Promise<void>;
}

/** Stock commands of each kind handled at once by default (see `InventoryServiceOptions.concurrency`). */
export const DEFAULT_STOCK_CONCURRENCY = 4;

/** The consumer group of inventory's subscriptions, whatever service name the bus has. */
export const INVENTORY_GROUP = 'inventory';

export async function startInventoryService(options: InventoryServiceOptions): Promise<InventoryService> {
  const { bus, store, outbox } = options;
  const stock = stockHandlers();
  const subscribeOptions = {
    unitOfWork: outbox,
    group: INVENTORY_GROUP,
    concurrency: options.concurrency ?? DEFAULT_STOCK_CONCURRENCY,
  };
  const subscriptions = [
    await bus.subscribe(
      'inventory.reserve',
      (m, { work }) => stock.reserve(work, m.data.orderId, m.data.items),
      subscribeOptions,
    ),
    await bus.subscribe(
      'inventory.release',
      (m, { work }) => stock.release(work, m.data.orderId),
      subscribeOptions,
    ),
    await bus.subscribe(
      'inventory.commit',
      (m, { work }) => stock.commit(work, m.data.orderId),
      subscribeOptions,
    ),
  ];

  const catalog = openCatalog(store, outbox);
  const ferry = options.logger === undefined ? {} : { logger: options.logger };
  const app = Fastify({ ...ferryFastifyOptions(ferry), bodyLimit: 64 * 1024 });
  ferryFastify(app, {
    ...ferry,
    health: {
      checks: { outbox: outbox.healthCheck(), bus: options.bus.healthCheck(), ...options.readiness },
    },
  });
  catalogRoutes(app, catalog, options.adminToken);
  let url: string;
  try {
    url = await listen(app, options);
  } catch (error) {
    await Promise.all(subscriptions.map((s) => s.close()));
    throw error;
  }

  return {
    url,
    catalog,
    async seed(products) {
      const added: ProductView[] = [];
      for (const product of products) {
        const input = newProduct.parse({ name: product.name, price: product.price, stock: product.stock });
        added.push(
          (await catalog.add(product.id === undefined ? input : { ...input, id: product.id })).product,
        );
      }
      return added;
    },
    async close() {
      await Promise.all(subscriptions.map((s) => s.close()));
      await app.close();
    },
  };
}
