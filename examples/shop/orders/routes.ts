/**
 * The HTTP side of orders: place an order (stored with its `order.created` in one commit), read it
 * with its history, and ask to cancel it. Errors are problems (RFC 9457) through Ferry's middleware.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import {
  type CommandHandler,
  decideEvents,
  type EventStore,
  fold,
  HttpProblemError,
  isConcurrencyError,
  type Outbox,
  validateRequest,
} from 'ferry';
import { z } from 'zod';
import { orderItem, type ShopContracts } from '../contracts.js';
import { keyedId } from '../keyed-id.js';
import { printableText } from '../text.js';
import {
  type OrderCommand,
  type OrderEvent,
  type OrderState,
  orderDecider,
  type PricedItem,
} from './order.js';
import type { SagaBacklog } from './saga-backlog.js';

/**
 * How orders checks what a request names. The wiring passes calls to the users and inventory
 * services (ServiceClient, answering `undefined` on 404); tests pass functions.
 */
export interface OrderLookups {
  findUser(id: string): Promise<{ readonly id: string } | undefined>;
  findProduct(id: string): Promise<{ readonly id: string; readonly price: number } | undefined>;
  /** Told of each `user.created` (a local read model may keep it, sparing a call later). */
  userCreated?(id: string): void;
  /** Told of each `inventory.updated`. */
  productUpdated?(id: string, price: number): void;
}

export interface OrderRoutesDeps {
  readonly store: EventStore;
  readonly outbox: Outbox<ShopContracts>;
  readonly commands: CommandHandler<OrderCommand, OrderEvent, OrderState>;
  readonly lookups: OrderLookups;
  /**
   * Whether the saga is behind (new orders are refused, 503, while it is), and how to ask whether an
   * order is still pending (its saga instance not yet past charging).
   */
  readonly backlog?: {
    readonly waits: SagaBacklog;
    stillWaiting(orderId: string): Promise<boolean>;
  };
}

// Strict: a member the shop does not know is refused, not ignored; a misspelled `paymentMethod`
// would otherwise charge the default card, and a `price` or `total` look as if they had been taken.
const PlaceOrder = z.strictObject({
  userId: printableText(200),
  items: z
    .array(z.strictObject(orderItem.shape))
    .min(1)
    .max(100)
    .refine((items) => new Set(items.map((i) => i.productId)).size === items.length, {
      message: 'each product may appear once',
    }),
  paymentMethod: printableText(100).optional(),
});

/** Order ids are UUIDs: anything else is unknown, and never reaches the store. */
const ORDER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const orderStream = (id: string) => `order-${id}`;

