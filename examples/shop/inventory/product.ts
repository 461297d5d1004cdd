/**
 * A product of the catalog, event-sourced: its stock on hand and the stock each open order holds.
 * Reservations are keyed by order id, so a reserve, release or commit that arrives twice for one
 * order decides nothing the second time.
 */
import type { Decider } from 'ferry';

export interface Reservation {
  readonly orderId: string;
  readonly quantity: number;
}

export interface ProductState {
  readonly exists: boolean;
  readonly name: string;
  readonly price: number;
  /** Units in the warehouse, reserved ones included. */
  readonly onHand: number;
  readonly reservations: readonly Reservation[];
}

export type ProductEvent =
  | { type: 'ProductAdded'; data: { productId: string; name: string; price: number; stock: number } }
  | { type: 'StockReserved'; data: Reservation }
  | { type: 'ReservationReleased'; data: Reservation }
  | { type: 'ReservationSold'; data: Reservation }
  | { type: 'SaleReturned'; data: Reservation };

export type ProductCommand =
  | { type: 'Add'; productId: string; name: string; price: number; stock: number }
  | { type: 'Reserve'; orderId: string; quantity: number }
  | { type: 'Release'; orderId: string }
  | { type: 'Commit'; orderId: string }
  /** Puts back what a confirmed order bought (the order was cancelled after its sale). */
  | { type: 'Return'; orderId: string; quantity: number };

/** The product has fewer units free than the order asks for. */
export class OutOfStockError extends Error {
  readonly code = 'OUT_OF_STOCK';
}
export class UnknownProductError extends Error {
  readonly code = 'UNKNOWN_PRODUCT';
}
export class ProductExistsError extends Error {
  readonly code = 'PRODUCT_EXISTS';
}

/** Units still free to order. */
export const available = (state: ProductState): number => state.onHand - reservedOf(state);
export const reservedOf = (state: ProductState): number =>
  state.reservations.reduce((sum, r) => sum + r.quantity, 0);
const held = (state: ProductState, orderId: string): Reservation | undefined =>
  state.reservations.find((r) => r.orderId === orderId);
const without = (state: ProductState, orderId: string): readonly Reservation[] =>
  state.reservations.filter((r) => r.orderId !== orderId);

export const productDecider: Decider<ProductCommand, ProductEvent, ProductState> = {
  initialState: () => ({ exists: false, name: '', price: 0, onHand: 0, reservations: [] }),

  evolve(state, event) {
    switch (event.type) {
      case 'ProductAdded': {
        const { name, price, stock } = event.data;
        return { exists: true, name, price, onHand: stock, reservations: [] };
      }
      case 'StockReserved':
        return { ...state, reservations: [...state.reservations, event.data] };
      case 'ReservationReleased':
        return { ...state, reservations: without(state, event.data.orderId) };
      case 'ReservationSold':
        return {
          ...state,
          onHand: state.onHand - event.data.quantity,
          reservations: without(state, event.data.orderId),
        };
      case 'SaleReturned':
        return { ...state, onHand: state.onHand + event.data.quantity };
    }
  },

  decide(command, state) {
    if (command.type === 'Add') {
      if (state.exists) throw new ProductExistsError(`product ${command.productId} exists`);
      const { productId, name, price, stock } = command;
      return { type: 'ProductAdded', data: { productId, name, price, stock } };
    }
    if (!state.exists) throw new UnknownProductError('no such product');
    const reservation = held(state, command.orderId);
    switch (command.type) {
      case 'Reserve':
        if (reservation !== undefined) return []; // this order already holds its units
        if (available(state) < command.quantity) {
          throw new OutOfStockError(`${available(state)} free, ${command.quantity} asked`);
        }
        return { type: 'StockReserved', data: { orderId: command.orderId, quantity: command.quantity } };
      case 'Release':
        return reservation === undefined ? [] : { type: 'ReservationReleased', data: reservation };
      case 'Commit':
        return reservation === undefined ? [] : { type: 'ReservationSold', data: reservation };
      case 'Return':
        return { type: 'SaleReturned', data: { orderId: command.orderId, quantity: command.quantity } };
    }
  },
};

/** The product as the API and `inventory.updated` show it: `stock` is what can still be ordered. */
export function productView(id: string, state: ProductState) {
  return { id, name: state.name, price: state.price, stock: available(state), reserved: reservedOf(state) };
}

export const productStream = (productId: string): string => `product-${productId}`;

/** Whether `id` can name a product at all: the store refuses stream ids with control characters. */
export const isProductId = (id: string): boolean =>
  id.length > 0 && id.length <= 200 && !/\p{Cc}|\p{Cs}/u.test(id); // Cs: a lone surrogate
