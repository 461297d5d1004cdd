import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from 'ferry/testing';
import { describe, expect, it, vi } from 'vitest';
import { productStream } from './product.js';
import { ADMIN, createProduct, opened, orderIdOf, product, settled, setup } from './test-kit.js';

describe('inventory over HTTP', () => {
  it('creates a product with the admin token and reads it back', async () => {
    const s = await setup();
    const res = await createProduct(s, { name: 'Green tea', price: 450, stock: 20 });
    expect(res.status).toBe(201);
    const created = (await res.json()) as { id: string };
    expect(created).toEqual({
      id: expect.any(String),
      name: 'Green tea',
      price: 450,
      stock: 20,
      reserved: 0,
    });
    expect(await product(s, created.id)).toEqual(created);
    await settled(s, () => s.of('inventory.updated').length === 1, 'inventory.updated of the new product');
    expect(s.of('inventory.updated')[0]?.data).toEqual({
      productId: created.id,
      price: 450,
      stock: 20,
      reserved: 0,
      version: 0,
    });
  });

  it('adds one product per Idempotency-Key: sent again, at once or after orders, the first answer; with another body 422', async () => {
    const s = await setup();
    const auth = { authorization: `Bearer ${ADMIN}` };
    const key = { ...auth, 'idempotency-key': randomUUID() };
    const tea = { name: 'Tea', price: 450, stock: 20 };
    const answers = await Promise.all(Array.from({ length: 10 }, () => createProduct(s, tea, key)));
    expect(answers.map((r) => r.status)).toEqual(Array<number>(10).fill(201));
    const first = (await answers[0]!.json()) as { id: string };
    expect(first).toEqual({ id: expect.any(String), ...tea, reserved: 0 });
    for (const r of answers.slice(1)) expect(await r.json()).toEqual(first);
    expect(answers.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(9);
    // Orders took some: sent again (the key in double quotes is the same key), the first answer.
    await s.send('inventory.reserve', { orderId: 'o1', items: [{ productId: first.id, quantity: 3 }] });
    expect(await product(s, first.id)).toMatchObject({ stock: 17, reserved: 3 });
    const again = await createProduct(s, tea, { ...key, 'idempotency-key': `"${key['idempotency-key']}"` });
    expect(again.status).toBe(201);
    expect(again.headers.get('location')).toBe(`/products/${first.id}`);
    expect(await again.json()).toEqual(first);
    for (const other of [
      { ...tea, name: 'Tee' },
      { ...tea, price: 451 },
      { ...tea, stock: 17 },
    ]) {
      const reused = await createProduct(s, other, key);
      expect(reused.status, JSON.stringify(other)).toBe(422);
      expect(await reused.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_MISMATCH' });
    }
    const invalid = await createProduct(s, tea, { ...auth, 'idempotency-key': 'k'.repeat(256) });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
    expect((await createProduct(s, tea, { 'idempotency-key': 'k2' })).status).toBe(401);
    // Another key, another product.
    expect((await createProduct(s, tea, { ...auth, 'idempotency-key': 'k2' })).status).toBe(201);
    const added = [];
    for await (const e of s.store.readAll()) if (e.type === 'ProductAdded') added.push(e);
    expect(added).toHaveLength(2);
    await s.outbox.flush();
    await settled(s, () => s.of('inventory.updated').length >= 3, 'the updates');
    expect(
      s.of('inventory.updated').filter((m) => (m.data as { version: number }).version === 0),
    ).toHaveLength(2);
  });

  it('refuses to create a product without the admin token, and stores nothing', async () => {
    const s = await setup();
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: ADMIN }]) {
      const res = await createProduct(s, { name: 'Tea', price: 1, stock: 1 }, headers);
      expect(res.status).toBe(401);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    const events = [];
    for await (const e of s.store.readAll()) events.push(e);
    expect(events).toEqual([]);
  });

  it('answers 400 for bad products and 404 for unknown ones', async () => {
    const s = await setup();
    for (const body of [
      { name: 'Tea', price: 1.5, stock: 1 },
      { name: '', price: 1, stock: 1 },
      { name: 'Tea', price: 1, stock: -1 },
      { name: 'Tea', price: 1 },
      { name: 'Tea\u0000', price: 1, stock: 1 },
      { name: 'Tea \ud800', price: 1, stock: 1 },
    ]) {
      const res = await createProduct(s, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    const proto = await fetch(`${s.inventory.url}/products`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: '{"name":"Tea","price":1,"stock":1,"__proto__":{"stock":5}}',
    });
    expect(proto.status).toBe(400);
    for (const id of ['nope', '%00']) {
      const res = await fetch(`${s.inventory.url}/products/${id}`);
      expect(res.status, id).toBe(404);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
  });

  it('takes a body of up to 1 MB, as every public POST does, and refuses 2 MB with 413', async () => {
    const s = await setup();
    const post = (spaces: number) =>
      fetch(`${s.inventory.url}/products`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
        body: `{"name":"Tea","price":1,"stock":1}${' '.repeat(spaces)}`,
      });
    expect((await post(1_000_000)).status).toBe(201);
    expect((await post(2 * 1024 * 1024)).status).toBe(413);
  });

  it('seeds products by id, and seeding again changes nothing', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'tea', name: 'Tea', price: 450, stock: 5 }]);
    await s.inventory.seed([{ id: 'tea', name: 'Other', price: 1, stock: 99 }]);
    expect(await product(s, 'tea')).toEqual({ id: 'tea', name: 'Tea', price: 450, stock: 5, reserved: 0 });
  });
});

