/**
 * `npm start` — the message bus on embedded defaults (no broker needed): three services in one
 * process exchange typed CloudEvents; a flaky handler is retried, a poison message is dead-lettered,
 * inspected and replayed. Set BUS_URL=amqp://guest:guest@127.0.0.1:5672 to run the same on RabbitMQ.
 */
import { createBus, type Message } from 'ferry';
import { z } from 'zod';

const contracts = {
  'order.created': z.object({
    orderId: z.string(),
    items: z.array(z.object({ sku: z.string(), qty: z.number().int().positive() })),
  }),
  'payment.processed': z.object({ orderId: z.string(), amount: z.number() }),
  'stock.reserved': z.object({ orderId: z.string() }),
};

const url = process.env.BUS_URL ?? 'memory://demo';
const say = (who: string, text: string) => console.log(`${who.padEnd(10)} ${text}`);
const short = (m: Message) =>
  `${m.type} #${m.id.slice(-6)} (correlation …${m.correlationid.slice(-6)}, attempt ${m.attempt})`;

const orders = await createBus({ url, service: 'orders', contracts });
const payments = await createBus({ url, service: 'payments', contracts });
const inventory = await createBus({ url, service: 'inventory', contracts });
const fast = { initialDelayMs: 200, maxDelayMs: 1000 };

let flaky = true;
let processorFixed = false;
await payments.subscribe(
  'order.created',
  async (m) => {
    if (m.data.orderId === 'poison' && !processorFixed) throw new Error('card processor rejects this order');
    if (flaky) {
      flaky = false;
      say('payments', `failed once on ${short(m)}; the broker will redeliver after a backoff`);
      throw new Error('gateway timeout');
    }
    const amount = m.data.items.reduce((sum, item) => sum + item.qty * 9.5, 0);
    say('payments', `charged ${amount} for ${m.data.orderId} on ${short(m)}`);
    await payments.publish('payment.processed', { orderId: m.data.orderId, amount });
  },
  { maxAttempts: 3, backoff: fast },
);
await inventory.subscribe('order.*', async (m) => {
  say('inventory', `reserving stock for ${short(m)}`);
  if (m.type === 'order.created') await inventory.publish('stock.reserved', { orderId: m.data.orderId });
});
const done = new Set<string>();
await orders.subscribe('#', async (m) => {
  if (m.type === 'order.created') return;
  say('orders', `saw ${short(m)}, caused by #${m.causationid?.slice(-6)}`);
  done.add(`${m.type}:${(m.data as { orderId: string }).orderId}`);
});

say('orders', `publishing on ${url.replace(/:[^:@/]*@/, ':***@')}`);
await orders.publish('order.created', { orderId: 'A-1', items: [{ sku: 'tea', qty: 2 }] });
await orders.publish('order.created', { orderId: 'poison', items: [{ sku: 'tnt', qty: 1 }] });
try {
  await orders.publish('order.created', { orderId: 'B-2', items: [{ sku: 'tea', qty: -1 }] });
} catch (error) {
  say('orders', `refused an invalid order before sending it: ${(error as Error).message}`);
}

const until = async (what: () => Promise<boolean> | boolean) => {
  for (let i = 0; i < 200 && !(await what()); i++) await new Promise((r) => setTimeout(r, 50));
};
await until(async () => done.size >= 2 && (await payments.listDeadLetters()).length === 1);
const [dead] = await payments.listDeadLetters();
if (dead) {
  say(
    'payments',
    `dead letter ${dead.deadLetterId.slice(0, 8)}: ${dead.routingKey} after ${dead.attempts} attempts — ${dead.reason.message}`,
  );
  processorFixed = true;
  say('payments', 'card processor fixed; replaying the dead letter');
  await payments.replayDeadLetters({ deadLetterIds: [dead.deadLetterId] });
}
await until(() => done.has('payment.processed:poison'));
say('demo', `dead letters left in group payments: ${(await payments.listDeadLetters()).length}`);

await Promise.all([orders.close(), payments.close(), inventory.close()]);
say('demo', 'all buses closed cleanly');
