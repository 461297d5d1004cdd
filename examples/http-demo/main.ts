/**
 * `npm run demo:http` — synchronous calls between three Fastify services in one process, on
 * loopback: gateway → orders → payments. Shows the correlation id travelling, a retried POST that
 * keeps its Idempotency-Key (the payment is charged once), a deadline that shrinks at each hop and
 * stops the callee's work, and a circuit breaker that opens on a failing dependency and shows in
 * the readiness check. No broker or database needed.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { currentContext, MemoryIdempotencyStore, ServiceClient, silentLogger } from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';

const say = (who: string, text: string) => console.log(`${who.padEnd(9)} ${text}`);
const corr = () => `…${currentContext()?.correlationId.slice(-6)}`;

async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

// payments: charges at most once per Idempotency-Key; its behaviour is scripted by `mode`.
let mode: 'flaky-once' | 'slow' | 'down' | 'ok' = 'flaky-once';
let charges = 0;
const payments = Fastify(ferryFastifyOptions({ logger: silentLogger }));
ferryFastify(payments, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silentLogger });
/** Called when payments stops a slow charge at its deadline. */
let paymentsStopped: () => void = () => {};
payments.post('/charges', async (request, reply) => {
  const key = request.headers['idempotency-key'];
  if (mode === 'flaky-once') {
    mode = 'ok';
    say('payments', `503 for key …${String(key).slice(-6)} (a hiccup) [corr ${corr()}]`);
    return reply.code(503).send({ error: 'busy' });
  }
  if (mode === 'down') return reply.code(503).send({ error: 'down' });
  if (mode === 'slow') {
    say('payments', `working, with ${request.ferry.deadline! - Date.now()} ms left [corr ${corr()}]`);
    await new Promise((_, reject) =>
      request.ferry.signal.addEventListener('abort', () => {
        say('payments', `stopped: ${(request.ferry.signal.reason as Error).message}`);
        paymentsStopped();
        reject(request.ferry.signal.reason);
      }),
    );
  }
  charges++;
  say('payments', `charged once for key …${String(key).slice(-6)} [corr ${corr()}]`);
  return reply.code(201).send({ chargeId: `ch_${charges}` });
});
const paymentsUrl = await listen(payments);

// orders: calls payments with the default policies (3 attempts, breaker, bulkhead, timeouts).
const paymentsClient = new ServiceClient(paymentsUrl, {
  name: 'payments',
  timeout: 2000,
  breaker: { minimumVolume: 5, errorThresholdPercentage: 50, resetTimeoutMs: 30_000 },
  retry: { maxAttempts: 3, backoff: () => 50 },
});
paymentsClient.on('retry', (e) => say('orders', `retrying ${e.method} ${e.path} (attempt ${e.attempt + 1})`));
paymentsClient.on('breaker', (e) => say('orders', `breaker ${e.breaker}: ${e.from} -> ${e.to}`));
paymentsClient.on('rejection', (e) => say('orders', `${e.method} ${e.path} refused at once: ${e.reason}`));
paymentsClient.on('response', (e) => {
  if (e.status >= 500) say('orders', `payments answered ${e.status} (attempt ${e.attempt})`);
});
/** How long orders works before it calls payments. */
const RESERVE_MS = 40;
const orders = Fastify(ferryFastifyOptions({ logger: silentLogger }));
ferryFastify(orders, { logger: silentLogger, health: { breakers: () => paymentsClient.breakers() } });
orders.post('/orders', async (request) => {
  const left =
    request.ferry.deadline === undefined ? '' : `, with ${request.ferry.deadline - Date.now()} ms left`;
  say('orders', `placing an order${left} [corr ${corr()}]`);
  // Work of its own before the call (reserving the stock, say): what is left of the budget shrinks.
  await new Promise((resolve) => setTimeout(resolve, RESERVE_MS));
  const charge = await paymentsClient.post<{ chargeId: string }>('/charges', request.body);
  return { orderId: 'A-1', ...charge };
});
const ordersUrl = await listen(orders);

// gateway: the edge; gives each request a 300 ms budget.
const ordersClient = new ServiceClient(ordersUrl, { name: 'orders', deadline: 300, retry: false });
const gateway = Fastify(ferryFastifyOptions({ logger: silentLogger }));
ferryFastify(gateway, { logger: silentLogger });
gateway.post('/checkout', async (request) => {
  say('gateway', `checkout: orders gets 300 ms [corr ${corr()}]`);
  return ordersClient.post('/orders', request.body);
});
const gatewayUrl = await listen(gateway);

const edge = new ServiceClient(gatewayUrl, { name: 'gateway', retry: false });
const probe = new ServiceClient(ordersUrl, { name: 'orders-probe', retry: false });
async function checkout(step: string, title: string): Promise<void> {
  console.log(`\n— ${title}`);
  const res = await edge.request({
    method: 'POST',
    path: '/checkout',
    body: { amount: 19 },
    headers: { 'x-correlation-id': `demo-${step}` },
  });
  const body = res.body as Record<string, unknown>;
  say(
    'client',
    `${res.status} ${body.title ? `${body.title} (application/problem+json)` : JSON.stringify(body)}`,
  );
}

await checkout('retry', 'Retry: payments answers 503 once; the POST is retried with the same key');
mode = 'slow';
const stopped = new Promise<void>((resolve) => {
  paymentsStopped = resolve;
});
await checkout('deadline', 'Deadline: payments is slow; the 300 ms budget shrinks at each hop');
// The 504 can reach the client a moment before payments' own timer fires on a busy machine: let
// payments tell its part of the story before the next one starts.
await Promise.race([stopped, new Promise((resolve) => setTimeout(resolve, 2000))]);
mode = 'down';
for (let i = 1; i <= 3; i++) await checkout(`down-${i}`, `Breaker: payments is down (${i})`);
console.log('\n— Afterwards');
const readiness = await probe.request({ method: 'GET', path: '/health/ready' });
say('orders', `GET /health/ready -> ${readiness.status} ${JSON.stringify(readiness.body)}`);
say('demo', `payments charged ${charges} time(s) in all`);
await Promise.all([edge.close(), probe.close(), ordersClient.close(), paymentsClient.close()]);
await Promise.all([gateway.close(), orders.close(), payments.close()]);
