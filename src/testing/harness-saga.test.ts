import { afterEach, describe, expect, it } from 'vitest';
import { orderContracts, orderSaga } from '../saga/fixtures/order-saga.js';
import { retrySaga } from '../saga/fixtures/retry-saga.js';
import { startSaga } from '../saga/start-saga.js';
import { createTestHarness, type TestHarness } from './harness.js';

const harnesses: TestHarness<typeof orderContracts>[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.close();
});

describe('test harness with a saga', () => {
  it('runs the saga’s 30 s payment timeout in virtual time while select waits for its outcome', async () => {
    const harness = await createTestHarness({
      service: 'shop',
      contracts: orderContracts,
      setup: async ({ outbox }) => {
        await startSaga(orderSaga, { outbox });
      },
    });
    harnesses.push(harness);
    await harness.bus.publish('order.placed', { orderId: 'o-1', total: 40 });
    await harness.published.select('stock.reserve');
    await harness.bus.publish('stock.reserved', { orderId: 'o-1' });
    await harness.published.select('payment.charge');
    const charging = harness.clock.now();
    expect(await harness.sagaInstances('order', 'active')).toMatchObject([
      { id: 'o-1', state: { status: 'charging' } },
    ]);

    // Nobody answers the charge: select moves time to the payment timeout.
    const cancelled = await harness.published.select('order.cancelled');

    expect(cancelled.message.data).toEqual({ orderId: 'o-1', reason: 'payment timed out' });
    expect(harness.clock.now() - charging).toBe(30_000);
    expect(harness.published.count('stock.release')).toBe(1);
    expect(await harness.sagaInstances('order', 'completed')).toMatchObject([
      { id: 'o-1', state: { status: 'cancelled' } },
    ]);
  });

  it('confirms when the payment is charged in time: the timeout never fires', async () => {
    const harness = await createTestHarness({
      service: 'shop',
      contracts: orderContracts,
      setup: async ({ outbox }) => {
        await startSaga(orderSaga, { outbox });
      },
    });
    harnesses.push(harness);
    await harness.bus.publish('order.placed', { orderId: 'o-2', total: 40 });
    await harness.published.select('stock.reserve');
    await harness.bus.publish('stock.reserved', { orderId: 'o-2' });
    await harness.published.select('payment.charge');
    await harness.advance(29_000);
    await harness.bus.publish('payment.charged', { orderId: 'o-2' });
    await harness.published.select('order.confirmed');

    await harness.advance(60_000);
    expect(harness.published.none('saga.order.timeout')).toBe(true);
    expect(harness.published.none('order.cancelled')).toBe(true);
  });

  it('releases every reservation of a step done again after a compensation: the inbox takes each undo', async () => {
    let released = 0;
    const harness = await createTestHarness({
      service: 'shop',
      contracts: orderContracts,
      setup: async ({ bus, outbox }) => {
        await startSaga(retrySaga, { outbox });
        // The stock service: releases once per message id, through its transactional inbox.
        await bus.subscribe(
          'stock.release',
          async () => {
            released++;
          },
          { group: 'stock', unitOfWork: outbox },
        );
      },
    });
    harnesses.push(harness);
    await harness.bus.publish('order.placed', { orderId: 'o-3', total: 40 });
    for (const type of [
      'stock.reserved',
      'payment.declined',
      'stock.reserved',
      'payment.declined',
    ] as const) {
      await harness.bus.publish(type, { orderId: 'o-3' });
      await harness.settle();
    }
    await harness.advance(5_000);

    const ids = harness.published.all('stock.release').map((p) => p.message.id);
    expect(ids).toHaveLength(2);
    expect(new Set(ids).size).toBe(2);
    expect(released).toBe(2);
    expect(await harness.sagaInstances('retry', 'active')).toMatchObject([
      { id: 'o-3', state: { status: 'reserving', data: { tries: 2 } } },
    ]);
  });
});
