/**
 * The saga's commands to inventory: reserve, release and commit an order's stock. Each runs in a unit
 * of work of the transactional inbox, so the inbox mark, every product's events, the order's record
 * and the replies commit together or not at all: an order holds all its units or none, even when it
 * spans several products, and a redelivered message has no effect.
 *
 * Every product append expects the version its decision was made on, so two orders racing for the
 * last unit cannot both get it: the loser's unit of work runs again and sees the stock as it is.
 */
import { decideEvents, fold, type UnitOfWork } from 'ferry';
import type { ShopContracts } from '../contracts.js';
import {
  type Line,
  mergeLines,
  type OrderStockCommand,
  type OrderStockEvent,
  type OrderStockState,
  orderStockDecider,
  orderStockStream,
} from './order-stock.js';
import {
  type ProductCommand,
  type ProductEvent,
  type ProductState,
  productDecider,
  productStream,
  productView,
} from './product.js';
import { ProductCache } from './product-cache.js';

type Work = UnitOfWork<ShopContracts>;

const expected = (version: number) => (version === -1 ? ('no_stream' as const) : version);

/**
 * Reads a stream inside the unit of work (its transaction sees what earlier units of the same commit
 * wrote, so that units sharing a commit do not decide on stale versions) and folds it.
 */
async function loadIn<S, E extends { type: string; data: unknown }>(
  work: Work,
  decider: { initialState(): S; evolve(state: S, event: E): S },
  streamId: string,
): Promise<{ state: S; version: number }> {
  const events = await work.readStream(streamId);
  const state = events.reduce(
    (s, e) => decider.evolve(s, { type: e.type, data: e.data } as E),
    decider.initialState(),
  );
  return { state, version: events.length - 1 };
}

export function stockHandlers() {
  const products = new ProductCache();

  /** Decides `command` for a product, appends it in `work` and announces the product's new stock. */
  async function changeProduct(work: Work, productId: string, command: ProductCommand): Promise<void> {
    const { state, version } = await products.load(work, productId);
    await appendProduct(work, productId, version, state, decideEvents(productDecider, command, state));
  }

  async function appendProduct(
    work: Work,
    productId: string,
    version: number,
    state: ProductState,
    events: readonly ProductEvent[],
  ): Promise<void> {
    if (events.length === 0) return;
    await work.append(productStream(productId), [...events], { expectedVersion: expected(version) });
    const after = productView(productId, fold(productDecider, events, state));
    // Without a key: a hot product's updates must not queue behind each other in the outbox (one
    // per relay round); `version` lets a consumer drop an update older than one it has.
    await work.publish('inventory.updated', {
      productId,
      price: after.price,
      stock: after.stock,
      reserved: after.reserved,
      version: version + events.length,
    });
  }

  /** Appends what the order's record decides, expecting the version `loaded` was read at. */
  async function record(
    work: Work,
    orderId: string,
    loaded: { readonly state: OrderStockState; readonly version: number },
    command: OrderStockCommand,
  ): Promise<readonly OrderStockEvent[]> {
    const events = decideEvents(orderStockDecider, command, loaded.state);
    if (events.length > 0) {
      await work.append(orderStockStream(orderId), [...events], {
        expectedVersion: expected(loaded.version),
      });
    }
    return events;
  }

  return {
    /** Reserves every line of the order, or none and replies `inventory.unavailable` naming a short product. */
    async reserve(work: Work, orderId: string, items: readonly Line[]): Promise<void> {
      const lines = mergeLines(items);
      await work.lock(orderStockStream(orderId));
      // Read before the products are locked: a hot product's lock is held for less, and a reserve
      // sent again does not wait for it at all.
      const order = await loadIn(work, orderStockDecider, orderStockStream(orderId));
      if (order.state.status !== 'none') return replyAgain(work, orderId, order.state);
      await lockProducts(work, lines);
      // Decide for every product before writing anything: one short product and nothing is reserved.
      const plans: { line: Line; state: ProductState; version: number; events: readonly ProductEvent[] }[] =
        [];
      for (const line of lines) {
        const { state, version } = await products.load(work, line.productId);
        let events: readonly ProductEvent[];
        try {
          events = decideEvents(productDecider, { type: 'Reserve', orderId, quantity: line.quantity }, state);
        } catch {
          // Out of stock, or no such product: the order cannot have it either way.
          await record(work, orderId, order, {
            type: 'RecordUnavailable',
            orderId,
            productId: line.productId,
          });
          await work.publish(
            'inventory.unavailable',
            { orderId, productId: line.productId },
            { key: orderId },
          );
          return;
        }
        plans.push({ line, state, version, events });
      }
      for (const plan of plans)
        await appendProduct(work, plan.line.productId, plan.version, plan.state, plan.events);
      await record(work, orderId, order, { type: 'RecordReserved', orderId, lines });
      await work.publish('inventory.reserved', { orderId }, { key: orderId });
    },

    /** Gives back what the order holds (or, once sold, what it bought); harmless when it holds nothing. */
    async release(work: Work, orderId: string): Promise<void> {
      const order = await lockAndLoad(work, orderId);
      const recorded = await record(work, orderId, order, { type: 'Release', orderId });
      if (recorded.length === 0 || order.state.status === 'none') return; // nothing held
      const sold = order.state.status === 'committed';
      for (const line of order.state.lines) {
        await changeProduct(
          work,
          line.productId,
          sold ? { type: 'Return', orderId, quantity: line.quantity } : { type: 'Release', orderId },
        );
      }
    },

    /** Turns the order's reservation into a sale. */
    async commit(work: Work, orderId: string): Promise<void> {
      const order = await lockAndLoad(work, orderId);
      const recorded = await record(work, orderId, order, { type: 'Commit', orderId });
      if (recorded.length === 0) return; // not reserved: committed already, released, or unknown
      for (const line of order.state.lines)
        await changeProduct(work, line.productId, { type: 'Commit', orderId });
    },
  };
}

/**
 * Takes turns with the other units of work on an order's products, in one call (on PostgreSQL with
 * several commands at once, units on a hot product would otherwise lose races and run again). Every
 * command locks the order's record first, then its products: no two units can each hold what the
 * other waits for.
 */
async function lockProducts(work: Work, lines: readonly Line[]): Promise<void> {
  if (lines.length > 0) await work.lock(...lines.map((line) => productStream(line.productId)));
}

/** The order's record, read once this unit holds it and the products it names. */
async function lockAndLoad(work: Work, orderId: string) {
  await work.lock(orderStockStream(orderId));
  const order = await loadIn(work, orderStockDecider, orderStockStream(orderId));
  await lockProducts(work, order.state.status === 'none' ? [] : order.state.lines);
  return order;
}

/** A reserve sent again for an order already decided gets the same answer, and changes nothing. */
async function replyAgain(work: Work, orderId: string, state: OrderStockState): Promise<void> {
  if (state.status === 'reserved' || state.status === 'committed') {
    await work.publish('inventory.reserved', { orderId }, { key: orderId });
  } else if (state.status === 'unavailable' && state.shortOf !== undefined) {
    await work.publish('inventory.unavailable', { orderId, productId: state.shortOf }, { key: orderId });
  }
  // Released before the reserve came: the order is cancelled already and wants no answer.
}
