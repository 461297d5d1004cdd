/**
 * The orders service as a module: its routes, its saga, and the handlers that bring the saga's
 * outcome back into the Order aggregate. The caller owns the bus, store and outbox (and closes them);
 * `main` and the gateway wire it from the environment.
 */

import Fastify from 'fastify';
import { type Bus, CommandHandler, type EventStore, type Logger, type Outbox, startSaga } from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import type { ShopContracts } from '../contracts.js';
import { listen } from '../listen.js';
import { orderDecider } from './order.js';
import { createOrderSaga, DEFAULT_ORDER_SAGA_OPTIONS } from './order-saga.js';
import { type OrderLookups, orderRoutes, orderStream } from './routes.js';
import { SagaBacklog } from './saga-backlog.js';

export interface OrdersServiceOptions {
  readonly bus: Bus<ShopContracts>;
  readonly store: EventStore;
  /** The outbox on `store` and `bus`: orders, their messages and the saga's state commit through it. */
  readonly outbox: Outbox<ShopContracts>;
  readonly lookups: OrderLookups;
  /** @default 0 (a free port) */
  readonly port?: number;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** Time until a still-pending order is cancelled with reason `timeout`. @default 30_000 */
  readonly sagaTimeoutMs?: number;
  /**
   * New orders are refused (503, `Retry-After`) while one placed now would wait longer than this to
   * be confirmed or cancelled: the saga is behind (see `SagaBacklog`). @default half `sagaTimeoutMs`
   */
  readonly backlogLimitMs?: number;
  /** Orders a process takes at once before any of them ends (see `SagaBacklog`'s `minPending`). @default 128 */
  readonly backlogMinPending?: number;
  /** @default stderr */
  readonly logger?: Logger;
}

export interface OrdersService {
  /** The base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  /** Stops the HTTP server, the saga and the handlers (the bus, store and outbox stay open). */
  close(): Promise<void>;
}

export async function startOrdersService(options: OrdersServiceOptions): Promise<OrdersService> {
  const { bus, store, outbox } = options;
  const commands = new CommandHandler(store, orderDecider);
  const timeoutMs = options.sagaTimeoutMs ?? DEFAULT_ORDER_SAGA_OPTIONS.timeoutMs;
  const backlog = new SagaBacklog({
    limitMs: options.backlogLimitMs ?? timeoutMs / 2,
    ...(options.backlogMinPending === undefined ? {} : { minPending: options.backlogMinPending }),
  });
  const saga = await startSaga(
    createOrderSaga({ timeoutMs, orderEnded: (placedAt) => backlog.ended(placedAt) }),
    { outbox, ...(options.logger === undefined ? {} : { logger: options.logger }) },
  );
  // The saga's outcome, applied to the aggregate; each message once (transactional inbox).
  const outcomes = [
    await bus.subscribe(
      'order.confirmed',
      async (m, { work }) => {
        await commands.handleIn(work, orderStream(m.data.orderId), { type: 'Confirm' });
      },
      { group: 'orders', unitOfWork: outbox },
    ),
    await bus.subscribe(
      'order.cancelled',
      async (m, { work }) => {
        await commands.handleIn(work, orderStream(m.data.orderId), { type: 'Cancel', reason: m.data.reason });
      },
      { group: 'orders', unitOfWork: outbox },
    ),
  ];

  // The facts other services publish, as the tutorial's OrderService listens to `user.created`:
  // they keep the lookups' read model warm. Losing one costs a synchronous call later, no more.
  const { lookups } = options;
  const facts = [
    await bus.subscribe(
      'user.created',
      (m) => {
        lookups.userCreated?.(m.data.userId);
      },
      { group: 'orders' },
    ),
    // Refunds end the compensations the saga sent and no longer waits for: logged for the operator.
    await bus.subscribe(
      'payment.refunded',
      (m) => {
        options.logger?.info(
          `order ${m.data.orderId}: refunded${m.data.chargeId === undefined ? ' (nothing was charged)' : ` ${m.data.chargeId}`}`,
        );
      },
      { group: 'orders' },
    ),
    await bus.subscribe(
      'inventory.updated',
      (m) => {
        lookups.productUpdated?.(m.data.productId, m.data.price);
      },
      { group: 'orders' },
    ),
  ];

  // No idempotency middleware: an order's Idempotency-Key names the order (see routes.ts), so a
  // request sent again finds the order its key placed, whatever became of the first one's answer.
  const ferry = options.logger === undefined ? {} : { logger: options.logger };
  const app = Fastify({ ...ferryFastifyOptions(ferry), bodyLimit: 1_048_576 });
  ferryFastify(app, {
    ...ferry,
    health: { checks: { outbox: outbox.healthCheck(), bus: options.bus.healthCheck() } },
  });
  // An order is pending until its saga instance (made by `order.created`) is past charging.
  const stillWaiting = async (orderId: string) => {
    const instance = await saga.get(orderId);
    return instance === undefined || instance.status === 'reserving' || instance.status === 'charging';
  };
  orderRoutes(app, { store, outbox, commands, lookups, backlog: { waits: backlog, stillWaiting } });
  const url = await listen(app, options);

  return {
    url,
    async close() {
      await app.close();
      await Promise.all([saga.close(), ...[...outcomes, ...facts].map((s) => s.close())]);
    },
  };
}
