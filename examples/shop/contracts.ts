/**
 * The messages of the shop: events keep the tutorial's names (`user.created`, `order.created`,
 * `payment.processed`, `inventory.updated`), plus the commands and replies the order saga needs.
 * Every service imports its schemas from here, so that producer and consumer agree on the data.
 */
import { z } from 'zod';
import { printableText } from './text.js';

/** An id the stores can hold in a stream id: no control characters, no lone surrogates. */
const id = printableText(200);
const money = z.number().int().nonnegative(); // cents
export const orderItem = z.object({ productId: id, quantity: z.number().int().positive().max(1000) });
export const pricedItem = orderItem.extend({ price: money });

/** Why an order was cancelled. */
export const cancelReason = z.enum([
  'out_of_stock',
  'payment_declined',
  'payment_unavailable',
  'cancelled_by_customer',
  'timeout',
]);
export type CancelReason = z.infer<typeof cancelReason>;

export const shopContracts = {
  // users
  'user.created': z.object({ userId: id, name: z.string(), email: z.string(), createdAt: z.string() }),

  // orders
  'order.created': z.object({
    orderId: id,
    userId: id,
    items: z.array(pricedItem).min(1),
    total: money,
    paymentMethod: z.string(),
  }),
  'order.cancellation-requested': z.object({ orderId: id }),
  'order.confirmed': z.object({ orderId: id }),
  'order.cancelled': z.object({ orderId: id, reason: cancelReason }),

  // inventory: commands from the saga, and replies
  'inventory.reserve': z.object({ orderId: id, items: z.array(orderItem).min(1) }),
  'inventory.reserved': z.object({ orderId: id }),
  'inventory.unavailable': z.object({ orderId: id, productId: id }),
  /** Gives the order's reserved stock back (compensation); harmless when nothing is reserved. */
  'inventory.release': z.object({ orderId: id }),
  /** Turns the order's reservation into a sale (the order is confirmed). */
  'inventory.commit': z.object({ orderId: id }),
  /** A product's stock changed (or it was added): its price, what can still be ordered, the version of its stream. */
  'inventory.updated': z.object({
    productId: id,
    price: money,
    stock: z.number().int(),
    reserved: z.number().int(),
    version: z.number().int().nonnegative(),
  }),

  // payments: commands from the saga, and replies
  'payment.charge': z.object({ orderId: id, amount: money, paymentMethod: z.string() }),
  'payment.processed': z.object({ orderId: id, chargeId: z.string(), amount: money }),
  'payment.declined': z.object({
    orderId: id,
    reason: z.enum(['payment_declined', 'payment_unavailable']),
  }),
  /** Refunds the order's charge (compensation, or a customer's cancel); harmless when there is none. */
  'payment.refund': z.object({ orderId: id }),
  'payment.refunded': z.object({ orderId: id, chargeId: z.string().optional() }),
};

export type ShopContracts = typeof shopContracts;
