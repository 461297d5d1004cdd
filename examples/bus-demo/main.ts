/**
 * `npm run demo:bus` — the message bus on embedded defaults (no broker needed): three services in
 * one process exchange typed CloudEvents; a flaky handler is retried, a poison message is
 * dead-lettered, inspected and replayed. Set BUS_URL=amqp://guest:guest@127.0.0.1:5672 to run the
 * same on RabbitMQ. Its messages carry ids of this run, so that what an interrupted earlier run left
 * on a broker is told apart; at the end it deletes its subscriptions' queues.
 */
import { randomUUID } from 'node:crypto';
import { createBus, type Message, redactUrl } from 'ferry';
import { z } from 'zod';

const contracts = {
  'order.created': z.object({
    orderId: z.string(),
    items: z.array(z.object({ sku: z.string(), qty: z.number().int().positive() })),
  }),
  'payment.processed': z.object({ orderId: z.string(), amount: z.number() }),
  'stock.reserved': z.object({ orderId: z.string() }),
};

const url = process.env.BUS_URL || 'memory://demo';
const say = (who: string, text: string) => console.log(`${who.padEnd(10)} ${text}`);
const short = (m: Message) =>
  `${m.type} #${m.id.slice(-6)} (correlation …${m.correlationid.slice(-6)}, attempt ${m.attempt})`;

const orders = await createBus({ url, service: 'orders', contracts });
const payments = await createBus({ url, service: 'payments', contracts });
const inventory = await createBus({ url, service: 'inventory', contracts });
const buses = [orders, payments, inventory];
const fast = { initialDelayMs: 200, maxDelayMs: 1000 };
const paymentsOptions = { maxAttempts: 3, backoff: fast };

let closing: Promise<unknown> | undefined;
let interrupted = false;
const closeAll = () => {
  closing ??= Promise.all(buses.map((bus) => bus.close()));
  return closing;
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    say('demo', `${signal}: closing the buses`);
    void closeAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}

// This run's message ids: a poison message an interrupted earlier run left dead-lettered is not
// mistaken for this one's.
const ids = { a1: randomUUID(), poison: randomUUID() };

let flaky = true;
let processorFixed = false;
const subscriptions = [
  await payments.subscribe(
    'order.created',
    async (m) => {
      if (m.data.orderId === 'poison' && !processorFixed)
        throw new Error('card processor rejects this order');
      if (flaky) {
        flaky = false;
        say('payments', `failed once on ${short(m)}; the broker will redeliver after a backoff`);
        throw new Error('gateway timeout');
      }
      const amount = m.data.items.reduce((sum, item) => sum + item.qty * 9.5, 0);
      say('payments', `charged ${amount} for ${m.data.orderId} on ${short(m)}`);
      await payments.publish('payment.processed', { orderId: m.data.orderId, amount });
    },
    paymentsOptions,
  ),
  await inventory.subscribe('order.*', async (m) => {
    say('inventory', `reserving stock for ${short(m)}`);
    if (m.type === 'order.created') await inventory.publish('stock.reserved', { orderId: m.data.orderId });
  }),
];
/** What orders saw, as `type:id of the order.created that caused it`. */
const done = new Set<string>();
subscriptions.push(
  await orders.subscribe('#', async (m) => {
    if (m.type === 'order.created') return;
    say('orders', `saw ${short(m)}, caused by #${m.causationid?.slice(-6)}`);
    done.add(`${m.type}:${m.causationid}`);
  }),
);

try {
  say('orders', `publishing on ${redactUrl(url)}`);
  await orders.publish('order.created', { orderId: 'A-1', items: [{ sku: 'tea', qty: 2 }] }, { id: ids.a1 });
  await orders.publish(
    'order.created',
    { orderId: 'poison', items: [{ sku: 'tnt', qty: 1 }] },
    { id: ids.poison },
  );
  try {
    await orders.publish('order.created', { orderId: 'B-2', items: [{ sku: 'tea', qty: -1 }] });
  } catch (error) {
    say('orders', `refused an invalid order before sending it: ${(error as Error).message}`);
  }

  const until = async (what: string, condition: () => Promise<boolean> | boolean) => {
    for (let i = 0; !(await condition()); i++) {
      if (i === 200) throw new Error(`the demo waited 10 s for ${what} in vain`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const ourDeadLetter = async () =>
    (await payments.listDeadLetters()).find((d) => d.envelope?.id === ids.poison);
  await until('A-1 to be paid and the poison message to be dead-lettered', async () => {
    return done.has(`payment.processed:${ids.a1}`) && (await ourDeadLetter()) !== undefined;
  });
  const dead = (await ourDeadLetter())!;
  say(
    'payments',
    `dead letter ${dead.deadLetterId.slice(0, 8)}: ${dead.routingKey} after ${dead.attempts} attempts — ${dead.reason.message}`,
  );
  processorFixed = true;
  say('payments', 'card processor fixed; replaying the dead letter');
  await payments.replayDeadLetters({ deadLetterIds: [dead.deadLetterId] });
  await until('the replayed poison message to be paid', () => done.has(`payment.processed:${ids.poison}`));
  const left = await payments.listDeadLetters();
  const earlier = left.filter((d) => d.envelope?.id !== ids.poison).length;
  say(
    'demo',
    `dead letters of this run left in group payments: ${left.length - earlier}${earlier > 0 ? ` (and ${earlier} of earlier runs, left in place)` : ''}`,
  );

  // Durable queues outlive their subscribers: delete this demo's (its dead-letter queue stays).
  for (const subscription of subscriptions) await subscription.close();
  for (const [bus, pattern, options] of [
    [payments, 'order.created', paymentsOptions],
    [inventory, 'order.*', {}],
    [orders, '#', {}],
  ] as const) {
    await bus.deleteSubscription(pattern, options).catch((error: unknown) => {
      say('demo', `kept the queue of ${pattern}: ${(error as Error).message}`);
    });
  }
} catch (error) {
  // Interrupted: the buses closed under the flow, and the signal's handler exits.
  if (interrupted) await new Promise(() => {});
  say('demo', `failed: ${(error as Error).message}`);
  await closeAll().catch(() => {});
  process.exit(1);
}
await closeAll();
say('demo', 'all buses closed cleanly');