export function orderRoutes(app: FastifyInstance, deps: OrderRoutesDeps): void {
  const { store, outbox, commands } = deps;

  // The Idempotency-Key names the order (the gateway always sends one): a request run again after
  // its answer was lost (the process died between the order's commit and the answer's) finds the
  // order it placed instead of placing a second one. One its key placed is answered from the order
  // alone, the user and products not looked up again (their services may be down just then). Else
  // the body, the user and the products are checked: a request refused (400, or 422 for an unknown
  // user or product) stores nothing, so it does not spend its key, and the same key with the body
  // corrected places the order.
  const priced = new WeakMap<object, { readonly items: PricedItem[]; readonly keyed: string | undefined }>();
  const placedBy = new WeakMap<object, { readonly id: string; readonly state: OrderState }>();
  app.post<{ Body: z.infer<typeof PlaceOrder> }>(
    '/orders',
    {
      preValidation: async (request) => {
        const body = await validateRequest(PlaceOrder, request.body, 'body');
        request.body = body;
        const keyed = keyedId(request, 'shop-order');
        if (keyed !== undefined) {
          const { state, version } = await commands.load(orderStream(keyed));
          if (version >= 0) {
            placedBy.set(request, { id: keyed, state });
            return;
          }
        }
        priced.set(request, { items: await priceItems(deps.lookups, body.userId, body.items), keyed });
      },
    },
    async (request, reply) => {
      const body = request.body;
      const paymentMethod = body.paymentMethod ?? 'tok_visa';
      const asked = { userId: body.userId, items: body.items, paymentMethod };
      const before = placedBy.get(request);
      if (before !== undefined) return placedBefore(reply, before.id, asked, before.state);
      const { items, keyed } = priced.get(request) as { items: PricedItem[]; keyed: string | undefined };
      const id = keyed ?? randomUUID();
      const command = { type: 'Place', userId: body.userId, items, paymentMethod } as const;
      const events = decideEvents(orderDecider, command, orderDecider.initialState());
      const state = fold(orderDecider, events);
      // After the checks (an unknown user or product is the caller's to mend, 422, busy or not), and
      // counted as pending from the moment it is let through, so that a burst let through at once
      // cannot pass the cap on orders pending.
      const { backlog } = deps;
      const behindFor = await backlog?.waits.admit((orderId) => backlog.stillWaiting(orderId));
      if (behindFor !== undefined) throw behind(behindFor);
      const placedAt = backlog?.waits.now();
      try {
        // The order and the message that starts its saga commit together, or neither does.
        await outbox.append(orderStream(id), events, {
          expectedVersion: 'no_stream',
          messages: [
            {
              type: 'order.created',
              data: { orderId: id, userId: body.userId, items, total: state.total, paymentMethod },
              options: { key: id },
            },
          ],
        });
      } catch (error) {
        backlog?.waits.dropped();
        if (keyed === undefined || !isConcurrencyError(error)) throw error;
        return placedBefore(reply, id, asked);
      }
      if (placedAt !== undefined) backlog?.waits.placed(id, placedAt);
      return reply
        .code(201)
        .header('location', `/orders/${id}`)
        .send({ id, userId: body.userId, items, total: state.total, paymentMethod, status: 'pending' });
    },
  );

  /**
   * The first answer for an order its key placed before, or 422 if the key placed another: another
   * user, payment method, or items (in any order: the same items listed otherwise are the same order).
   */
  async function placedBefore(
    reply: FastifyReply,
    id: string,
    asked: {
      readonly userId: string;
      readonly items: readonly { readonly productId: string; readonly quantity: number }[];
      readonly paymentMethod: string;
    },
    loaded?: OrderState,
  ) {
    const placed = loaded ?? (await commands.load(orderStream(id))).state;
    const listed = (items: readonly { readonly productId: string; readonly quantity: number }[]) =>
      JSON.stringify(items.map((item) => [item.productId, item.quantity]).sort());
    const same =
      placed.userId === asked.userId &&
      placed.paymentMethod === asked.paymentMethod &&
      listed(placed.items) === listed(asked.items);
    if (!same) {
      throw new HttpProblemError(422, 'Idempotency key reused', {
        detail: 'This Idempotency-Key placed another order.',
        extensions: { code: 'IDEMPOTENCY_KEY_MISMATCH' },
      });
    }
    const { userId, total, paymentMethod } = placed;
    // Members in the first answer's order: PostgreSQL (jsonb) keeps them in an order of its own.
    const items = placed.items.map(({ productId, quantity, price }) => ({ productId, quantity, price }));
    return reply
      .code(201)
      .header('location', `/orders/${id}`)
      .header('idempotent-replayed', 'true')
      .send({ id, userId, items, total, paymentMethod, status: 'pending' });
  }

  app.get<{ Params: { id: string } }>('/orders/:id', async (request) => {
    const view = await readOrder(store, request.params.id);
    if (view === undefined) throw notFound(request.params.id);
    return view;
  });

  // Cancelling takes no body: whatever comes with it (nothing under a JSON content type, malformed
  // JSON, another type) is read, within the body limit, and ignored.
  app.register(async (noBody) => {
    noBody.removeAllContentTypeParsers();
    noBody.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, _body, done) => done(null, undefined));
    noBody.post<{ Params: { id: string } }>('/orders/:id/cancel', async (request, reply) => {
      const { id } = request.params;
      if (!ORDER_ID.test(id) || (await commands.load(orderStream(id))).version < 0) throw notFound(id);
      // The request is recorded once, and the saga told in the same commit; asking again changes nothing.
      await outbox.unitOfWork(async (work) => {
        const { events } = await commands.handleIn(work, orderStream(id), { type: 'RequestCancellation' });
        if (events.length > 0) {
          await work.publish('order.cancellation-requested', { orderId: id }, { key: id });
        }
      });
      return reply.code(202).send(await readOrder(store, id));
    });
  });
}

