/**
 * The shop end to end, through the gateway only, in both modes: embedded (one process, SQLite
 * files, the in-memory bus) and distributed (a process per service, PostgreSQL and RabbitMQ). What a
 * user of `npm start` and `npm run start:distributed` relies on.
 */
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATALOG } from '../catalog.js';
import { ledgerProblems, type OrderView, type ShopClient } from './shop-client.js';
import { type Mode, openShop, type ShopTuning, type ShopUnderTest } from './shops.js';

describe.each<Mode>(['embedded', 'distributed'])('the %s shop', (mode) => {
  let shop: ShopUnderTest;
  let client: ShopClient;
  const opened: ShopUnderTest[] = [];

  async function open(tuning: ShopTuning): Promise<ShopUnderTest> {
    const s = await openShop(mode, tuning);
    opened.push(s);
    return s;
  }

  beforeAll(async () => {
    // A short give-up time, so that the unavailable path ends within a test.
    shop = await open({ paymentGiveUpMs: 4000 });
    client = shop.client;
  }, 120_000);

  afterAll(async () => {
    for (const s of opened.splice(0)) await s.close();
  }, 60_000);

  it('is healthy once started, with its catalog seeded', async () => {
    const health = await client.call<{ status: string }>('GET', '/health');
    expect(health.status).toBe(200);
    expect(health.body.status).toBe('ok');
    for (const product of CATALOG) {
      expect(await client.product(product.id)).toMatchObject({ id: product.id, price: product.price });
    }
    if (mode === 'distributed') {
      // Seeded once orders had bound its queue: no inventory.updated refused as unroutable (a warning
      // each, retried a second later).
      expect(shop.output()).not.toMatch(/no subscription matches message type "inventory\.updated"/);
    }
  });

  it('confirms an order: stock sold, one charge of the total at the provider', async () => {
    const user = await client.createUser();
    const before = await client.product('green-tea');
    const placed = await client.order(user.id, [{ productId: 'green-tea', quantity: 2 }]);
    expect(placed).toMatchObject({ status: 'pending', total: 900, userId: user.id });
    const order = await client.settled(placed.id);
    expect(order.status).toBe('confirmed');
    expect(order.history.map((h) => h.event)).toEqual(['placed', 'confirmed']);
    // The saga sends inventory.commit as it confirms: the reservation turns into a sale a moment later.
    await expectStock('green-tea', { stock: before.stock - 2, reserved: 0 });
    expect(ledgerProblems([order], await client.charges())).toEqual([]);
    expect((await client.charges()).filter((c) => c.orderId === order.id)).toHaveLength(1);
  });

  it('cancels a declined order (payment_declined): stock back, nothing charged', async () => {
    const user = await client.createUser();
    const product = await client.addProduct(5);
    const placed = await client.order(
      user.id,
      [{ productId: product.id, quantity: 2 }],
      'tok_chargeDeclined',
    );
    const order = await client.settled(placed.id);
    expect(order).toMatchObject({ status: 'cancelled', reason: 'payment_declined' });
    await expectStock(product.id, { stock: 5, reserved: 0 });
    expect(ledgerProblems([order], await client.charges())).toEqual([]);
  });

  it('cancels an order it cannot fill (out_of_stock), taking nothing', async () => {
    const user = await client.createUser();
    const product = await client.addProduct(1);
    const order = await client.settled(
      (await client.order(user.id, [{ productId: product.id, quantity: 2 }])).id,
    );
    expect(order).toMatchObject({ status: 'cancelled', reason: 'out_of_stock' });
    expect(await client.product(product.id)).toMatchObject({ stock: 1, reserved: 0 });
  });

  it('lets a customer cancel a confirmed order: refunded, stock back; cancelling again is harmless', async () => {
    const user = await client.createUser();
    const product = await client.addProduct(4);
    const order = await client.settled(
      (await client.order(user.id, [{ productId: product.id, quantity: 3 }])).id,
    );
    expect(order.status).toBe('confirmed');
    await client.expect(202, 'POST', `/orders/${order.id}/cancel`);
    const cancelled = await waitForStatus(order.id, 'cancelled');
    expect(cancelled.reason).toBe('cancelled_by_customer');
    await client.expect(202, 'POST', `/orders/${order.id}/cancel`);
    await expectStock(product.id, { stock: 4, reserved: 0 });
    await expectRefunded(order.id);
    expect((await client.getOrder(order.id)).history.filter((h) => h.event === 'cancelled')).toHaveLength(1);
  });

  it('gives up on an unavailable provider (payment_unavailable) and keeps no charge', async () => {
    const user = await client.createUser();
    const product = await client.addProduct(3);
    await client.setFaults({ failureRate: 1 });
    try {
      const order = await client.settled(
        (await client.order(user.id, [{ productId: product.id, quantity: 1 }])).id,
      );
      expect(order).toMatchObject({ status: 'cancelled', reason: 'payment_unavailable' });
    } finally {
      await client.setFaults({ failureRate: 0 });
    }
    await expectStock(product.id, { stock: 3, reserved: 0 });
  });

  it('cancels an order still pending at its deadline (timeout) and refunds the late charge', async () => {
    // A shop whose orders time out after 1.5 s, and a provider that answers after 2.5 s: the
    // charge lands after the deadline, and is refunded.
    const { client } = await open({ orderTimeoutMs: 1500 });
    const user = await client.createUser();
    const product = await client.addProduct(3);
    await client.setFaults({ latencyMs: 2500 });
    const order = await client.settled(
      (await client.order(user.id, [{ productId: product.id, quantity: 1 }])).id,
    );
    expect(order).toMatchObject({ status: 'cancelled', reason: 'timeout' });
    // Usually the charge was on its way and lands late: it must be refunded. On a slow machine the
    // deadline may come before the charge was even sent: the refund then voids the order at the
    // provider, which refuses the charge, and there must never be one. Either way no charge may
    // stay: watched until a refund shows, or for 10 s (every call takes 2.5 s: a charge sent before
    // the void lands well within that, and none is taken after it).
    const deadline = Date.now() + 10_000;
    for (;;) {
      const charges = (await client.charges()).filter((c) => c.orderId === order.id);
      if (charges.some((c) => c.refunded)) break;
      if (Date.now() > deadline) {
        expect(charges).toEqual([]);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await waitForCondition(async () => {
      const p = await client.product(product.id);
      return p.stock === 3 && p.reserved === 0;
    });
  }, 120_000);

  it('shows an order with the members of its items in the order the 201 had them, in both modes', async () => {
    const user = await client.createUser();
    const placed = await client.order(user.id, [{ productId: 'green-tea', quantity: 2 }]);
    const text = await (await fetch(`${client.url}/orders/${placed.id}`)).text();
    expect(text).toContain('"items":[{"productId":"green-tea","quantity":2,"price":450}]');
    await client.settled(placed.id);
  });

  it('replays a POST /orders with the same Idempotency-Key, and refuses the key with another body (422)', async () => {
    const user = await client.createUser();
    const key = { 'idempotency-key': randomUUID() };
    const first = await client.order(user.id, [{ productId: 'ceramic-mug', quantity: 1 }], undefined, key);
    // The answer is stored before it is sent: a repeat sent the moment it came back replays it,
    // with its keys in another order too (the same JSON).
    const again = await client.call<OrderView>(
      'POST',
      '/orders',
      { items: [{ quantity: 1, productId: 'ceramic-mug' }], userId: user.id },
      key,
    );
    expect(again.status).toBe(201);
    expect(again.body.id).toBe(first.id);
    const other = await client.call(
      'POST',
      '/orders',
      { userId: user.id, items: [{ productId: 'ceramic-mug', quantity: 2 }] },
      key,
    );
    expect(other.status).toBe(422);
    expect(other.type).toContain('application/problem+json');
    expect((await client.settled(first.id)).status).toBe('confirmed');
    expect((await client.charges()).filter((c) => c.orderId === first.id)).toHaveLength(1);
  });

  it('names the Idempotency-Key it used for a POST /orders sent without one: sent again with it, the order is not placed twice', async () => {
    const user = await client.createUser();
    const body = JSON.stringify({ userId: user.id, items: [{ productId: 'ceramic-mug', quantity: 1 }] });
    const post = (headers: Record<string, string> = {}) =>
      fetch(`${client.url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
    const first = await post();
    expect(first.status).toBe(201);
    const placed = (await first.json()) as OrderView;
    const key = first.headers.get('idempotency-key');
    expect(key).not.toBeNull();
    // What a client does after a 504 or a 5xx: the same request with the key the answer named.
    const again = await post({ 'idempotency-key': key as string });
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(((await again.json()) as OrderView).id).toBe(placed.id);
    expect((await client.settled(placed.id)).status).toBe('confirmed');
    expect((await client.charges()).filter((c) => c.orderId === placed.id)).toHaveLength(1);
  });

  it('does not spend an Idempotency-Key on a refused POST /orders: the corrected body with it is placed', async () => {
    const user = await client.createUser();
    const key = { 'idempotency-key': randomUUID() };
    const refused = await client.call(
      'POST',
      '/orders',
      { userId: user.id, items: [{ productId: 'ceramic-mug', quantity: 0 }] },
      key,
    );
    expect(refused.status).toBe(400);
    const placed = await client.call<OrderView>(
      'POST',
      '/orders',
      { userId: user.id, items: [{ productId: 'ceramic-mug', quantity: 1 }] },
      key,
    );
    expect(placed.status).toBe(201);
    expect((await client.settled(placed.body.id)).status).toBe('confirmed');
  });

  it('never oversells: 100 concurrent orders of 1 against 20 in stock', async () => {
    const product = await client.addProduct(20);
    const users = await Promise.all(Array.from({ length: 10 }, (_, i) => client.createUser(`U${i}`)));
    const placed = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        client.order((users[i % users.length] as { id: string }).id, [
          { productId: product.id, quantity: 1 },
        ]),
      ),
    );
    const orders = await Promise.all(placed.map((o) => client.settled(o.id, 60_000)));
    const confirmed = orders.filter((o) => o.status === 'confirmed');
    expect(confirmed).toHaveLength(20);
    expect(orders.filter((o) => o.status === 'cancelled').map((o) => o.reason)).toEqual(
      Array(80).fill('out_of_stock'),
    );
    await expectStock(product.id, { stock: 0, reserved: 0 });
    expect(ledgerProblems(orders, await client.charges())).toEqual([]);
  }, 90_000);

  describe('operator routes', () => {
    it('refuse a missing or wrong token with 401 and change nothing', async () => {
      for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: client.adminToken }]) {
        const put = await client.call('PUT', '/admin/faults/payment-provider', { failureRate: 1 }, headers);
        expect(put.status).toBe(401);
        expect(put.type).toContain('application/problem+json');
        expect((await client.call('GET', '/admin/payment-provider/charges', undefined, headers)).status).toBe(
          401,
        );
        expect(
          (await client.call('POST', '/products', { name: 'x', price: 1, stock: 1 }, headers)).status,
        ).toBe(401);
      }
      expect(
        await client.expect(200, 'GET', '/admin/faults/payment-provider', undefined, client.admin),
      ).toEqual({
        failureRate: 0,
        latencyMs: 0,
      });
    });

    it('take the token under the scheme written in any case (bearer, BEARER), as HTTP says', async () => {
      for (const scheme of ['bearer', 'BEARER']) {
        const authorization = { authorization: `${scheme} ${client.adminToken}` };
        expect(
          (await client.call('GET', '/admin/faults/payment-provider', undefined, authorization)).status,
        ).toBe(200);
        expect(
          (await client.call('GET', '/admin/payment-provider/charges', undefined, authorization)).status,
        ).toBe(200);
      }
    });

    it('refuse a fault switch out of range with 400', async () => {
      for (const faults of [
        { failureRate: 1.5 },
        { failureRate: -1 },
        { latencyMs: -5 },
        { failureRate: 'all' },
        { odd: 1 },
      ]) {
        const answer = await client.call('PUT', '/admin/faults/payment-provider', faults, client.admin);
        expect(answer.status, JSON.stringify(faults)).toBe(400);
      }
    });
  });

  describe('bad input: 4xx problem+json, nothing stored, never a 5xx', () => {
    it.each([
      ['malformed JSON', '{"userId": ', 400],
      ['a wrong type', { userId: 42, items: [] }, 400],
      ['no items', { items: [] }, 400],
      ['a fractional quantity', { items: [{ productId: 'green-tea', quantity: 1.5 }] }, 400],
      ['a zero quantity', { items: [{ productId: 'green-tea', quantity: 0 }] }, 400],
      ['a negative quantity', { items: [{ productId: 'green-tea', quantity: -1 }] }, 400],
      [
        'a misspelled member (paymentmethod)',
        { items: [{ productId: 'green-tea', quantity: 1 }], paymentmethod: 'tok_chargeDeclined' },
        400,
      ],
      ['a price in an item', { items: [{ productId: 'green-tea', quantity: 1, price: 0.01 }] }, 400],
      ['an unknown product', { items: [{ productId: 'no-such-product', quantity: 1 }] }, 422],
      ['an unknown user', { userId: 'no-such-user', items: [{ productId: 'green-tea', quantity: 1 }] }, 422],
      [
        'a __proto__ key',
        '{"userId":"u","items":[{"productId":"green-tea","quantity":1}],"__proto__":{"x":1}}',
        400,
      ],
      [
        'a NUL in the payment method',
        { items: [{ productId: 'green-tea', quantity: 1 }], paymentMethod: 'tok_visa\u0000' },
        400,
      ],
      [
        'a lone surrogate in the payment method',
        '{"userId":"u","items":[{"productId":"green-tea","quantity":1}],"paymentMethod":"\\ud800"}',
        400,
      ],
      ['a NUL in the user id', { userId: 'u\u0000', items: [{ productId: 'green-tea', quantity: 1 }] }, 400],
      [
        'a lone surrogate as the user id',
        '{"userId":"\\ud800","items":[{"productId":"green-tea","quantity":1}]}',
        400,
      ],
      ['an object nested 5000 levels deep', `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`, 400],
      ['an array nested 5000 levels deep', `${'['.repeat(5000)}${']'.repeat(5000)}`, 400],
    ] as const)('POST /orders with %s', async (_what, body, status) => {
      const user = await client.createUser();
      const before = {
        orders: await ordersStored(),
        stock: await client.product('green-tea'),
        charges: (await client.charges()).length,
      };
      const payload =
        typeof body === 'string'
          ? body.replace('"u"', JSON.stringify(user.id))
          : { userId: user.id, ...body };
      const answer = await client.call('POST', '/orders', payload);
      expect(answer.status).toBe(status);
      expect(answer.type).toContain('application/problem+json');
      await expectNothingOrdered(before);
    });

    it('refuses a non-JSON content type (415) and a 2 MB body (413)', async () => {
      const user = await client.createUser();
      const orders = await ordersStored();
      const text = await client.call('POST', '/orders', 'userId=x', { 'content-type': 'text/plain' });
      expect(text.status).toBe(415);
      expect(text.type).toContain('application/problem+json');
      // The gateway answers 413 as soon as it reads the length, and may close the connection while
      // a client still writes: read the answer whatever happens to the rest of the upload.
      const huge = await postEarlyAnswer(
        `${client.url}/orders`,
        JSON.stringify({
          userId: user.id,
          items: [{ productId: 'green-tea', quantity: 1 }],
          note: 'x'.repeat(2 * 1024 * 1024),
        }),
      );
      expect(huge.status).toBe(413);
      expect(huge.type).toContain('application/problem+json');
      expect(await ordersStored()).toBe(orders);
    });

    it('refuses a cancel whose body is not JSON (415) or malformed (400), and leaves the order as it was', async () => {
      const user = await client.createUser();
      const order = await client.order(user.id, [{ productId: 'green-tea', quantity: 1 }]);
      expect((await client.settled(order.id)).status).toBe('confirmed');
      const text = await client.call('POST', `/orders/${order.id}/cancel`, 'please', {
        'content-type': 'text/plain',
      });
      const malformed = await client.call('POST', `/orders/${order.id}/cancel`, '{"reason":');
      expect([text.status, malformed.status]).toEqual([415, 400]);
      expect(text.type).toContain('application/problem+json');
      const after = await client.getOrder(order.id);
      expect(after.status).toBe('confirmed');
      expect(after.history.map((h) => h.event)).toEqual(['placed', 'confirmed']);
    });

    it('answers 404 problems for unknown orders, users, products and routes', async () => {
      for (const path of [
        '/orders/not-an-id',
        `/orders/${randomUUID()}`,
        `/users/${randomUUID()}`,
        '/products/none',
        '/nowhere',
      ]) {
        const answer = await client.call('GET', path);
        expect(answer.status, path).toBe(404);
        expect(answer.type, path).toContain('application/problem+json');
      }
      expect((await client.call('POST', `/orders/${randomUUID()}/cancel`)).status).toBe(404);
    });

    it('answers a route asked with a method it does not serve with 405 naming the methods in Allow', async () => {
      for (const [method, path, allow] of [
        ['GET', '/orders', 'POST'],
        ['DELETE', `/orders/${randomUUID()}`, 'GET, HEAD'],
        ['GET', `/orders/${randomUUID()}/cancel`, 'POST'],
        ['PUT', '/users', 'POST'],
        ['PATCH', '/admin/faults/payment-provider', 'GET, HEAD, PUT'],
      ] as const) {
        const answer = await fetch(`${client.url}${path}`, { method });
        expect(answer.status, `${method} ${path}`).toBe(405);
        expect(answer.headers.get('allow'), `${method} ${path}`).toBe(allow);
        expect(answer.headers.get('content-type')).toContain('application/problem+json');
      }
    });

    it('refuses users with text the store cannot keep, or nested 5000 levels deep, with 400; takes 1 MB bodies', async () => {
      for (const body of [
        { name: 'A\u0000da', email: `nul-${randomUUID()}@example.com` },
        `{"name":"Ada \\ud800","email":"surrogate-${randomUUID()}@example.com"}`,
        `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`,
        `${'['.repeat(5000)}${']'.repeat(5000)}`,
      ]) {
        const answer = await client.call('POST', '/users', body);
        expect(answer.status, JSON.stringify(body).slice(0, 60)).toBe(400);
        expect(answer.type).toContain('application/problem+json');
      }
      // The README's 1 MB: spaces after the JSON count towards it.
      const padded = `{"name":"Ada","email":"big-${randomUUID()}@example.com"}${' '.repeat(1_000_000)}`;
      expect((await client.call('POST', '/users', padded)).status).toBe(201);
      const huge = await postEarlyAnswer(
        `${client.url}/users`,
        `{"name":"Ada"}${' '.repeat(2 * 1024 * 1024)}`,
      );
      expect(huge.status).toBe(413);
      expect(huge.type).toContain('application/problem+json');
      await client.createUser();
    });

    it('cancels an order with no body (even under a JSON content type) or a JSON one', async () => {
      const user = await client.createUser();
      const order = await client.order(user.id, [{ productId: 'green-tea', quantity: 1 }]);
      const empty = await client.call('POST', `/orders/${order.id}/cancel`, '');
      expect(empty.status).toBe(202);
      expect(
        (await client.call('POST', `/orders/${order.id}/cancel`, { reason: 'changed my mind' })).status,
      ).toBe(202);
      expect((await waitForStatus(order.id, 'cancelled')).reason).toBe('cancelled_by_customer');
    });

    it('replays POST /orders with the same Idempotency-Key and the same body with its members in another order', async () => {
      const user = await client.createUser();
      const key = { 'idempotency-key': randomUUID() };
      const items = [{ productId: 'ceramic-mug', quantity: 1 }];
      const post = (body: unknown) =>
        fetch(`${client.url}/orders`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...key },
          body: JSON.stringify(body),
        });
      const first = await post({ userId: user.id, items });
      expect(first.status).toBe(201);
      const firstText = await first.text();
      const again = await post({ items, userId: user.id });
      expect(again.status).toBe(201);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      // The first answer as it was sent, byte for byte (distributed, the replay's items had their
      // members in PostgreSQL's order).
      expect(await again.text()).toBe(firstText);
      const reordered = await client.call(
        'POST',
        '/orders',
        { userId: user.id, items: [...items, { productId: 'green-tea', quantity: 1 }].reverse() },
        key,
      );
      expect(reordered.status).toBe(422);
    });

    it('relays operator problems with the path called, and refuses a token that is not ASCII with 401', async () => {
      const faults = await client.call(
        'PUT',
        '/admin/faults/payment-provider',
        { failureRate: 5 },
        client.admin,
      );
      expect(faults.status).toBe(400);
      expect(faults.body).toMatchObject({ instance: '/admin/faults/payment-provider' });
      for (const [method, path] of [
        ['GET', '/admin/faults/payment-provider'],
        ['PUT', '/admin/faults/payment-provider'],
        ['GET', '/admin/payment-provider/charges'],
      ] as const) {
        const answer = await client.call(method, path, method === 'PUT' ? { failureRate: 1 } : undefined, {
          authorization: 'Bearer \u00fc',
        });
        expect(answer.status, `${method} ${path}`).toBe(401);
        expect(answer.body).toMatchObject({ instance: path });
      }
      expect(
        await client.expect(200, 'GET', '/admin/faults/payment-provider', undefined, client.admin),
      ).toEqual({
        failureRate: 0,
        latencyMs: 0,
      });
    });

    it('refuses bad users: malformed email 400, taken email 409', async () => {
      expect((await client.call('POST', '/users', { name: 'A', email: 'not-an-email' })).status).toBe(400);
      const email = `dup-${randomUUID()}@example.com`;
      await client.expect(201, 'POST', '/users', { name: 'A', email });
      const again = await client.call('POST', '/users', { name: 'B', email });
      expect(again.status).toBe(409);
      expect(again.type).toContain('application/problem+json');
    });
  });

  /**
   * POSTs `body` the way a careful client sends a large upload: headers first, and the body only if
   * no answer came meanwhile (a server refusing the length answers at once, as with
   * `Expect: 100-continue`). Resolves the answer's status and content type.
   */
  function postEarlyAnswer(url: string, body: string): Promise<{ status: number; type: string }> {
    return new Promise((resolve, reject) => {
      const request = httpRequest(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      });
      let answered = false;
      request.on('response', (response) => {
        answered = true;
        response.resume();
        resolve({ status: response.statusCode ?? 0, type: String(response.headers['content-type']) });
        request.destroy();
      });
      request.on('error', (error: NodeJS.ErrnoException) => {
        if (!answered) reject(error);
      });
      request.flushHeaders();
      setTimeout(() => {
        if (!answered) request.end(body);
      }, 1000);
    });
  }

  async function expectStock(
    productId: string,
    expected: { stock: number; reserved: number },
  ): Promise<void> {
    // Releases travel as messages after the order's end: wait for them.
    let last: unknown;
    try {
      await waitForCondition(async () => {
        const product = await client.product(productId);
        last = product;
        return product.stock === expected.stock && product.reserved === expected.reserved;
      });
    } catch {
      expect(last).toMatchObject(expected);
    }
  }

  async function expectRefunded(orderId: string): Promise<void> {
    await waitForCondition(async () =>
      (await client.charges()).some((c) => c.orderId === orderId && c.refunded),
    );
  }

  async function expectNothingOrdered(before: {
    orders: number;
    stock: { stock: number; reserved: number };
    charges: number;
  }) {
    expect(await ordersStored()).toBe(before.orders);
    expect(await client.product('green-tea')).toMatchObject({
      stock: before.stock.stock,
      reserved: before.stock.reserved,
    });
    expect((await client.charges()).length).toBe(before.charges);
  }

  async function waitForStatus(id: string, status: OrderView['status']): Promise<OrderView> {
    let order: OrderView | undefined;
    await waitForCondition(async () => {
      order = await client.getOrder(id);
      return order.status === status;
    });
    return order as OrderView;
  }

  async function waitForCondition(condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Orders stored so far, counted in orders' database. */
  async function ordersStored(): Promise<number> {
    return (await shop.storedOrders()).length;
  }
});
