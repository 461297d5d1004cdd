import { deciderSpec } from 'ferry/testing';
import { describe, expect, it } from 'vitest';
import { mergeLines, type OrderStockEvent, orderStockDecider } from './order-stock.js';

const lines = [{ productId: 'p1', quantity: 1 }];
const reserved: OrderStockEvent = { type: 'OrderStockReserved', data: { orderId: 'o1', lines } };
const committed: OrderStockEvent = { type: 'OrderStockCommitted', data: { orderId: 'o1' } };
const released: OrderStockEvent = { type: 'OrderStockReleased', data: { orderId: 'o1' } };

describe('order stock decider', () => {
  it('records one outcome per order', () => {
    deciderSpec(orderStockDecider)
      .given([])
      .when({ type: 'RecordReserved', orderId: 'o1', lines })
      .then([reserved]);
    deciderSpec(orderStockDecider)
      .given([reserved])
      .when({ type: 'RecordReserved', orderId: 'o1', lines })
      .then([]);
    deciderSpec(orderStockDecider)
      .given([reserved])
      .when({ type: 'RecordUnavailable', orderId: 'o1', productId: 'p1' })
      .then([]);
  });

  it('commits a reservation once', () => {
    deciderSpec(orderStockDecider)
      .given([reserved])
      .when({ type: 'Commit', orderId: 'o1' })
      .then([committed]);
    deciderSpec(orderStockDecider)
      .given([reserved, committed])
      .when({ type: 'Commit', orderId: 'o1' })
      .then([]);
    deciderSpec(orderStockDecider).given([]).when({ type: 'Commit', orderId: 'o1' }).then([]);
    deciderSpec(orderStockDecider).given([released]).when({ type: 'Commit', orderId: 'o1' }).then([]);
  });

  it('releases once, and a release before the reserve leaves its mark', () => {
    deciderSpec(orderStockDecider)
      .given([reserved])
      .when({ type: 'Release', orderId: 'o1' })
      .then([released]);
    deciderSpec(orderStockDecider)
      .given([reserved, released])
      .when({ type: 'Release', orderId: 'o1' })
      .then([]);
    deciderSpec(orderStockDecider).given([]).when({ type: 'Release', orderId: 'o1' }).then([released]);
    deciderSpec(orderStockDecider)
      .given([released])
      .when({ type: 'RecordReserved', orderId: 'o1', lines })
      .then([]);
  });

  it('returns a committed order once', () => {
    const returned: OrderStockEvent = { type: 'OrderStockReturned', data: { orderId: 'o1' } };
    deciderSpec(orderStockDecider)
      .given([reserved, committed])
      .when({ type: 'Release', orderId: 'o1' })
      .then([returned]);
    deciderSpec(orderStockDecider)
      .given([reserved, committed, returned])
      .when({ type: 'Release', orderId: 'o1' })
      .then([]);
  });

  it('merges repeated products of an order', () => {
    expect(
      mergeLines([
        { productId: 'b', quantity: 1 },
        { productId: 'a', quantity: 2 },
        { productId: 'b', quantity: 3 },
      ]),
    ).toEqual([
      { productId: 'a', quantity: 2 },
      { productId: 'b', quantity: 4 },
    ]);
  });
});
