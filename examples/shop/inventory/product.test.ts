import { deciderSpec } from 'ferry/testing';
import { describe, it } from 'vitest';
import { type ProductEvent, productDecider } from './product.js';

const added: ProductEvent = {
  type: 'ProductAdded',
  data: { productId: 'p1', name: 'Tea', price: 450, stock: 2 },
};
const reserved = (orderId: string, quantity = 1): ProductEvent => ({
  type: 'StockReserved',
  data: { orderId, quantity },
});

describe('product decider', () => {
  it('adds a product once', () => {
    deciderSpec(productDecider)
      .given([])
      .when({ type: 'Add', productId: 'p1', name: 'Tea', price: 450, stock: 2 })
      .then([added]);
    deciderSpec(productDecider)
      .given([added])
      .when({ type: 'Add', productId: 'p1', name: 'Tea', price: 450, stock: 2 })
      .thenThrows(/exists/);
  });

  it('reserves what is free, keyed by order', () => {
    deciderSpec(productDecider)
      .given([added])
      .when({ type: 'Reserve', orderId: 'o1', quantity: 2 })
      .then([reserved('o1', 2)]);
    deciderSpec(productDecider)
      .given([added, reserved('o1')])
      .when({ type: 'Reserve', orderId: 'o2', quantity: 1 })
      .thenState({
        exists: true,
        name: 'Tea',
        price: 450,
        onHand: 2,
        reservations: [
          { orderId: 'o1', quantity: 1 },
          { orderId: 'o2', quantity: 1 },
        ],
      });
  });

  it('never reserves more than is free', () => {
    deciderSpec(productDecider)
      .given([added, reserved('o1')])
      .when({ type: 'Reserve', orderId: 'o2', quantity: 2 })
      .thenThrows(/1 free, 2 asked/);
    deciderSpec(productDecider)
      .given([])
      .when({ type: 'Reserve', orderId: 'o1', quantity: 1 })
      .thenThrows(/no such product/);
  });

  it('decides nothing for an order that already holds its units', () => {
    deciderSpec(productDecider)
      .given([added, reserved('o1')])
      .when({ type: 'Reserve', orderId: 'o1', quantity: 1 })
      .then([]);
  });

  it('releases and commits only what the order holds', () => {
    deciderSpec(productDecider)
      .given([added, reserved('o1')])
      .when({ type: 'Release', orderId: 'o1' })
      .then([{ type: 'ReservationReleased', data: { orderId: 'o1', quantity: 1 } }]);
    deciderSpec(productDecider).given([added]).when({ type: 'Release', orderId: 'o1' }).then([]);
    deciderSpec(productDecider)
      .given([added, reserved('o1'), { type: 'ReservationReleased', data: { orderId: 'o1', quantity: 1 } }])
      .when({ type: 'Release', orderId: 'o1' })
      .then([]);
    deciderSpec(productDecider)
      .given([added, reserved('o1', 2)])
      .when({ type: 'Commit', orderId: 'o1' })
      .thenState({ exists: true, name: 'Tea', price: 450, onHand: 0, reservations: [] });
    deciderSpec(productDecider)
      .given([added, reserved('o1'), { type: 'ReservationSold', data: { orderId: 'o1', quantity: 1 } }])
      .when({ type: 'Commit', orderId: 'o1' })
      .then([]);
  });

  it('puts a returned sale back on sale', () => {
    deciderSpec(productDecider)
      .given([added, reserved('o1'), { type: 'ReservationSold', data: { orderId: 'o1', quantity: 1 } }])
      .when({ type: 'Return', orderId: 'o1', quantity: 1 })
      .thenState({ exists: true, name: 'Tea', price: 450, onHand: 2, reservations: [] });
  });
});
