/**
 * The Order aggregate, event-sourced: a decider (`decide`, `evolve`, `initialState`) that knows
 * nothing of storage. The HTTP routes and the message handlers run it through `CommandHandler`.
 */
import type { Decider } from 'ferry';
import type { CancelReason } from '../contracts.js';

export interface PricedItem {
  readonly productId: string;
  readonly quantity: number;
  /** Unit price in cents, as the catalog had it when the order was placed. */
  readonly price: number;
}

export type OrderStatus = 'none' | 'pending' | 'confirmed' | 'cancelled';

export interface OrderState {
  readonly status: OrderStatus;
  readonly userId: string;
  readonly items: readonly PricedItem[];
  readonly total: number;
  readonly paymentMethod: string;
  readonly cancellationRequested: boolean;
  readonly reason?: CancelReason;
}

export type OrderEvent =
  | {
      readonly type: 'OrderPlaced';
      readonly data: {
        readonly userId: string;
        readonly items: readonly PricedItem[];
        readonly total: number;
        readonly paymentMethod: string;
      };
    }
  | { readonly type: 'OrderConfirmed'; readonly data: Record<string, never> }
  | { readonly type: 'CancellationRequested'; readonly data: Record<string, never> }
  | { readonly type: 'OrderCancelled'; readonly data: { readonly reason: CancelReason } };

export type OrderCommand =
  | {
      readonly type: 'Place';
      readonly userId: string;
      readonly items: readonly PricedItem[];
      readonly paymentMethod: string;
    }
  | { readonly type: 'Confirm' }
  | { readonly type: 'RequestCancellation' }
  | { readonly type: 'Cancel'; readonly reason: CancelReason };

/** The command names an order that does not exist (or, for `Place`, one that does). */
export class OrderNotFoundError extends Error {
  readonly code = 'ORDER_NOT_FOUND';
}
export class OrderExistsError extends Error {
  readonly code = 'ORDER_EXISTS';
}

export const orderDecider: Decider<OrderCommand, OrderEvent, OrderState> = {
  initialState: () => ({
    status: 'none',
    userId: '',
    items: [],
    total: 0,
    paymentMethod: '',
    cancellationRequested: false,
  }),

  evolve(state, event) {
    switch (event.type) {
      case 'OrderPlaced':
        return { ...state, ...event.data, status: 'pending' };
      case 'OrderConfirmed':
        return { ...state, status: 'confirmed' };
      case 'CancellationRequested':
        return { ...state, cancellationRequested: true };
      case 'OrderCancelled':
        return { ...state, status: 'cancelled', reason: event.data.reason };
    }
  },

  decide(command, state) {
    if (command.type === 'Place') {
      if (state.status !== 'none') throw new OrderExistsError('the order exists already');
      const total = command.items.reduce((sum, item) => sum + item.price * item.quantity, 0);
      const { userId, items, paymentMethod } = command;
      return { type: 'OrderPlaced', data: { userId, items, total, paymentMethod } };
    }
    if (state.status === 'none') throw new OrderNotFoundError('no such order');
    switch (command.type) {
      // Confirmation and cancellation come from the saga, at least once: a repeat changes nothing.
      case 'Confirm':
        return state.status === 'pending' ? { type: 'OrderConfirmed', data: {} } : [];
      case 'Cancel':
        return state.status === 'cancelled'
          ? []
          : { type: 'OrderCancelled', data: { reason: command.reason } };
      // The customer may ask once; asking again, or after the end, is harmless.
      case 'RequestCancellation':
        return state.status === 'cancelled' || state.cancellationRequested
          ? []
          : { type: 'CancellationRequested', data: {} };
    }
  },
};
