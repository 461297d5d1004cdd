/**
 * The orders service over HTTP, on a memory bus and a memory store, with small fakes answering for
 * inventory and payments as those services do (by message). Each test gets its own broker and store.
 */
import { randomUUID } from 'node:crypto';
import {
  createBus,
  createEventStore,
  createOutbox,
  type EventStore,
  HttpProblemError,
  silentLogger,
} from 'ferry';
import { waitFor } from 'ferry/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { shopContracts } from '../contracts.js';
import { postWithHeaderLines } from '../raw-post.js';
import { type OrdersService, startOrdersService } from './service.js';

interface Shop {
  readonly url: string;
  /** Every instance's URL (the first is `url`). */
  readonly urls: readonly string[];
  readonly store: EventStore;
  /** Commands the fakes received, by type, as order ids. */
  readonly received: Record<string, string[]>;
  /** Stock the fake inventory holds, by product. */
  readonly stock: Map<string, number>;
  /** While false, looking up a user or product fails as an unreachable service does (503). */
  lookups: { up: boolean };
  /** How long the fake inventory takes to answer a reservation (a backlog ahead of it), ms. */
  inventory: { delayMs: number };
  /** How long the fake payments take to answer a charge (a slow payment provider), ms. */
  payments: { delayMs: number };
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function startShop(
  options: {
    sagaTimeoutMs?: number;
    lookupMs?: number;
    backlogLimitMs?: number;
    backlogMinPending?: number;
    instances?: number;
  } = {},
): Promise<Shop> {
  const name = `orders-test-${randomUUID()}`;
  const bus = await createBus({
    url: `memory://${name}`,
    service: 'orders',
    contracts: shopContracts,
    logger: silentLogger,
  });
  const store = await createEventStore({ url: `memory://${name}` });
  // Closed after the service, whose saga and handlers no longer settle what it sent them: waiting
  // for them at close (5 s by default) would only slow the tests down.
  const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: { settleOnCloseMs: 0 } });
  closers.push(
    () => store.close(),
    () => bus.close(),
    () => outbox.close(),
  );

  const received: Record<string, string[]> = {};
  const note = (type: string, orderId: string) => {
    received[type] = [...(received[type] ?? []), orderId];
  };
  const stock = new Map([
    ['tea', 10],
    ['mug', 3],
  ]);
  // Fake inventory: reserves when every item is in stock.
  const inventory = { delayMs: 0 };
  await bus.subscribe(
    'inventory.reserve',
    async ({ data }) => {
      if (inventory.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, inventory.delayMs));
      note('inventory.reserve', data.orderId);
      const short = data.items.find((item) => (stock.get(item.productId) ?? 0) < item.quantity);
      if (short !== undefined) {
        await bus.publish('inventory.unavailable', { orderId: data.orderId, productId: short.productId });
        return;
      }
      for (const item of data.items) stock.set(item.productId, stock.get(item.productId)! - item.quantity);
      await bus.publish('inventory.reserved', { orderId: data.orderId });
    },
    { group: 'inventory' },
  );
  for (const type of [
    'inventory.release',
    'inventory.commit',
    'payment.refund',
    'order.cancellation-requested',
  ] as const) {
    await bus.subscribe(type, ({ data }) => note(type, (data as { orderId: string }).orderId), {
      group: 'fakes',
    });
  }
  // Fake payments: the payment method says what happens; `tok_silent` never answers.
  const payments = { delayMs: 0 };
  await bus.subscribe(
    'payment.charge',
    async ({ data }) => {
      note('payment.charge', data.orderId);
      if (payments.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, payments.delayMs));
      const { orderId, amount, paymentMethod } = data;
      if (paymentMethod === 'tok_visa') {
        await bus.publish('payment.processed', { orderId, chargeId: `ch_${orderId}`, amount });
      } else if (paymentMethod === 'tok_chargeDeclined') {
        await bus.publish('payment.declined', { orderId, reason: 'payment_declined' });
      } else if (paymentMethod === 'tok_unavailable') {
        await bus.publish('payment.declined', { orderId, reason: 'payment_unavailable' });
      }
    },
    { group: 'payments' },
  );

  const users = new Set(['u-1']);
  const products = new Map<string, { id: string; price: number }>([
    ['tea', { id: 'tea', price: 450 }],
    ['mug', { id: 'mug', price: 1200 }],
    ['ghost', { id: 'ghost', price: Number.NaN }],
  ]);
  const reachable = { up: true };
  const unreachable = () =>
    new HttpProblemError(503, undefined, { detail: 'The users service cannot be reached.' });
  const start = (): Promise<OrdersService> =>
    startOrdersService({
      bus,
      store,
      outbox,
      logger: silentLogger,
      sagaTimeoutMs: options.sagaTimeoutMs ?? 30_000,
      ...(options.backlogLimitMs === undefined ? {} : { backlogLimitMs: options.backlogLimitMs }),
      ...(options.backlogMinPending === undefined ? {} : { backlogMinPending: options.backlogMinPending }),
      lookups: {
        findUser: async (id) => {
          if (!reachable.up) throw unreachable();
          // As a call to the users service takes its time.
          if (options.lookupMs !== undefined)
            await new Promise((resolve) => setTimeout(resolve, options.lookupMs));
          return users.has(id) ? { id } : undefined;
        },
        findProduct: async (id) => {
          if (!reachable.up) throw unreachable();
          return products.get(id);
        },
      },
    });
  // Instances of orders on the same bus and store compete for the saga's messages, as processes do.
  const services: OrdersService[] = [];
  for (let i = 0; i < (options.instances ?? 1); i++) services.push(await start());
  closers.push(() => Promise.all(services.map((service) => service.close())).then(() => {}));
  const [service] = services as [OrdersService];
  return {
    url: service.url,
    urls: services.map((s) => s.url),
    store,
    received,
    stock,
    lookups: reachable,
    inventory,
    payments,
  };
}

