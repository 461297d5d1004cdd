/**
 * What the chaos tests share: orders placed in flight while something breaks, and the checks of what
 * must not be lost once every order has ended — each order stored is confirmed or cancelled; the
 * provider keeps exactly one charge of the total per confirmed order and none for a cancelled one;
 * per product, what is on sale + reserved + what confirmed orders bought = the stock it started with.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { type Answer, ledgerProblems, type OrderView, type ShopClient } from './shop-client.js';

export interface ChaosCatalog {
  /** Product id → stock it was created with. */
  readonly initial: ReadonlyMap<string, number>;
  readonly userIds: readonly string[];
}

/** Products with small stocks (some orders must run out) and a few users. */
export async function chaosCatalog(client: ShopClient, products = 2, stock = 70): Promise<ChaosCatalog> {
  const initial = new Map<string, number>();
  for (let i = 0; i < products; i++) initial.set((await client.addProduct(stock, 300 + i)).id, stock);
  const userIds = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => (await client.createUser(`C${i}`)).id),
  );
  return { initial, userIds };
}

/**
 * Places `count` orders, `concurrency` at a time, one in ten with a declined card; calls `midway`
 * once half of them have been answered (the fault goes there). Orders whose POST failed (the
 * process died under them) are simply not counted here: the tests find every stored order in the
 * database afterwards, answered or not. An order refused with 503 `ORDERS_BACKED_UP` (the shop's
 * backpressure) is sent again with its Idempotency-Key after Retry-After, up to
 * {@link MAX_BACKED_UP_TRIES} times.
 */
export async function placeOrders(
  client: ShopClient,
  catalog: ChaosCatalog,
  count: number,
  midway: () => Promise<void> | void,
  concurrency = 16,
): Promise<{ accepted: string[]; failed: number; refusals: string[] }> {
  const products = [...catalog.initial.keys()];
  const accepted: string[] = [];
  // What each order not answered 201 got instead, for a failing test's message.
  const refusals: string[] = [];
  let failed = 0;
  let answered = 0;
  let next = 0;
  let fault: Promise<void> | undefined;
  async function worker(): Promise<void> {
    while (next < count) {
      const i = next++;
      try {
        const order = {
          userId: catalog.userIds[i % catalog.userIds.length],
          items: [{ productId: products[i % products.length], quantity: 1 + (i % 2) }],
          ...(i % 10 === 9 ? { paymentMethod: 'tok_chargeDeclined' } : {}),
        };
        const key = { 'idempotency-key': randomUUID() };
        let answer = await client.call<OrderView>('POST', '/orders', order, key);
        // The shop's backpressure, as its README tells clients to meet it: nothing was stored, send
        // the order again with the same key after Retry-After. A shop that stays backed up fails.
        for (let tries = 1; isBackedUp(answer) && tries <= MAX_BACKED_UP_TRIES; tries++) {
          await sleep(1000 * Number(answer.headers.get('retry-after') ?? 1));
          answer = await client.call<OrderView>('POST', '/orders', order, key);
        }
        if (answer.status === 201) accepted.push(answer.body.id);
        else {
          failed++;
          refusals.push(`order ${i}: ${answer.status} ${JSON.stringify(answer.body)}`);
        }
      } catch (error) {
        failed++;
        refusals.push(`order ${i}: ${String(error)} (cause: ${String((error as Error).cause)})`);
      }
      answered++;
      if (fault === undefined && answered >= count / 2) fault = Promise.resolve(midway());
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  await fault;
  return { accepted, failed, refusals };
}

/** How often one order refused as backed up is sent again before it counts as refused. */
const MAX_BACKED_UP_TRIES = 10;

function isBackedUp(answer: Answer): boolean {
  return answer.status === 503 && (answer.body as { code?: unknown } | null)?.code === 'ORDERS_BACKED_UP';
}

/** Waits until every order in `ids` has ended, then checks the ledger and the stock add up. */
export async function expectEverythingAddsUp(
  client: ShopClient,
  ids: readonly string[],
  catalog: ChaosCatalog,
  timeoutMs = 120_000,
): Promise<OrderView[]> {
  const deadline = Date.now() + timeoutMs;
  const orders: OrderView[] = [];
  for (const id of ids) {
    for (;;) {
      const answer = await client.call<OrderView>('GET', `/orders/${id}`).catch(() => undefined);
      if (answer?.status === 200 && answer.body.status !== 'pending') {
        orders.push(answer.body);
        break;
      }
      if (Date.now() > deadline) {
        throw new Error(`order ${id} has not ended within ${timeoutMs} ms: ${JSON.stringify(answer?.body)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  // Compensations (releases, refunds) travel after the order's end: wait for the books to balance.
  let problems: string[] = [];
  while (Date.now() <= deadline) {
    problems = [
      ...ledgerProblems(orders, await client.charges()),
      ...(await stockProblems(client, orders, catalog)),
    ];
    if (problems.length === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  expect(problems).toEqual([]);
  return orders;
}

async function stockProblems(client: ShopClient, orders: readonly OrderView[], catalog: ChaosCatalog) {
  const problems: string[] = [];
  for (const [productId, initial] of catalog.initial) {
    const product = await client.product(productId);
    const sold = orders
      .filter((o) => o.status === 'confirmed')
      .flatMap((o) => o.items)
      .filter((item) => item.productId === productId)
      .reduce((n, item) => n + item.quantity, 0);
    if (product.reserved !== 0) problems.push(`${productId}: ${product.reserved} still reserved`);
    if (product.stock + product.reserved + sold !== initial) {
      problems.push(
        `${productId}: stock ${product.stock} + reserved ${product.reserved} + sold ${sold} ≠ ${initial}`,
      );
    }
  }
  return problems;
}
