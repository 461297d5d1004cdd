/**
 * What inventory knows of one order: which units it holds and where it stands. Reserve, release and
 * commit carry only the order id, so this is what tells them which products to touch, and what makes
 * each of them happen once per order: a re-sent reserve answers again without reserving again, a
 * release that overtakes its reserve leaves a mark so that the late reserve holds nothing.
 */
import type { Decider } from 'ferry';

export interface Line {
  readonly productId: string;
  readonly quantity: number;
}

export type OrderStockStatus = 'none' | 'reserved' | 'unavailable' | 'committed' | 'released' | 'returned';

export interface OrderStockState {
  readonly status: OrderStockStatus;
  readonly lines: readonly Line[];
  /** The product that was short, when `unavailable`. */
  readonly shortOf?: string;
}

export type OrderStockEvent =
  | { type: 'OrderStockReserved'; data: { orderId: string; lines: Line[] } }
  | { type: 'OrderStockUnavailable'; data: { orderId: string; productId: string } }
  | { type: 'OrderStockCommitted'; data: { orderId: string } }
  | { type: 'OrderStockReleased'; data: { orderId: string } }
  /** A committed order was cancelled: its units went back on sale. */
  | { type: 'OrderStockReturned'; data: { orderId: string } };

export type OrderStockCommand =
  | { type: 'RecordReserved'; orderId: string; lines: Line[] }
  | { type: 'RecordUnavailable'; orderId: string; productId: string }
  | { type: 'Commit'; orderId: string }
  | { type: 'Release'; orderId: string };

export const orderStockDecider: Decider<OrderStockCommand, OrderStockEvent, OrderStockState> = {
  initialState: () => ({ status: 'none', lines: [] }),

  evolve(state, event) {
    switch (event.type) {
      case 'OrderStockReserved':
        return { status: 'reserved', lines: event.data.lines };
      case 'OrderStockUnavailable':
        return { status: 'unavailable', lines: [], shortOf: event.data.productId };
      case 'OrderStockCommitted':
        return { ...state, status: 'committed' };
      case 'OrderStockReleased':
        return { ...state, status: 'released' };
      case 'OrderStockReturned':
        return { ...state, status: 'returned' };
    }
  },

  decide(command, state) {
    const { orderId } = command;
    switch (command.type) {
      case 'RecordReserved':
        return state.status === 'none'
          ? { type: 'OrderStockReserved', data: { orderId, lines: command.lines } }
          : [];
      case 'RecordUnavailable':
        return state.status === 'none'
          ? { type: 'OrderStockUnavailable', data: { orderId, productId: command.productId } }
          : [];
      case 'Commit':
        return state.status === 'reserved' ? { type: 'OrderStockCommitted', data: { orderId } } : [];
      case 'Release':
        // Nothing held yet ('none') still leaves the mark: a reserve arriving later must hold nothing.
        if (state.status === 'reserved' || state.status === 'none') {
          return { type: 'OrderStockReleased', data: { orderId } };
        }
        return state.status === 'committed' ? { type: 'OrderStockReturned', data: { orderId } } : [];
    }
  },
};

export const orderStockStream = (orderId: string): string => `inventory-order-${orderId}`;

/** One line per product, quantities of repeated products added up, in a stable order. */
export function mergeLines(items: readonly Line[]): Line[] {
  const byProduct = new Map<string, number>();
  for (const { productId, quantity } of items)
    byProduct.set(productId, (byProduct.get(productId) ?? 0) + quantity);
  return [...byProduct]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([productId, quantity]) => ({ productId, quantity }));
}
