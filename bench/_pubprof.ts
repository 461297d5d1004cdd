import { createBus, silentLogger } from 'ferry';
import { createTestVhost } from '../src/testing/rabbitmq.js';
import { pump } from './support.js';

const v = await createTestVhost('probe');
const bus = await createBus({ url: v.url, service: 'bench', logger: silentLogger });
const sub = await bus.subscribe('bench.#', async () => {}, { group: 'pub-only' });
await sub.close();
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};
const t = performance.now();
await pump(40000, 1000, (_i, done) => {
  bus.publish('bench.order.created', payload).then(() => done(), done);
});
console.log(Math.round(40000 / ((performance.now() - t) / 1000)));
await bus.close();
await v.dispose();
