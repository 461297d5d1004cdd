/**
 * The order saga as the distributed shop runs it: two orders instances competing on RabbitMQ, their
 * state in one PostgreSQL schema. A customer's cancel may reach the saga before the order's creation
 * (each message type has its own queue): it must never be lost.
 */
import { randomUUID } from 'node:crypto';
import { createBus, createEventStore, createOutbox, type Message, silentLogger, startSaga } from 'ferry';
import {
  createTestVhost,
  dropSchemas,
  postgresTestUrl,
  type TestVhost,
  testSchemaName,
  waitFor,
} from 'ferry/testing';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { shopContracts } from '../contracts.js';
import { createOrderSaga } from './order-saga.js';

const schemas: string[] = [];
const vhosts: TestVhost[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(async () => {
  await dropSchemas(schemas);
  await Promise.all(vhosts.map((v) => v.dispose()));
});

async function bus(url: string) {
  const b = await createBus({ url, service: 'orders', contracts: shopContracts, logger: silentLogger });
  closers.push(() => b.close());
  return b;
}

/** Two orders instances (a bus connection, a store pool, an outbox and the saga each) on one schema. */
async function shop() {
  const vhost = await createTestVhost('shop-saga');
  vhosts.push(vhost);
  const schema = testSchemaName('shop_orders');
  schemas.push(schema);
  const instances = [];
  for (let i = 0; i < 2; i++) {
    const store = await createEventStore({ url: `${postgresTestUrl()}?schema=${schema}` });
    closers.push(() => store.close());
    const outbox = await createOutbox({ store, bus: await bus(vhost.url), logger: silentLogger });
    closers.push(() => outbox.close());
    const saga = await startSaga(createOrderSaga(), { outbox, logger: silentLogger });
    closers.push(() => saga.close());
    instances.push(saga);
  }
  // What the saga sends, as inventory and the orders aggregate would receive it.
  const observer = await bus(vhost.url);
  const seen: Message[] = [];
  for (const pattern of ['order.cancelled', 'inventory.reserve'] as const) {
    const sub = await observer.subscribe(pattern, (m) => void seen.push(m as Message), { group: 'observer' });
    closers.push(() => sub.close());
  }
  return { instances, client: await bus(vhost.url), seen };
}

const created = (orderId: string) => ({
  orderId,
  userId: 'u-1',
  items: [{ productId: 'tea', quantity: 1, price: 450 }],
  total: 450,
  paymentMethod: 'tok_visa',
});

describe('order saga on RabbitMQ and PostgreSQL', () => {
  it('a cancel handled before the order.created cancels the order, and nothing is reserved', async () => {
    const { instances, client, seen } = await shop();
    const orderId = randomUUID();
    await client.publish('order.cancellation-requested', { orderId });
    await waitFor(async () => (await instances[0]!.get(orderId))?.completed === true, 'the cancel');
    await client.publish('order.created', created(orderId));
    await waitFor(() => seen.some((m) => m.type === 'order.cancelled'), 'order.cancelled');
    // The creation is ignored (the instance is completed): given time to be handled, nothing is reserved.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(await instances[1]!.get(orderId)).toMatchObject({
      status: 'cancelled',
      completed: true,
      version: 1,
    });
    expect(seen.map((m) => ({ type: m.type, data: m.data }))).toEqual([
      { type: 'order.cancelled', data: { orderId, reason: 'cancelled_by_customer' } },
    ]);
    expect(await client.listDeadLetters({ group: 'saga-order' })).toEqual([]);
  });

  it('a cancel sent with the creation, in either order, is never lost', async () => {
    const { instances, client, seen } = await shop();
    const orders = Array.from({ length: 10 }, () => randomUUID());
    await Promise.all(
      orders.map((orderId, i) => {
        const create = () => client.publish('order.created', created(orderId));
        const cancel = () => client.publish('order.cancellation-requested', { orderId });
        return i % 2 === 0 ? Promise.all([cancel(), create()]) : Promise.all([create(), cancel()]);
      }),
    );
    const cancelledOf = (orderId: string) =>
      seen.filter((m) => m.type === 'order.cancelled' && (m.data as { orderId: string }).orderId === orderId);
    await waitFor(() => orders.every((id) => cancelledOf(id).length > 0), 'every order cancelled', 20_000);
    for (const orderId of orders) {
      expect(cancelledOf(orderId).map((m) => m.data)).toEqual([{ orderId, reason: 'cancelled_by_customer' }]);
      const instance = await instances[0]!.get(orderId);
      expect(instance?.status).toBe('cancelled');
    }
    expect(await client.listDeadLetters({ group: 'saga-order' })).toEqual([]);
  });
});
