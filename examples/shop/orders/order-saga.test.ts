import { sagaSpec } from 'ferry/testing';
import { describe, expect, it } from 'vitest';
import { createOrderSaga } from './order-saga.js';

const saga = createOrderSaga({ timeoutMs: 5000 });
const orderId = 'o-1';
const created = {
  type: 'order.created' as const,
  data: {
    orderId,
    userId: 'u-1',
    items: [{ productId: 'tea', quantity: 2, price: 450 }],
    total: 900,
    paymentMethod: 'tok_visa',
  },
};
const reserved = { type: 'inventory.reserved', data: { orderId } } as const;
const processed = { type: 'payment.processed', data: { orderId, chargeId: 'ch_1', amount: 900 } } as const;
const cancelRequest = { type: 'order.cancellation-requested', data: { orderId } } as const;
const release = { type: 'inventory.release', data: { orderId } };
const refund = { type: 'payment.refund', data: { orderId } };
const cancelled = (reason: string) => ({ type: 'order.cancelled', data: { orderId, reason } });

describe('order saga', () => {
  it('reserves the stock of a new order and sets its deadline', async () => {
    await sagaSpec(saga)
      .given([])
      .when(created)
      .then({
        status: 'reserving',
        published: [
          { type: 'inventory.reserve', data: { orderId, items: [{ productId: 'tea', quantity: 2 }] } },
        ],
        timeouts: ['deadline'],
      });
  });

  it('charges the total once the stock is reserved', async () => {
    await sagaSpec(saga)
      .given([created])
      .when(reserved)
      .then({
        status: 'charging',
        published: [{ type: 'payment.charge', data: { orderId, amount: 900, paymentMethod: 'tok_visa' } }],
        steps: ['stock'],
      });
  });

  it('happy path: a processed payment commits the stock and confirms the order', async () => {
    await sagaSpec(saga)
      .given([created, reserved])
      .when(processed)
      .then({
        status: 'confirmed',
        completed: false,
        timeouts: [],
        published: [
          { type: 'inventory.commit', data: { orderId } },
          { type: 'order.confirmed', data: { orderId } },
        ],
      });
  });

  it('out of stock: cancels without anything to undo', async () => {
    await sagaSpec(saga)
      .given([created])
      .when({ type: 'inventory.unavailable', data: { orderId, productId: 'tea' } })
      .then({ status: 'cancelled', completed: true, timeouts: [], published: [cancelled('out_of_stock')] });
  });

  for (const reason of ['payment_declined', 'payment_unavailable'] as const) {
    it(`${reason}: releases the stock and cancels with the reason of the message`, async () => {
      await sagaSpec(saga)
        .given([created, reserved])
        .when({ type: 'payment.declined', data: { orderId, reason } })
        .then({ status: 'cancelled', completed: true, published: [release, cancelled(reason)] });
    });
  }

  it('timeout while charging: releases the stock, refunds whatever was charged, cancels', async () => {
    await sagaSpec(saga)
      .given([created, reserved])
      .when({ timeout: 'deadline' })
      .then({
        status: 'cancelled',
        completed: false,
        published: [release, refund, cancelled('timeout')],
      });
  });

  it('a charge that lands after the timeout is refunded, and the saga ends', async () => {
    await sagaSpec(saga)
      .given([created, reserved, { timeout: 'deadline' }])
      .when(processed)
      .then({ status: 'cancelled', completed: true, published: [refund] });
  });

  it('timeout while reserving: cancels, and releases a reservation that comes late', async () => {
    await sagaSpec(saga)
      .given([created])
      .when({ timeout: 'deadline' })
      .then({ status: 'cancelled', completed: false, published: [cancelled('timeout')] });
    await sagaSpec(saga)
      .given([created, { timeout: 'deadline' }])
      .when(reserved)
      .then({ status: 'cancelled', completed: true, published: [release] });
  });

  it('customer cancel while reserving: cancels at once, then undoes the late reservation', async () => {
    await sagaSpec(saga)
      .given([created])
      .when(cancelRequest)
      .then({ status: 'cancelled', timeouts: [], published: [cancelled('cancelled_by_customer')] });
    await sagaSpec(saga)
      .given([created, cancelRequest])
      .when({ type: 'inventory.unavailable', data: { orderId, productId: 'tea' } })
      .then({ status: 'cancelled', completed: true, published: [] });
  });

  it('customer cancel while charging: releases the stock and refunds', async () => {
    await sagaSpec(saga)
      .given([created, reserved])
      .when(cancelRequest)
      .then({ status: 'cancelled', published: [release, refund, cancelled('cancelled_by_customer')] });
  });

  it('customer cancel once confirmed: refunds the charge and releases the stock', async () => {
    await sagaSpec(saga)
      .given([created, reserved, processed])
      .when(cancelRequest)
      .then({
        status: 'cancelled',
        completed: true,
        published: [refund, release, cancelled('cancelled_by_customer')],
      });
  });

  it('a cancel that comes before the order.created: cancels at once, and the creation reserves nothing', async () => {
    // Two queues and competing instances: the customer's cancel may be handled first.
    await sagaSpec(saga)
      .given([])
      .when(cancelRequest)
      .then({
        status: 'cancelled',
        completed: true,
        timeouts: [],
        published: [cancelled('cancelled_by_customer')],
      });
    await sagaSpec(saga).given([cancelRequest]).when(created).thenIgnored('completed');
    await sagaSpec(saga).given([cancelRequest, created]).when(cancelRequest).thenIgnored('completed');
  });

  it('a second cancel request of a cancelled order is harmless', async () => {
    await sagaSpec(saga)
      .given([created, reserved, cancelRequest])
      .when(cancelRequest)
      .then({ status: 'cancelled', published: [] });
    await sagaSpec(saga)
      .given([created, reserved, processed, cancelRequest])
      .when(cancelRequest)
      .thenIgnored();
  });

  it('the deadline does not fire once the order is confirmed', async () => {
    await sagaSpec(saga)
      .given([created, reserved, processed])
      .when({ timeout: 'deadline' })
      .thenIgnored('stale-timeout');
  });

  describe('tells when each pending order that ends was placed (the saga backlog learns from it)', () => {
    function observed() {
      const placedAt: number[] = [];
      const observedSaga = createOrderSaga({ timeoutMs: 5000, orderEnded: (t) => placedAt.push(t) });
      return { placedAt, observedSaga };
    }
    const unavailable = { type: 'inventory.unavailable', data: { orderId, productId: 'tea' } } as const;
    const declined = { type: 'payment.declined', data: { orderId, reason: 'payment_declined' } } as const;

    it.each([
      ['confirmed', [created, reserved], processed],
      ['out of stock', [created], unavailable],
      ['declined', [created, reserved], declined],
      ['the deadline while reserving', [created], { timeout: 'deadline' } as const],
      ['the deadline while charging', [created, reserved], { timeout: 'deadline' } as const],
      ['the customer’s cancel while reserving', [created], cancelRequest],
      ['the customer’s cancel while charging', [created, reserved], cancelRequest],
    ] as const)('%s: the time of order.created, once', async (_, given, end) => {
      const { placedAt, observedSaga } = observed();
      const before = Date.now();
      await sagaSpec(observedSaga)
        .given([...given])
        .when(end)
        .then({});
      expect(placedAt).toHaveLength(1);
      expect(placedAt[0]).toBeGreaterThanOrEqual(before - 1000);
      expect(placedAt[0]).toBeLessThanOrEqual(Date.now());
    });

    it('nothing on the way, nor for what comes after the end', async () => {
      const { placedAt, observedSaga } = observed();
      await sagaSpec(observedSaga).given([created]).when(reserved).then({ status: 'charging' });
      expect(placedAt).toEqual([]);
      // Confirmed (told once, in `given`), then cancelled by the customer: not pending any more.
      await sagaSpec(observedSaga)
        .given([created, reserved, processed])
        .when(cancelRequest)
        .then({ status: 'cancelled' });
      expect(placedAt).toHaveLength(1);
      // Cancelled at the deadline while reserving (told), then the late reservation: released, not told.
      placedAt.length = 0;
      await sagaSpec(observedSaga)
        .given([created, { timeout: 'deadline' }])
        .when(reserved)
        .then({ completed: true });
      expect(placedAt).toHaveLength(1);
    });
  });
});