/** Checks the user and the products, and prices the items from the catalog. */
async function priceItems(
  lookups: OrderLookups,
  userId: string,
  items: readonly { productId: string; quantity: number }[],
): Promise<PricedItem[]> {
  const [user, products] = await Promise.all([
    lookups.findUser(userId),
    Promise.all(items.map((item) => lookups.findProduct(item.productId))),
  ]);
  if (user === undefined) {
    throw new HttpProblemError(422, 'Unknown user', { detail: `No user ${userId}.`, extensions: { userId } });
  }
  const unknown = items.filter((_, i) => !hasPrice(products[i])).map((item) => item.productId);
  if (unknown.length > 0) {
    throw new HttpProblemError(422, 'Unknown product', {
      detail: `No product with a price: ${unknown.join(', ')}.`,
      extensions: { productIds: unknown },
    });
  }
  return items.map((item, i) => ({ ...item, price: (products[i] as { price: number }).price }));
}

function hasPrice(product: { readonly price: unknown } | undefined): boolean {
  return product !== undefined && Number.isSafeInteger(product.price) && (product.price as number) >= 0;
}

/** The order as the API shows it: its state, and its history from the stored events. */
async function readOrder(store: EventStore, id: string) {
  if (!ORDER_ID.test(id)) return undefined;
  const recorded = await store.readStream(orderStream(id));
  if (recorded.length === 0) return undefined;
  const events = recorded.map((e) => ({ type: e.type, data: e.data }) as OrderEvent);
  const state = fold(orderDecider, events);
  return {
    id,
    userId: state.userId,
    // Members in one order whatever the store: PostgreSQL's jsonb gives them back sorted its own way.
    items: state.items.map(({ productId, quantity, price }) => ({ productId, quantity, price })),
    total: state.total,
    paymentMethod: state.paymentMethod,
    status: state.status,
    ...(state.reason === undefined ? {} : { reason: state.reason }),
    ...(state.cancellationRequested && state.status !== 'cancelled' ? { cancellationRequested: true } : {}),
    history: recorded.map((e) => ({
      event: HISTORY_NAMES[e.type as OrderEvent['type']],
      at: e.time,
      ...(e.type === 'OrderCancelled' ? { reason: (e.data as { reason: string }).reason } : {}),
    })),
  };
}

const HISTORY_NAMES: Record<OrderEvent['type'], string> = {
  OrderPlaced: 'placed',
  OrderConfirmed: 'confirmed',
  CancellationRequested: 'cancellation_requested',
  OrderCancelled: 'cancelled',
};

/**
 * The saga is behind: an order taken now would wait behind those taken already, and might reach
 * its deadline first. Nothing is stored, the key is not spent: send it again later.
 */
const behind = (forMs: number) =>
  new HttpProblemError(503, 'Orders are backed up', {
    detail:
      'The shop is taking no new orders just now: those placed already are waiting too long to be confirmed. Nothing was stored; send the order again (with the same Idempotency-Key) after Retry-After seconds.',
    headers: { 'retry-after': String(Math.max(1, Math.ceil(forMs / 1000))) },
    extensions: { code: 'ORDERS_BACKED_UP' },
  });

const notFound = (id: string) => new HttpProblemError(404, 'Unknown order', { detail: `No order ${id}.` });
