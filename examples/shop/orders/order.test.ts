import { deciderSpec } from 'ferry/testing';
import { describe, it } from 'vitest';
import { type OrderEvent, OrderExistsError, OrderNotFoundError, orderDecider } from './order.js';

const items = [
  { productId: 'tea', quantity: 2, price: 450 },
  { productId: 'mug', quantity: 1, price: 1200 },
];
const placed: OrderEvent = {
  type: 'OrderPlaced',
  data: { userId: 'u-1', items, total: 2100, paymentMethod: 'tok_visa' },
};
const confirmed: OrderEvent = { type: 'OrderConfirmed', data: {} };
const requested: OrderEvent = { type: 'CancellationRequested', data: {} };
const cancelled: OrderEvent = { type: 'OrderCancelled', data: { reason: 'out_of_stock' } };

describe('Order', () => {
  it('is placed with the total of its priced items', () => {
    deciderSpec(orderDecider)
      .given([])
      .when({ type: 'Place', userId: 'u-1', items, paymentMethod: 'tok_visa' })
      .then([placed]);
  });

  it('is placed once', () => {
    deciderSpec(orderDecider)
      .given([placed])
      .when({ type: 'Place', userId: 'u-1', items, paymentMethod: 'tok_visa' })
      .thenThrows(OrderExistsError);
  });

  it('is confirmed while pending, and a repeated confirmation changes nothing', () => {
    deciderSpec(orderDecider).given([placed]).when({ type: 'Confirm' }).then([confirmed]);
    deciderSpec(orderDecider).given([placed, confirmed]).when({ type: 'Confirm' }).then([]);
    deciderSpec(orderDecider).given([placed, cancelled]).when({ type: 'Confirm' }).then([]);
  });

  it('is cancelled with its reason, pending or confirmed; cancelling twice is harmless', () => {
    deciderSpec(orderDecider).given([placed]).when({ type: 'Cancel', reason: 'out_of_stock' }).thenState({
      status: 'cancelled',
      userId: 'u-1',
      items,
      total: 2100,
      paymentMethod: 'tok_visa',
      cancellationRequested: false,
      reason: 'out_of_stock',
    });
    deciderSpec(orderDecider)
      .given([placed, confirmed])
      .when({ type: 'Cancel', reason: 'cancelled_by_customer' })
      .then([{ type: 'OrderCancelled', data: { reason: 'cancelled_by_customer' } }]);
    deciderSpec(orderDecider).given([placed, cancelled]).when({ type: 'Cancel', reason: 'timeout' }).then([]);
  });

  it('records a customer cancellation request once, and none after the end', () => {
    deciderSpec(orderDecider).given([placed]).when({ type: 'RequestCancellation' }).then([requested]);
    deciderSpec(orderDecider)
      .given([placed, confirmed])
      .when({ type: 'RequestCancellation' })
      .then([requested]);
    deciderSpec(orderDecider).given([placed, requested]).when({ type: 'RequestCancellation' }).then([]);
    deciderSpec(orderDecider).given([placed, cancelled]).when({ type: 'RequestCancellation' }).then([]);
  });

  it('refuses commands for an order that does not exist', () => {
    deciderSpec(orderDecider).given([]).when({ type: 'RequestCancellation' }).thenThrows(OrderNotFoundError);
    deciderSpec(orderDecider).given([]).when({ type: 'Confirm' }).thenThrows(OrderNotFoundError);
  });
});
