import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import { createTestVhost } from '../src/testing/rabbitmq.js';
import { pump } from './support.js';

const v = await createTestVhost('probe');
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};
const conn = await amqp.connect(v.url);
const ch = await conn.createConfirmChannel();
await ch.assertExchange('x', 'topic', { durable: true });
await ch.assertQueue('q', { durable: true });
await ch.bindQueue('q', 'x', '#');
type Opt = () => amqp.Options.Publish;
const variants: Record<string, Opt> = {
  tutorial: () => ({ persistent: true, messageId: randomUUID(), timestamp: Date.now() }),
  ferryLike: () => ({
    persistent: true,
    mandatory: true,
    contentType: 'application/json',
    messageId: randomUUID(),
    timestamp: Date.now(),
    appId: 'bench',
    correlationId: randomUUID(),
    headers: { 'cloudEvents:specversion': '1.0', 'cloudEvents:time': new Date().toISOString() },
  }),
  noHeaders: () => ({
    persistent: true,
    mandatory: true,
    contentType: 'application/json',
    messageId: randomUUID(),
    timestamp: Date.now(),
    appId: 'bench',
    correlationId: randomUUID(),
  }),
  mandatoryOnly: () => ({
    persistent: true,
    mandatory: true,
    messageId: randomUUID(),
    timestamp: Date.now(),
  }),
};
for (let r = 0; r < 3; r++)
  for (const [name, opt] of Object.entries(variants)) {
    await ch.purgeQueue('q');
    const N = 20000;
    const t = performance.now();
    await pump(N, 1000, (_i, done) => {
      ch.publish('x', 'bench.a', Buffer.from(JSON.stringify(payload)), opt(), (e) => done(e ?? undefined));
    });
    console.log(name, Math.round(N / ((performance.now() - t) / 1000)));
  }
await conn.close();
await v.dispose();