describe('inventory stock over the bus', () => {
  it('never oversells: 100 concurrent orders of 1 for 20 in stock reserve exactly 20', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 20 }]);
    const orders = Array.from({ length: 100 }, (_, i) => `o-${i}`);
    await Promise.all(
      orders.map((orderId) =>
        s.bus.publish('inventory.reserve', { orderId, items: [{ productId: 'p', quantity: 1 }] }),
      ),
    );
    const answered = () => s.of('inventory.reserved').length + s.of('inventory.unavailable').length;
    await settled(s, () => answered() === 100, 'an answer to every reserve');
    const reserved = s.of('inventory.reserved').map(orderIdOf);
    expect(reserved).toHaveLength(20);
    expect(s.of('inventory.unavailable')).toHaveLength(80);
    expect(new Set(reserved).size).toBe(20);
    expect(await product(s, 'p')).toMatchObject({ stock: 0, reserved: 20 });

    // 12 orders confirmed, 8 cancelled: 12 sold, 8 back on sale.
    for (const orderId of reserved.slice(0, 12)) await s.bus.publish('inventory.commit', { orderId });
    for (const orderId of reserved.slice(12)) await s.bus.publish('inventory.release', { orderId });
    // Releasing orders that never got stock changes nothing.
    for (const orderId of orders.filter((o) => !reserved.includes(o)).slice(0, 10)) {
      await s.bus.publish('inventory.release', { orderId });
    }
    await waitFor(async () => (await product(s, 'p')).reserved === 0, 'every reservation settled');
    expect(await product(s, 'p')).toMatchObject({ stock: 8, reserved: 0 });
    await s.outbox.flush();
    // Updates carry no key (they may arrive in any order): the one of the highest version is the latest.
    const versionOf = (m: { data: unknown }) => (m.data as { version: number }).version;
    const latest = s.of('inventory.updated').reduce((a, b) => (versionOf(b) > versionOf(a) ? b : a));
    expect(latest.data).toMatchObject({ productId: 'p', stock: 8, reserved: 0 });
  });

  it('reserves once for a redelivered reserve, and answers a re-sent one again without reserving', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 5 }]);
    const data = { orderId: 'o1', items: [{ productId: 'p', quantity: 2 }] };
    const id = randomUUID();
    await s.send('inventory.reserve', data, { id });
    await s.send('inventory.reserve', data, { id, times: 2 }); // the same message, delivered again
    await s.outbox.flush();
    expect(s.of('inventory.reserved', 'o1')).toHaveLength(1);
    expect(await product(s, 'p')).toMatchObject({ stock: 3, reserved: 2 });
    await s.send('inventory.reserve', data); // the saga sending its command again: answered, not reserved again
    await settled(s, () => s.of('inventory.reserved', 'o1').length === 2, 'the second answer');
    expect(await product(s, 'p')).toMatchObject({ stock: 3, reserved: 2 });
  });

  it('releases harmlessly twice, and a release before its reserve leaves nothing held', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 5 }]);
    await s.send('inventory.reserve', { orderId: 'o1', items: [{ productId: 'p', quantity: 2 }] });
    await s.send('inventory.release', { orderId: 'o1' });
    expect(await product(s, 'p')).toMatchObject({ stock: 5, reserved: 0 });
    await s.send('inventory.release', { orderId: 'o1' });
    expect(await product(s, 'p')).toMatchObject({ stock: 5, reserved: 0 });
    // The saga gave up on o2 before its reserve arrived: the late reserve holds nothing.
    await s.send('inventory.release', { orderId: 'o2' });
    await s.send('inventory.reserve', { orderId: 'o2', items: [{ productId: 'p', quantity: 1 }] });
    expect(await product(s, 'p')).toEqual({ id: 'p', name: 'Tea', price: 450, stock: 5, reserved: 0 });
    await s.outbox.flush();
    expect(s.of('inventory.reserved', 'o2')).toEqual([]);
  });

  it('commits once, and a cancelled sale goes back on sale once', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 5 }]);
    await s.send('inventory.reserve', { orderId: 'o1', items: [{ productId: 'p', quantity: 2 }] });
    await s.send('inventory.commit', { orderId: 'o1' });
    await s.send('inventory.commit', { orderId: 'o1' });
    expect(await product(s, 'p')).toMatchObject({ stock: 3, reserved: 0 });
    await s.send('inventory.release', { orderId: 'o1' }); // the customer cancels the confirmed order
    await s.send('inventory.release', { orderId: 'o1' });
    expect(await product(s, 'p')).toMatchObject({ stock: 5, reserved: 0 });
    await s.send('inventory.commit', { orderId: 'o1' });
    expect(await product(s, 'p')).toMatchObject({ stock: 5, reserved: 0 });
  });

  it('reserves nothing of a multi-product order when one product is short', async () => {
    const s = await setup();
    await s.inventory.seed([
      { id: 'a', name: 'A', price: 1, stock: 10 },
      { id: 'b', name: 'B', price: 1, stock: 10 },
      { id: 'c', name: 'C', price: 1, stock: 1 },
    ]);
    const order = (c: number) => [
      { productId: 'a', quantity: 3 },
      { productId: 'c', quantity: c },
      { productId: 'b', quantity: 3 },
    ];
    await s.send('inventory.reserve', { orderId: 'o1', items: order(2) });
    await settled(s, () => s.of('inventory.unavailable', 'o1').length === 1, 'unavailable');
    expect(s.of('inventory.unavailable', 'o1')[0]?.data).toEqual({ orderId: 'o1', productId: 'c' });
    for (const id of ['a', 'b']) expect(await product(s, id)).toMatchObject({ stock: 10, reserved: 0 });
    expect(await product(s, 'c')).toMatchObject({ stock: 1, reserved: 0 });
    // An unknown product is unavailable too.
    await s.send('inventory.reserve', { orderId: 'o2', items: [{ productId: 'ghost', quantity: 1 }] });
    await settled(s, () => s.of('inventory.unavailable', 'o2').length === 1, 'unavailable');
    // With enough of every product, the order holds them all.
    await s.send('inventory.reserve', { orderId: 'o3', items: order(1) });
    await settled(s, () => s.of('inventory.reserved', 'o3').length === 1, 'reserved');
    for (const id of ['a', 'b']) expect(await product(s, id)).toMatchObject({ stock: 7, reserved: 3 });
    expect(await product(s, 'c')).toMatchObject({ stock: 0, reserved: 1 });
    // Releasing it gives every product back.
    await s.send('inventory.release', { orderId: 'o3' });
    for (const id of ['a', 'b']) expect(await product(s, id)).toMatchObject({ stock: 10, reserved: 0 });
    expect(await product(s, 'c')).toMatchObject({ stock: 1, reserved: 0 });
  });

  it('works the same on a SQLite file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shop-inventory-'));
    try {
      const s = await setup(`sqlite:${join(dir, 'inventory.db')}`);
      await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 20 }]);
      const orders = Array.from({ length: 30 }, (_, i) => `o-${i}`);
      await Promise.all(
        orders.map((orderId) =>
          s.bus.publish('inventory.reserve', { orderId, items: [{ productId: 'p', quantity: 1 }] }),
        ),
      );
      await settled(
        s,
        () => s.of('inventory.reserved').length + s.of('inventory.unavailable').length === 30,
        'every answer',
      );
      expect(s.of('inventory.reserved')).toHaveLength(20);
      expect(await product(s, 'p')).toMatchObject({ stock: 0, reserved: 20 });
      const [first] = s.of('inventory.reserved').map(orderIdOf);
      const commit = randomUUID();
      await s.send('inventory.commit', { orderId: first! }, { id: commit });
      await s.send('inventory.commit', { orderId: first! }, { id: commit, times: 2 });
      await s.send('inventory.commit', { orderId: first! });
      expect(await product(s, 'p')).toMatchObject({ stock: 0, reserved: 19 });
      await s.close();
      opened.splice(opened.indexOf(s), 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('GET /products/:id', () => {
  it("reads only the events appended since the product's last read, not its whole history", async () => {
    // A product's stream grows by two events an order: folded from its first event on every read,
    // a product with 3,000 orders took 22 ms to read (an idle one 0.7 ms), and longer each day.
    const s = await setup();
    const created = (await (await createProduct(s, { name: 'Tea', price: 450, stock: 1000 })).json()) as {
      id: string;
    };
    const stream = productStream(created.id);
    const history = Array.from({ length: 100 }, (_, i) => [
      { type: 'StockReserved', data: { orderId: randomUUID(), quantity: 1 + (i % 3) } },
    ]).flat();
    for (const event of history) {
      await s.store.append(stream, [event]);
      await s.store.append(stream, [{ type: 'ReservationReleased', data: event.data }]);
    }
    let read = 0;
    const readStream = s.store.readStream.bind(s.store);
    vi.spyOn(s.store, 'readStream').mockImplementation(async (...args) => {
      const events = await readStream(...args);
      read += events.length;
      return events;
    });
    expect(await product(s, created.id)).toMatchObject({ stock: 1000, reserved: 0 });
    expect(read).toBe(201);
    read = 0;
    await s.store.append(stream, [{ type: 'StockReserved', data: { orderId: randomUUID(), quantity: 5 } }]);
    await s.store.append(stream, [{ type: 'StockReserved', data: { orderId: randomUUID(), quantity: 2 } }]);
    expect(await product(s, created.id)).toMatchObject({ stock: 993, reserved: 7 });
    // The last event read before, to check it is still there, and the two after it.
    expect(read).toBe(3);
  });
});