async function call(
  shop: Shop,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${shop.url}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
}

const order = (paymentMethod?: string, items = [{ productId: 'tea', quantity: 2 }]) => ({
  userId: 'u-1',
  items,
  ...(paymentMethod === undefined ? {} : { paymentMethod }),
});

async function place(shop: Shop, body: unknown): Promise<string> {
  const res = await call(shop, 'POST', '/orders', body);
  expect(res.status).toBe(201);
  return res.body.id;
}

/** Waits until the order is confirmed or cancelled, and returns it. */
async function settled(shop: Shop, id: string) {
  let view: { status: string; reason?: string; items: unknown; history: { event: string }[] } | undefined;
  await waitFor(async () => {
    view = (await call(shop, 'GET', `/orders/${id}`)).body;
    return view?.status !== 'pending';
  }, `order ${id} to end`);
  return view!;
}

async function storedOrders(store: EventStore): Promise<number> {
  let n = 0;
  for await (const _ of store.readAll({ types: ['OrderPlaced'] })) n++;
  return n;
}

describe('orders service', () => {
  it('places an order, answers 201 pending with its total, and confirms it', async () => {
    const shop = await startShop();
    const res = await call(
      shop,
      'POST',
      '/orders',
      order(undefined, [
        { productId: 'tea', quantity: 2 },
        { productId: 'mug', quantity: 1 },
      ]),
    );
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      userId: 'u-1',
      status: 'pending',
      total: 2100,
      paymentMethod: 'tok_visa',
    });
    expect(res.headers.get('location')).toBe(`/orders/${res.body.id}`);

    const view = await settled(shop, res.body.id);
    expect(view).toMatchObject({ id: res.body.id, status: 'confirmed', total: 2100 });
    expect(view.reason).toBeUndefined();
    expect(view.items).toEqual([
      { productId: 'tea', quantity: 2, price: 450 },
      { productId: 'mug', quantity: 1, price: 1200 },
    ]);
    expect(view.history.map((h: { event: string }) => h.event)).toEqual(['placed', 'confirmed']);
    await waitFor(() => shop.received['inventory.commit']?.length === 1, 'the stock committed');
    expect(shop.received['payment.charge']).toEqual([res.body.id]);
    expect(shop.received['inventory.release']).toBeUndefined();
  });

  it('cancels out_of_stock when inventory cannot reserve, charging nothing', async () => {
    const shop = await startShop();
    const id = await place(shop, order('tok_visa', [{ productId: 'mug', quantity: 4 }]));
    const view = await settled(shop, id);
    expect(view).toMatchObject({ status: 'cancelled', reason: 'out_of_stock' });
    expect(view.history.at(-1)).toMatchObject({ event: 'cancelled', reason: 'out_of_stock' });
    expect(shop.received['payment.charge']).toBeUndefined();
  });

  for (const [method, reason] of [
    ['tok_chargeDeclined', 'payment_declined'],
    ['tok_unavailable', 'payment_unavailable'],
  ] as const) {
    it(`cancels ${reason} and releases the stock when payments says so`, async () => {
      const shop = await startShop();
      const id = await place(shop, order(method));
      expect(await settled(shop, id)).toMatchObject({ status: 'cancelled', reason });
      await waitFor(() => shop.received['inventory.release']?.length === 1, 'the stock released');
      expect(shop.received['inventory.commit']).toBeUndefined();
    });
  }

  it('cancels timeout when payments never answers, releasing stock and refunding', async () => {
    const shop = await startShop({ sagaTimeoutMs: 300 });
    const id = await place(shop, order('tok_silent'));
    expect(await settled(shop, id)).toMatchObject({ status: 'cancelled', reason: 'timeout' });
    await waitFor(
      () => shop.received['inventory.release']?.length === 1 && shop.received['payment.refund']?.length === 1,
      'release and refund',
    );
  });

  it('cancels a pending order at the customer’s request, harmlessly twice', async () => {
    const shop = await startShop();
    const id = await place(shop, order('tok_silent'));
    await waitFor(() => shop.received['payment.charge']?.length === 1, 'the charge');
    const first = await call(shop, 'POST', `/orders/${id}/cancel`);
    expect(first.status).toBe(202);
    expect(first.body).toMatchObject({ id, cancellationRequested: true });
    expect((await call(shop, 'POST', `/orders/${id}/cancel`)).status).toBe(202);
    expect(await settled(shop, id)).toMatchObject({ status: 'cancelled', reason: 'cancelled_by_customer' });
    await waitFor(
      () => shop.received['inventory.release']?.length === 1 && shop.received['payment.refund']?.length === 1,
      'release and refund',
    );
    expect(shop.received['order.cancellation-requested']).toEqual([id]);
  });

  it('cancels a confirmed order: refund and release; again is harmless', async () => {
    const shop = await startShop();
    const id = await place(shop, order());
    expect(await settled(shop, id)).toMatchObject({ status: 'confirmed' });
    expect((await call(shop, 'POST', `/orders/${id}/cancel`)).status).toBe(202);
    await waitFor(
      async () => (await call(shop, 'GET', `/orders/${id}`)).body.status === 'cancelled',
      'cancelled',
    );
    const view = (await call(shop, 'GET', `/orders/${id}`)).body;
    expect(view).toMatchObject({ status: 'cancelled', reason: 'cancelled_by_customer' });
    expect(view.history.map((h: { event: string }) => h.event)).toEqual([
      'placed',
      'confirmed',
      'cancellation_requested',
      'cancelled',
    ]);
    await waitFor(
      () => shop.received['inventory.release']?.length === 1 && shop.received['payment.refund']?.length === 1,
      'release and refund',
    );
    const again = await call(shop, 'POST', `/orders/${id}/cancel`);
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ status: 'cancelled', reason: 'cancelled_by_customer' });
    expect(shop.received['order.cancellation-requested']).toEqual([id]);
  });

  it('cancels whatever body comes with the request, none under a JSON content type included', async () => {
    const shop = await startShop();
    const id = await place(shop, order('tok_silent'));
    const bodies: [string, Record<string, string>, string | undefined][] = [
      ['JSON content type, empty body', { 'content-type': 'application/json' }, undefined],
      ['JSON content type, empty string', { 'content-type': 'application/json' }, ''],
      ['a JSON object', { 'content-type': 'application/json' }, '{"reason":"changed my mind"}'],
      ['malformed JSON', { 'content-type': 'application/json' }, '{"reason":'],
      ['text', { 'content-type': 'text/plain' }, 'please'],
      ['no content type', {}, 'please'],
      [
        'with an idempotency key',
        { 'content-type': 'application/json', 'idempotency-key': randomUUID() },
        '',
      ],
    ];
    for (const [what, headers, body] of bodies) {
      const res = await fetch(`${shop.url}/orders/${id}/cancel`, {
        method: 'POST',
        headers,
        ...(body === undefined ? {} : { body }),
      });
      expect(res.status, what).toBe(202);
      expect(await res.json(), what).toMatchObject({ id });
    }
    expect(await settled(shop, id)).toMatchObject({ status: 'cancelled', reason: 'cancelled_by_customer' });
    expect((await call(shop, 'POST', `/orders/${randomUUID()}/cancel`, '')).status).toBe(404);
  });

  it('answers 404 for an unknown order, to read or to cancel', async () => {
    const shop = await startShop();
    for (const path of [`/orders/${randomUUID()}`, '/orders/not-an-id', `/orders/${'x'.repeat(90)}`]) {
      const res = await call(shop, 'GET', path);
      expect(res.status).toBe(404);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    expect((await call(shop, 'POST', `/orders/${randomUUID()}/cancel`)).status).toBe(404);
    expect((await call(shop, 'POST', '/orders/nope/cancel')).status).toBe(404);
  });

  it('refuses bad input with 400 problem+json and stores nothing', async () => {
    const shop = await startShop();
    const bad: unknown[] = [
      {},
      { userId: 42, items: [{ productId: 'tea', quantity: 1 }] },
      { userId: 'u-1', items: [] },
      { userId: 'u-1', items: 'tea' },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: 1.5 }] },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: 0 }] },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: -1 }] },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: '2' }] },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: 1 }], paymentMethod: 7 },
      // A member the shop does not know, likely a misspelling: ignored, it would have charged the
      // default card instead of the one meant, or set nothing the client thinks it set.
      { userId: 'u-1', items: [{ productId: 'tea', quantity: 1 }], paymentmethod: 'tok_chargeDeclined' },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: 1 }], total: 0 },
      { userId: 'u-1', items: [{ productId: 'tea', quantity: 1, price: 0 }] },
      { userId: 'u-1', items: [{ productId: 'tea', qty: 2, quantity: 1 }] },
      {
        userId: 'u-1',
        items: [
          { productId: 'tea', quantity: 1 },
          { productId: 'tea', quantity: 1 },
        ],
      },
      [1, 2],
      null,
      '{"userId": "u-1", "items": [',
      '{"userId":"u-1","items":[{"productId":"tea","quantity":1}],"__proto__":{"admin":true}}',
      // Text the stores cannot keep, nor a URL carry: refused here, not a 500 from the store or a lookup.
      { ...order(), paymentMethod: 'tok_visa\u0000' },
      '{"userId":"u-1","items":[{"productId":"tea","quantity":1}],"paymentMethod":"\\ud800"}',
      { ...order(), paymentMethod: 'tok\nvisa' },
      { ...order(), userId: 'u-1\u0000' },
      '{"userId":"\\udc00","items":[{"productId":"tea","quantity":1}]}',
      // Nested 5000 levels deep, as an object and as an array.
      `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`,
      `${'['.repeat(5000)}${']'.repeat(5000)}`,
      `{"userId":"u-1","items":[${'['.repeat(5000)}${']'.repeat(5000)}]}`,
    ];
    for (const body of bad) {
      const res = await call(shop, 'POST', '/orders', body === null ? 'null' : body);
      expect(res.status, JSON.stringify(body).slice(0, 200)).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    const deepWithKey = await call(shop, 'POST', '/orders', `${'['.repeat(5000)}${']'.repeat(5000)}`, {
      'idempotency-key': randomUUID(),
    });
    expect(deepWithKey.status).toBe(400);
    const text = await fetch(`${shop.url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hi',
    });
    // Fastify reads text/plain as a string, which fails validation; a type it has no parser for is 415.
    expect(text.status).toBe(400);
    const xml = await fetch(`${shop.url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/xml' },
      body: '<order/>',
    });
    expect(xml.status).toBe(415);
    expect(xml.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const huge = await call(shop, 'POST', '/orders', { ...order(), pad: 'x'.repeat(2_000_000) });
    expect(huge.status).toBe(413);
    expect(await storedOrders(shop.store)).toBe(0);
  });

  it('refuses a member it does not know with 400 naming it: a misspelling charges nothing', async () => {
    const shop = await startShop();
    const typo = await call(shop, 'POST', '/orders', { ...order(), paymentmethod: 'tok_chargeDeclined' });
    expect(typo.status).toBe(400);
    expect(typo.body).toMatchObject({
      errors: [{ path: 'body', message: 'Unrecognized key: "paymentmethod"' }],
    });
    const inItem = await call(shop, 'POST', '/orders', {
      ...order(),
      items: [{ productId: 'tea', quantity: 1, price: 0.01 }],
    });
    expect(inItem.status).toBe(400);
    expect(inItem.body).toMatchObject({
      errors: [{ path: 'body.items.0', message: 'Unrecognized key: "price"' }],
    });
    expect(await storedOrders(shop.store)).toBe(0);
  });

  it('refuses an unknown user or product with 422 naming it, and stores nothing', async () => {
    const shop = await startShop();
    const user = await call(shop, 'POST', '/orders', { ...order(), userId: 'u-404' });
    expect(user.status).toBe(422);
    expect(user.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(user.body).toMatchObject({ title: 'Unknown user', userId: 'u-404' });

    const products = await call(
      shop,
      'POST',
      '/orders',
      order(undefined, [
        { productId: 'tea', quantity: 1 },
        { productId: 'kettle', quantity: 1 },
        { productId: 'ghost', quantity: 1 },
      ]),
    );
    expect(products.status).toBe(422);
    expect(products.body).toMatchObject({ title: 'Unknown product', productIds: ['kettle', 'ghost'] });
    expect(await storedOrders(shop.store)).toBe(0);
  });

  it('replays the first answer to a repeated Idempotency-Key; another body with it gets 422', async () => {
    const shop = await startShop();
    const key = { 'idempotency-key': randomUUID() };
    const first = await call(shop, 'POST', '/orders', order(), key);
    const second = await call(shop, 'POST', '/orders', order(), key);
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.body).toEqual(first.body);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    // The same data with its members in another order is the same body.
    const reordered = await call(
      shop,
      'POST',
      '/orders',
      `{"items":[{"quantity":2,"productId":"tea"}], "userId":"u-1"}`,
      key,
    );
    expect(reordered.status).toBe(201);
    expect(reordered.body).toEqual(first.body);
    expect(reordered.headers.get('idempotent-replayed')).toBe('true');
    // The key in double quotes is the same key (as the middleware reads it): the same order.
    const quoted = await call(shop, 'POST', '/orders', order(), {
      'idempotency-key': `"${key['idempotency-key']}"`,
    });
    expect(quoted.status).toBe(201);
    expect(quoted.body).toEqual(first.body);
    const other = await call(shop, 'POST', '/orders', order('tok_chargeDeclined'), key);
    expect(other.status).toBe(422);
    expect(other.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await storedOrders(shop.store)).toBe(1);
  });

  it('refuses with 400 a key sent on two header lines, placing nothing: read as one joined value it named no order', async () => {
    const shop = await startShop();
    const key = randomUUID();
    expect((await call(shop, 'POST', '/orders', order(), { 'idempotency-key': key })).status).toBe(201);
    for (const lines of [
      ['idempotency-key', key, 'Idempotency-Key', key],
      ['idempotency-key', key, 'idempotency-key', randomUUID()],
    ]) {
      const twice = await postWithHeaderLines(`${shop.url}/orders`, JSON.stringify(order()), lines);
      expect(twice.status).toBe(400);
      expect(twice.type).toMatch(/^application\/problem\+json/);
      expect(twice.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
    }
    expect(await storedOrders(shop.store)).toBe(1);
  });

  // As Stripe does: a request refused for what it says did nothing, so its key is not spent on it.
  it.each([
    ['400: a quantity of 0', { ...order(), items: [{ productId: 'tea', quantity: 0 }] }, 400],
    ['400: no items', { ...order(), items: [] }, 400],
    ['422: an unknown user', { ...order(), userId: 'ghost' }, 422],
    ['422: an unknown product', order(undefined, [{ productId: 'ghost', quantity: 1 }]), 422],
  ])(
    'does not spend an Idempotency-Key on a request refused (%s): corrected, it is placed',
    async (_, bad, status) => {
      const shop = await startShop();
      const key = { 'idempotency-key': randomUUID() };
      const refused = await call(shop, 'POST', '/orders', bad, key);
      expect(refused.status).toBe(status);
      expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      const corrected = await call(shop, 'POST', '/orders', order(), key);
      expect(corrected.status).toBe(201);
      expect(corrected.headers.get('idempotent-replayed')).toBeNull();
      // The key now holds the order placed: replayed, and another body refused.
      const again = await call(shop, 'POST', '/orders', order(), key);
      expect([again.status, again.body.id, again.headers.get('idempotent-replayed')]).toEqual([
        201,
        corrected.body.id,
        'true',
      ]);
      expect((await call(shop, 'POST', '/orders', bad, key)).status).toBe(status === 400 ? 400 : 422);
      expect(await storedOrders(shop.store)).toBe(1);
    },
  );

  it('places the corrected order sent while the refused one is still being checked with the same key', async () => {
    // The refused request once held the key while it looked the user up: the corrected one, arriving
    // meanwhile, was told 422 "Idempotency key reused" — a final answer for a key that was not spent.
    const shop = await startShop({ lookupMs: 150 });
    const key = { 'idempotency-key': randomUUID() };
    const refused = call(shop, 'POST', '/orders', { ...order(), userId: 'ghost' }, key);
    await new Promise((resolve) => setTimeout(resolve, 30));
    const corrected = call(shop, 'POST', '/orders', order(), key);
    expect((await refused).status).toBe(422);
    expect((await refused).body).toMatchObject({ title: 'Unknown user' });
    expect((await corrected).status).toBe(201);
    expect(await storedOrders(shop.store)).toBe(1);
  });

  it('answers an order its key placed from the order alone: the user and products not looked up, items in any order', async () => {
    // Before, a request sent again looked the user and products up first: with the users service
    // frozen, a client could not learn the outcome of an order that existed (504, again and again).
    const shop = await startShop();
    const key = { 'idempotency-key': randomUUID() };
    const items = [
      { productId: 'tea', quantity: 2 },
      { productId: 'mug', quantity: 1 },
    ];
    const first = await call(shop, 'POST', '/orders', { userId: 'u-1', items }, key);
    expect(first.status).toBe(201);
    shop.lookups.up = false;
    const again = await call(shop, 'POST', '/orders', { userId: 'u-1', items }, key);
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    // The same items listed the other way round are the same order (they were 422).
    const reversed = await call(shop, 'POST', '/orders', { userId: 'u-1', items: [...items].reverse() }, key);
    expect(reversed.status).toBe(201);
    expect(reversed.body).toEqual(first.body);
    // Another order for the key is still refused, and a new one cannot be placed meanwhile.
    const other = await call(shop, 'POST', '/orders', { userId: 'u-1', items: items.slice(1) }, key);
    expect(other.status).toBe(422);
    expect(other.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_MISMATCH' });
    expect((await call(shop, 'POST', '/orders', order(), { 'idempotency-key': randomUUID() })).status).toBe(
      503,
    );
    expect(await storedOrders(shop.store)).toBe(1);
  });

  it('places one order per Idempotency-Key: copies sent at once all get its 201, with no answer kept anywhere', async () => {
    // The key names the order, and nothing else is kept: copies sent together, and a request sent
    // again after a crash between the order's commit and its answer, find the order the key placed.
    // (Before, the idempotency middleware also kept each answer, and after a crash held the key for
    // 30 s: 409 meanwhile.)
    const shop = await startShop({ lookupMs: 20 });
    const key = { 'idempotency-key': randomUUID() };
    const copies = await Promise.all(
      Array.from({ length: 8 }, () => call(shop, 'POST', '/orders', order(), key)),
    );
    expect(copies.map((copy) => copy.status)).toEqual(Array<number>(8).fill(201));
    const first = copies.find((copy) => copy.headers.get('idempotent-replayed') === null)!;
    for (const copy of copies) expect(copy.body).toEqual(first.body);
    expect(copies.filter((copy) => copy.headers.get('idempotent-replayed') === 'true')).toHaveLength(7);
    // The default payment method spelled out is the same order (it was 422: another body).
    const spelled = await call(shop, 'POST', '/orders', { ...order(), paymentMethod: 'tok_visa' }, key);
    expect(spelled.status).toBe(201);
    expect(spelled.headers.get('location')).toBe(`/orders/${first.body.id}`);
    const other = await call(shop, 'POST', '/orders', order('tok_chargeDeclined'), key);
    expect(other.status).toBe(422);
    expect(other.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_MISMATCH' });
    expect(await storedOrders(shop.store)).toBe(1);
    await waitFor(() => (shop.received['payment.charge'] ?? []).length === 1, 'the one charge');
    // Without a key, each request is an order of its own.
    await place(shop, order());
    await place(shop, order());
    expect(await storedOrders(shop.store)).toBe(3);
  });

  it('refuses new orders with 503 and Retry-After while those placed wait too long for their stock, storing nothing; takes them again once they do not', async () => {
    // The saga is behind when an order placed now would wait longer than the limit for its stock
    // (here: the one order placed waits, and no reservation has been answered to tell a rate).
    // What must hold: a refused order stores nothing and does not spend its key; an order placed
    // before is still answered; orders are taken again once the wait is over.
    const shop = await startShop({ backlogLimitMs: 300 });
    shop.inventory.delayMs = 1500;
    const first = await call(shop, 'POST', '/orders', order(), { 'idempotency-key': 'before' });
    expect(first.status).toBe(201);
    // Below the limit: taken.
    const second = await call(shop, 'POST', '/orders', order(), { 'idempotency-key': 'second' });
    expect(second.status).toBe(201);
    await new Promise((resolve) => setTimeout(resolve, 400));

    const refused = await call(shop, 'POST', '/orders', order(), { 'idempotency-key': 'refused' });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.body).toMatchObject({ status: 503, code: 'ORDERS_BACKED_UP' });
    expect(await storedOrders(shop.store)).toBe(2);
    // The order placed before is answered, as its key placed it.
    const again = await call(shop, 'POST', '/orders', order(), { 'idempotency-key': 'before' });
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(first.body.id);
    // Bad input is still the caller's: 400, not 503; an unknown user or product 422.
    expect((await call(shop, 'POST', '/orders', { userId: 'u-1', items: [] })).status).toBe(400);
    expect((await call(shop, 'POST', '/orders', { ...order(), userId: 'nobody' })).status).toBe(422);
    expect(
      (await call(shop, 'POST', '/orders', order(undefined, [{ productId: 'nothing', quantity: 1 }]))).status,
    ).toBe(422);

    // Once both have ended (confirmed: the saga has heard of their end), orders are taken again.
    shop.inventory.delayMs = 0;
    expect(await settled(shop, first.body.id)).toMatchObject({ status: 'confirmed' });
    expect(await settled(shop, second.body.id)).toMatchObject({ status: 'confirmed' });
    const taken = await call(shop, 'POST', '/orders', order(), { 'idempotency-key': 'refused' });
    expect(taken.status).toBe(201);
    expect(taken.headers.get('idempotent-replayed')).toBeNull();
    expect(await storedOrders(shop.store)).toBe(3);
  });

  it('takes every order while reservations are answered within the limit', async () => {
    const shop = await startShop({ backlogLimitMs: 1000 });
    shop.inventory.delayMs = 100;
    for (let i = 0; i < 5; i++) await place(shop, order(undefined, [{ productId: 'tea', quantity: 1 }]));
    await waitFor(() => shop.received['payment.charge']?.length === 5, 'the reservations answered');
    await place(shop, order(undefined, [{ productId: 'tea', quantity: 1 }]));
  });

  it('is not kept refusing by an order its customer cancelled while its stock was being reserved', async () => {
    // That order gets no answer the saga tells of: counted as waiting, it kept an idle shop
    // refusing every order for good (none taken, none answered to pass it by).
    const shop = await startShop({ backlogLimitMs: 300 });
    shop.inventory.delayMs = 2000;
    const id = await place(shop, order());
    expect((await call(shop, 'POST', `/orders/${id}/cancel`)).status).toBe(202);
    expect(await settled(shop, id)).toMatchObject({ status: 'cancelled', reason: 'cancelled_by_customer' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await call(shop, 'POST', '/orders', order())).status).toBe(201);
  });

  it('with two instances, takes a trickle of orders whose answers the other instance heard', async () => {
    // Each instance's saga hears a share of the answers; an instance that placed an order and heard
    // none since took it as waiting still, and refused the next order past the limit.
    const shop = await startShop({ backlogLimitMs: 300, instances: 2 });
    const first = shop.urls[0] as string;
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const placed = await fetch(`${first}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(order(undefined, [{ productId: 'tea', quantity: 1 }])),
      });
      statuses.push(placed.status);
      if (placed.status === 201) await settled(shop, ((await placed.json()) as { id: string }).id);
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
    expect(statuses).toEqual([201, 201, 201, 201, 201, 201]);
  });

  it('refuses new orders while those placed wait too long to be charged (a slow payment provider), not only for their stock', async () => {
    // Their stock answered at once, the orders still waited for their charge past their deadline:
    // the shop went on taking orders that ended `timeout`.
    const shop = await startShop({ backlogLimitMs: 300 });
    shop.payments.delayMs = 1500;
    const first = await place(shop, order(undefined, [{ productId: 'tea', quantity: 1 }]));
    await waitFor(() => shop.received['payment.charge']?.length === 1, 'the charge sent');
    await new Promise((resolve) => setTimeout(resolve, 400));
    const refused = await call(
      shop,
      'POST',
      '/orders',
      order(undefined, [{ productId: 'tea', quantity: 1 }]),
    );
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ code: 'ORDERS_BACKED_UP' });
    shop.payments.delayMs = 0;
    expect(await settled(shop, first)).toMatchObject({ status: 'confirmed' });
    expect(
      (await call(shop, 'POST', '/orders', order(undefined, [{ productId: 'tea', quantity: 1 }]))).status,
    ).toBe(201);
  });

  it('takes no more than minPending orders at once on an idle shop before any of them ends', async () => {
    // Until orders end there is no telling how fast they can: a burst on an idle shop whose orders
    // are slow even alone (a slow payment provider) was taken whole, and ended in timeouts.
    const shop = await startShop({ backlogMinPending: 3 });
    shop.payments.delayMs = 1000;
    const tea = order(undefined, [{ productId: 'tea', quantity: 1 }]);
    const burst = await Promise.all(Array.from({ length: 5 }, () => call(shop, 'POST', '/orders', tea)));
    const statuses = burst.map((answer) => answer.status).sort();
    expect(statuses).toEqual([201, 201, 201, 503, 503]);
    expect(burst.find((answer) => answer.status === 503)?.headers.get('retry-after')).toBe('1');
    expect(await storedOrders(shop.store)).toBe(3);
    shop.payments.delayMs = 0;
    for (const answer of burst.filter((a) => a.status === 201)) {
      expect(await settled(shop, answer.body.id)).toMatchObject({ status: 'confirmed' });
    }
    expect((await call(shop, 'POST', '/orders', tea)).status).toBe(201);
  });
});
