/**
 * The saga's deadline counts from the order's creation (`order.created`'s time, written in the
 * order's commit), not from when the saga handles the message: after a crash, `order.created` may
 * wait out its relay's lease before it is handled, and the order must not get a fresh 30 s.
 */
import { randomUUID } from 'node:crypto';
import {
  createBus,
  createOutbox,
  EventStore,
  MemoryBroker,
  MemoryEventStoreBackend,
  MemoryTransport,
  type Message,
  silentLogger,
  startSaga,
  VirtualClock,
} from 'ferry';
import { waitFor } from 'ferry/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { shopContracts } from '../contracts.js';
import { createOrderSaga } from './order-saga.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

describe('the order saga, handling an order.created sent 10 s ago', () => {
  it('cancels the order `timeout` at once with a 10 s deadline, not 10 s after handling it', async () => {
    const broker = new MemoryBroker();
    const bus = await createBus({
      transport: new MemoryTransport({ broker }),
      service: 'orders',
      contracts: shopContracts,
      logger: silentLogger,
    });
    closers.push(() => bus.close());
    const store = new EventStore(new MemoryEventStoreBackend());
    closers.push(() => store.close());
    const outbox = await createOutbox({ store, bus, logger: silentLogger });
    closers.push(() => outbox.close());
    const saga = await startSaga(createOrderSaga({ timeoutMs: 10_000 }), { outbox, logger: silentLogger });
    closers.push(() => saga.close());
    // An inventory that takes the reservation and never answers: only the deadline ends the order.
    const inventory = await bus.subscribe('inventory.*', () => {}, { group: 'inventory' });
    closers.push(() => inventory.close());
    const cancelled: Message[] = [];
    const sub = await bus.subscribe('order.cancelled', (m) => void cancelled.push(m as Message), {
      group: 'observer',
    });
    closers.push(() => sub.close());

    // A publisher whose clock says 10 s ago: the message's time is the order's creation.
    const late = await createBus({
      transport: new MemoryTransport({ broker }),
      service: 'orders',
      contracts: shopContracts,
      logger: silentLogger,
      clock: new VirtualClock({ start: Date.now() - 10_000 }),
    });
    closers.push(() => late.close());
    const orderId = randomUUID();
    await late.publish('order.created', {
      orderId,
      userId: 'u-1',
      items: [{ productId: 'tea', quantity: 1, price: 450 }],
      total: 450,
      paymentMethod: 'tok_visa',
    });

    // Before, the deadline came 10 s after the saga handled the message.
    await waitFor(() => cancelled.length > 0, 'the order cancelled at its deadline', 5_000);
    expect(cancelled.map((m) => m.data)).toEqual([{ orderId, reason: 'timeout' }]);
  });
});
