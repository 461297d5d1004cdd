/**
 * The gateway in front of a real users service and payment provider, and a stand-in for the other
 * services that records what reaches it: what the gateway refuses itself, what it passes on, and
 * how it relays the answers.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { silentLogger } from 'ferry';
import { afterEach, describe, expect, it } from 'vitest';
import { startPaymentProvider } from '../payment-provider/provider.js';
import { postWithHeaderLines } from '../raw-post.js';
import { setup as startUsers } from '../users/test-kit.js';
import { type Gateway, startGateway } from './gateway.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

interface Received {
  readonly method: string;
  readonly url: string;
  readonly type: string | undefined;
  readonly body: string;
}

/** Orders, inventory and payments as one stand-in: records each request; 202 for a cancel, else a 400 problem. */
async function standIn(): Promise<{ url: string; received: Received[]; keys: (string | undefined)[] }> {
  const received: Received[] = [];
  /** The Idempotency-Key of each request received, in order. */
  const keys: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    keys.push(req.headers['idempotency-key'] as string | undefined);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = req.url ?? '';
      received.push({
        method: req.method ?? '',
        url,
        type: req.headers['content-type'],
        body: Buffer.concat(chunks).toString('utf8'),
      });
      if (url.endsWith('/cancel')) {
        res.writeHead(202, { 'content-type': 'application/json' }).end('{"status":"pending"}');
        return;
      }
      res
        .writeHead(400, { 'content-type': 'application/problem+json' })
        .end(JSON.stringify({ type: 'about:blank', title: 'Bad Request', status: 400, instance: url }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, keys };
}

async function startShopFront(providerToken = 'admin-token') {
  const users = await startUsers();
  const others = await standIn();
  const provider = await startPaymentProvider({ adminToken: providerToken, logger: silentLogger });
  closers.push(() => provider.close());
  const gateway: Gateway = await startGateway({
    services: {
      users: [users.users.url],
      inventory: [others.url],
      orders: [others.url],
      payments: [others.url],
      paymentProvider: provider.url,
    },
    adminToken: 'admin-token',
    port: 0,
    logger: silentLogger,
  });
  closers.push(() => gateway.close());
  const call = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${gateway.url}${path}`, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body }),
    });
    const text = await res.text();
    return {
      status: res.status,
      type: res.headers.get('content-type') ?? '',
      body: (text === '' ? undefined : JSON.parse(text)) as Record<string, unknown> | undefined,
    };
  };
  return { gateway, users, received: others.received, keys: others.keys, call };
}

const DEEP = [`${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`, `${'['.repeat(5000)}${']'.repeat(5000)}`];

describe('the gateway', () => {
  it('passes a JSON body on as it came, however deeply nested: the service answers, never a 503', async () => {
    const shop = await startShopFront();
    for (const body of DEEP) {
      const user = await shop.call('POST', '/users', body);
      expect(user.status).toBe(400);
      expect(user.type).toMatch(/^application\/problem\+json/);
      const order = await shop.call('POST', '/orders', body, { 'idempotency-key': 'k-1' });
      expect(order.status).toBe(400);
      expect(shop.received.at(-1)).toEqual({
        method: 'POST',
        url: '/orders',
        type: 'application/json',
        body,
      });
    }
    const spaced = '{ "items" : [], "userId" : "u" }';
    await shop.call('POST', '/orders', spaced);
    expect(shop.received.at(-1)?.body).toBe(spaced);
    // The users service is still well.
    expect((await shop.call('POST', '/users', '{"name":"Ann","email":"ann@example.com"}')).status).toBe(201);
    const utf8 = await shop.call('POST', '/users', '{"name":"Zoë","email":"zoe@example.com"}', {
      'content-type': 'application/json; charset=UTF-8',
    });
    expect(utf8.status).toBe(201);
    expect(utf8.body?.name).toBe('Zoë');
  });

  it("ignores a client's x-deadline-ms: a request is never cut short (nor /health failed) by one", async () => {
    const shop = await startShopFront();
    for (const deadline of ['0', '1', '5']) {
      const user = await shop.call(
        'POST',
        '/users',
        JSON.stringify({ name: 'Dee', email: `dee${deadline}@example.com` }),
        { 'x-deadline-ms': deadline },
      );
      expect(user.status, `x-deadline-ms: ${deadline}`).toBe(201);
      expect((await shop.call('GET', '/health', undefined, { 'x-deadline-ms': deadline })).status).not.toBe(
        504,
      );
    }
  });

  it('says 504 "may have been carried out" for a POST sent and not answered within the time limit, 503 "try again" for one never sent', async () => {
    const keys: (string | undefined)[] = [];
    const slow = createServer((req, res) => {
      keys.push(req.headers['idempotency-key'] as string | undefined);
      req.resume();
      setTimeout(() => res.writeHead(201, { 'content-type': 'application/json' }).end('{}'), 6000).unref();
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => slow.close(() => resolve())));
    const slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}`;
    const gone = 'http://127.0.0.1:1';
    const gateway = await startGateway({
      services: {
        users: [slowUrl],
        inventory: [gone],
        orders: [slowUrl],
        payments: [gone],
        paymentProvider: gone,
      },
      adminToken: 'admin-token',
      port: 0,
      serviceTimeoutMs: 1200,
      logger: silentLogger,
    });
    closers.push(() => gateway.close());
    const post = (path: string) =>
      fetch(`${gateway.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"userId":"u","items":[{"productId":"p","quantity":1}]}',
      });
    const started = performance.now();
    const unknown = await post('/orders');
    // Within the time limit, retries included: not one limit per attempt (3.6 s and more).
    expect(performance.now() - started).toBeGreaterThanOrEqual(1150);
    expect(performance.now() - started).toBeLessThan(2800);
    expect(unknown.status).toBe(504);
    expect(unknown.headers.get('retry-after')).toBeNull();
    expect(((await unknown.json()) as { detail: string }).detail).toMatch(/may have been carried out/);
    // The client sent no key: the answer names the one the gateway sent (every attempt the same),
    // so that the client can send the order again with it and learn its outcome.
    const made = unknown.headers.get('idempotency-key');
    expect(made).toMatch(/^[0-9a-f-]{36}$/);
    expect(keys.length).toBeGreaterThan(0);
    expect(new Set(keys)).toEqual(new Set([made]));
    // A client's own key is sent as it came, and not echoed.
    const keyed = await fetch(`${gateway.url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'client-key-1' },
      body: '{"userId":"u","items":[{"productId":"p","quantity":1}]}',
    });
    expect(keyed.status).toBe(504);
    expect(keyed.headers.get('idempotency-key')).toBeNull();
    expect(keys.at(-1)).toBe('client-key-1');
    expect(((await keyed.json()) as { detail: string }).detail).toMatch(
      /Send it again with the same Idempotency-Key to get its outcome/,
    );
    // Each route says what a client may do next: a cancel takes no key.
    const cancel = await fetch(`${gateway.url}/orders/0b7e6f5c-1c1a-4d0e-9d7e-3d2f1a0b9c8d/cancel`, {
      method: 'POST',
    });
    expect(cancel.status).toBe(504);
    const cancelDetail = ((await cancel.json()) as { detail: string }).detail;
    expect(cancelDetail).toMatch(/Asking again is harmless\.$/);
    expect(cancelDetail).not.toMatch(/Idempotency-Key/);
    // HEAD is a GET: not answered in time, it is 503 "try again" like the GET (it was 504).
    for (const method of ['GET', 'HEAD']) {
      const read = await fetch(`${gateway.url}/users/u1`, { method });
      expect(read.status, method).toBe(503);
      expect(read.headers.get('retry-after'), method).toBe('1');
    }
    // Users honours keys too: the 504 names the key made and says to send the request again with it.
    const sentBefore = keys.length;
    const user = await post('/users');
    expect(user.status).toBe(504);
    const userKey = user.headers.get('idempotency-key');
    expect(userKey).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(keys.slice(sentBefore))).toEqual(new Set([userKey]));
    expect(((await user.json()) as { detail: string }).detail).toMatch(
      /may have been carried out\. Send it again with the same Idempotency-Key \(the one this answer names: you sent none\) to get its outcome rather than registering the user twice\.$/,
    );
    // The operator's catalog route, with the token (without it: 401 before anything is sent).
    const refused = await fetch(`${gateway.url}/products`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer admin-token' },
      body: '{"name":"P","price":1,"stock":1}',
    });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { detail: string }).detail).toMatch(/try again/);
  });

  it("names the key it made in every answer to a POST /orders that came without one: passed on (500 'Answer not recorded'), or its own refusal", async () => {
    const keys: (string | undefined)[] = [];
    const orders = createServer((req, res) => {
      keys.push(req.headers['idempotency-key'] as string | undefined);
      req.resume();
      res.writeHead(500, { 'content-type': 'application/problem+json' }).end(
        JSON.stringify({
          type: 'about:blank',
          title: 'Answer not recorded',
          status: 500,
          code: 'IDEMPOTENCY_STORE_FAILED',
        }),
      );
    });
    await new Promise<void>((resolve) => orders.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => orders.close(() => resolve())));
    const ordersUrl = `http://127.0.0.1:${(orders.address() as AddressInfo).port}`;
    const gone = 'http://127.0.0.1:1';
    const gateway = await startGateway({
      services: {
        users: [gone],
        inventory: [gone],
        orders: [ordersUrl],
        payments: [gone],
        paymentProvider: gone,
      },
      adminToken: undefined,
      port: 0,
      logger: silentLogger,
    });
    closers.push(() => gateway.close());
    const post = (headers: Record<string, string> = {}) =>
      fetch(`${gateway.url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: '{"userId":"u","items":[{"productId":"p","quantity":1}]}',
      });
    const first = await post();
    expect(first.status).toBe(500);
    expect(((await first.json()) as { code: string }).code).toBe('IDEMPOTENCY_STORE_FAILED');
    const made = first.headers.get('idempotency-key');
    expect(made).toMatch(/^[0-9a-f-]{36}$/);
    expect(keys).toEqual([made]);
    // Each request without a key gets a key of its own.
    const second = await post();
    expect(second.headers.get('idempotency-key')).not.toBe(made);
    expect(keys.at(-1)).toBe(second.headers.get('idempotency-key'));
    await second.arrayBuffer();
    const keyed = await post({ 'idempotency-key': made as string });
    expect(keyed.headers.get('idempotency-key')).toBeNull();
    expect(keys.at(-1)).toBe(made);
    await keyed.arrayBuffer();
    // The gateway's own refusals name a key too: every answer to a key-less POST /orders does.
    const sentToOrders = keys.length;
    for (const [body, type, status] of [
      ['{"userId":', 'application/json', 400],
      ['{"__proto__":{"x":1}}', 'application/json', 400],
      ['userId=u', 'text/plain', 415],
      [`{"pad":"${'x'.repeat(2 * 1024 * 1024)}"}`, 'application/json', 413],
    ] as const) {
      const refused = await fetch(`${gateway.url}/orders`, {
        method: 'POST',
        headers: { 'content-type': type },
        body,
      });
      expect(refused.status, body.slice(0, 20)).toBe(status);
      expect(refused.headers.get('idempotency-key'), body.slice(0, 20)).toMatch(/^[0-9a-f-]{36}$/);
      await refused.arrayBuffer();
    }
    expect(keys).toHaveLength(sentToOrders);
  });

  it('refuses what is not JSON, malformed or too large itself: nothing reaches a service', async () => {
    const shop = await startShopFront();
    expect((await shop.call('POST', '/orders', 'userId=u', { 'content-type': 'text/plain' })).status).toBe(
      415,
    );
    for (const headers of [
      { 'content-type': 'application/json; charset=latin1' },
      { 'content-type': 'application/json; charset="utf-16"' },
      { 'content-encoding': 'gzip' },
      { 'content-encoding': 'bogus' },
    ]) {
      const refused = await shop.call('POST', '/orders', '{"userId":"u","items":[]}', headers);
      expect(refused.status, JSON.stringify(headers)).toBe(415);
      expect(refused.type).toMatch(/^application\/problem\+json/);
    }
    const notUtf8 = await fetch(`${shop.gateway.url}/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // {"name":"<0xff>","email":"a@b.co"}: a byte no UTF-8 text has.
      body: Buffer.concat([
        Buffer.from('{"name":"'),
        Buffer.from([0xff]),
        Buffer.from('","email":"a@b.co"}'),
      ]),
    });
    expect(notUtf8.status).toBe(400);
    expect(((await notUtf8.json()) as { detail: string }).detail).toBe(
      'The request body is not valid UTF-8.',
    );
    expect((await shop.call('POST', '/orders', '{"userId":')).status).toBe(400);
    expect((await shop.call('POST', '/orders', '')).status).toBe(400);
    const proto = await shop.call('POST', '/orders', '{"__proto__":{"x":1}}');
    expect(proto.status).toBe(400);
    // Said as it is: the body is JSON, with a member the gateway refuses.
    expect(proto.body?.detail).toBe(
      'The request body has a member named __proto__, or constructor.prototype: neither is accepted.',
    );
    expect((await shop.call('POST', '/orders', '{"userId":')).body?.detail).toBe(
      'The request body is not valid JSON.',
    );
    // A repeated member: JSON.parse would keep the last (999 ordered, the declined card charged).
    for (const body of [
      '{"userId":"u","items":[{"productId":"p","quantity":1,"quantity":999}]}',
      '{"userId":"u","items":[],"paymentMethod":"tok_visa","paymentMethod":"tok_chargeDeclined"}',
      '{"userId":"u","\\u0075serId":"v","items":[]}',
    ]) {
      const repeated = await shop.call('POST', '/orders', body);
      expect(repeated.status, body).toBe(400);
      expect(repeated.body?.detail, body).toMatch(
        /^The request body has the member "(quantity|paymentMethod|userId)" twice in one object/,
      );
    }
    // A fraction too fine for a JSON number: JSON.parse reads it as whole (an order of 1 placed).
    for (const [quantity, whole] of [
      ['0.99999999999999999', 1],
      ['2.9999999999999999', 3],
      ['1.0000000000000001', 1],
    ] as const) {
      const body = `{"userId":"u","items":[{"productId":"p","quantity":${quantity}}]}`;
      const rounded = await shop.call('POST', '/orders', body);
      expect(rounded.status, body).toBe(400);
      expect(rounded.type).toMatch(/^application\/problem\+json/);
      expect(rounded.body?.detail, body).toBe(
        `The request body has the number ${quantity}, a fraction too fine for a JSON number, which would be read as the whole number ${whole}: send whole numbers as such.`,
      );
    }
    const huge = await shop.call('POST', '/orders', `{"pad":"${'x'.repeat(2 * 1024 * 1024)}"}`);
    expect(huge.status).toBe(413);
    expect(huge.type).toMatch(/^application\/problem\+json/);
    expect(shop.received).toEqual([]);
  });

  it('cancels with no body or a JSON one, and passes none on', async () => {
    const shop = await startShopFront();
    const id = '0b7e6f5c-1c1a-4d0e-9d7e-3d2f1a0b9c8d';
    for (const [body, headers] of [
      ['', {}],
      ['', { 'content-type': 'text/plain' }],
      ['{"reason":"changed my mind"}', {}],
      ['{}', { 'content-type': 'application/json; charset=utf-8' }],
    ] as const) {
      const answer = await shop.call('POST', `/orders/${id}/cancel`, body, headers);
      expect(answer.status, body).toBe(202);
    }
    const bare = await fetch(`${shop.gateway.url}/orders/${id}/cancel`, { method: 'POST' });
    expect(bare.status).toBe(202);
    expect(shop.received).toHaveLength(5);
    for (const request of shop.received) {
      expect(request).toEqual({ method: 'POST', url: `/orders/${id}/cancel`, type: undefined, body: '' });
    }
  });

  // As every other route: a body the gateway cannot read as JSON is refused, and nothing cancelled.
  it.each([
    ['malformed JSON', '{"reason":', {}, 400],
    ['a __proto__ key', '{"__proto__":{"x":1}}', {}, 400],
    ['a constructor.prototype member', '{"constructor":{"prototype":1}}', {}, 400],
    ['text', 'please', { 'content-type': 'text/plain' }, 415],
    ['latin1 JSON', '{"reason":"caf\u00e9"}', { 'content-type': 'application/json; charset=latin1' }, 415],
    ['a gzip content-encoding', '{}', { 'content-encoding': 'gzip' }, 415],
  ])('refuses a cancel with %s, and passes nothing on', async (_, body, headers, status) => {
    const shop = await startShopFront();
    const answer = await shop.call(
      'POST',
      '/orders/0b7e6f5c-1c1a-4d0e-9d7e-3d2f1a0b9c8d/cancel',
      body,
      headers,
    );
    expect(answer.status).toBe(status);
    expect(answer.type).toMatch(/^application\/problem\+json/);
    expect(shop.received).toEqual([]);
  });

  it('says in GET /health why an instance is not ready, never where it lives', async () => {
    const users = await startUsers();
    const others = await standIn(); // answers 400 to /health/ready
    const silent = createServer(() => {}); // never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    closers.push(() => {
      silent.closeAllConnections();
      return new Promise((resolve) => silent.close(() => resolve()));
    });
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const urls = {
      users: [users.users.url],
      inventory: [`http://127.0.0.1:${closedPort}`],
      orders: [others.url],
      payments: [`http://127.0.0.1:${(silent.address() as AddressInfo).port}`],
      paymentProvider: others.url,
    };
    const text = await unreadyHealth(urls);
    for (const url of Object.values(urls).flat()) expect(text).not.toContain(new URL(url).host);
    expect(text).not.toContain('127.0.0.1');
    expect(
      Object.values(JSON.parse(text).checks as Record<string, { error?: string }>)
        .map((c) => c.error)
        .sort(),
    ).toEqual([
      'answered 400',
      'answered 400',
      'cannot be reached',
      'did not answer within 1000 ms',
      undefined,
    ]);
  });

  it('names in GET /health the checks an instance says fail (its bus, a breaker), never what they said', async () => {
    const users = await startUsers();
    const others = await standIn();
    // A service cut off from its broker, as its own readiness report says it.
    const cutOff = createServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          status: 'fail',
          checks: {
            outbox: { status: 'ok' },
            bus: {
              status: 'fail',
              error: 'not connected to the broker for 6012 ms: amqp://shop:***@10.9.8.7:5672',
            },
            'breaker:payment-provider': { status: 'fail', error: 'open' },
          },
        }),
      );
    });
    await new Promise<void>((resolve) => cutOff.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => cutOff.close(() => resolve())));
    const text = await unreadyHealth({
      users: [users.users.url],
      inventory: [users.users.url],
      orders: [users.users.url],
      payments: [`http://127.0.0.1:${(cutOff.address() as AddressInfo).port}`],
      paymentProvider: others.url,
    });
    expect(text).not.toContain('10.9.8.7');
    const errors = Object.values(JSON.parse(text).checks as Record<string, { error?: string }>).map(
      (c) => c.error,
    );
    expect(errors).toContain('answered 503 (failing: bus, breaker:payment-provider)');
  });

  it('relays problems with the path the client called as their instance', async () => {
    const shop = await startShopFront();
    const admin = { authorization: 'Bearer admin-token' };
    const faults = await shop.call('PUT', '/admin/faults/payment-provider', '{"failureRate":5}', admin);
    expect(faults.status).toBe(400);
    expect(faults.type).toMatch(/^application\/problem\+json/);
    expect(faults.body).toMatchObject({ status: 400, instance: '/admin/faults/payment-provider' });
    const order = await shop.call('POST', '/orders?dryRun=1', '{}');
    expect(order.body).toMatchObject({ instance: '/orders' });
    const user = await shop.call('GET', '/users/nobody');
    expect(user.status).toBe(404);
    expect(user.body).toMatchObject({ instance: '/users/nobody' });
    // Answers that are not problems go out as they came.
    expect((await shop.call('GET', '/admin/faults/payment-provider', undefined, admin)).body).toEqual({
      failureRate: 0,
      latencyMs: 0,
    });
  });

  it("relays the provider's own refusal with the gateway's path", async () => {
    const shop = await startShopFront('another-token');
    const charges = await shop.call('GET', '/admin/payment-provider/charges', undefined, {
      authorization: 'Bearer admin-token',
    });
    expect(charges.status).toBe(401);
    expect(charges.body).toMatchObject({ status: 401, instance: '/admin/payment-provider/charges' });
  });

  it('refuses a bearer token that is not ASCII with 401 on every operator route, and keeps serving', async () => {
    const shop = await startShopFront();
    const { port } = new URL(shop.gateway.url);
    const routes = [
      ['GET', '/admin/faults/payment-provider'],
      ['PUT', '/admin/faults/payment-provider'],
      ['GET', '/admin/payment-provider/charges'],
    ] as const;
    // As curl sends it (UTF-8 bytes), and as a Latin-1 client does (one byte).
    for (const encoding of ['utf8', 'latin1'] as const) {
      for (const [method, path] of routes) {
        const head = `${method} ${path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer ü\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`;
        const answer = await new Promise<string>((resolve, reject) => {
          const socket = connect(Number(port), '127.0.0.1', () => socket.write(Buffer.from(head, encoding)));
          let text = '';
          socket.on('data', (chunk: Buffer) => {
            text += chunk.toString('latin1');
          });
          socket.on('end', () => resolve(text));
          socket.on('error', reject);
        });
        expect(answer.split('\r\n', 1)[0], `${encoding} ${method} ${path}`).toBe('HTTP/1.1 401 Unauthorized');
      }
    }
    const fetched = await shop.call('GET', '/admin/payment-provider/charges', undefined, {
      authorization: 'Bearer \u00fc',
    });
    expect(fetched.status).toBe(401);
    expect((await shop.call('GET', '/users/nobody')).status).toBe(404);
  });
  it('refuses an Idempotency-Key a service could not be sent with 400 IDEMPOTENCY_KEY_INVALID on the POSTs that create something, and passes no key to the routes that take none', async () => {
    const shop = await startShopFront();
    const order = '{"userId":"u","items":[{"productId":"p","quantity":1}]}';
    const reachedBefore = shop.received.length;
    const admin = { authorization: 'Bearer admin-token' };
    for (const key of ['k'.repeat(256), '', ' ', 'caf\u00e9', 'a\tb']) {
      for (const [path, body, headers] of [
        ['/orders', order, {}],
        ['/users', '{"name":"Ada","email":"ada@example.com"}', {}],
        ['/products', '{"name":"P","price":1,"stock":1}', admin],
      ] as const) {
        const refused = await shop.call('POST', path, body, { ...headers, 'idempotency-key': key });
        expect(refused.status, `${path} ${JSON.stringify(key)}`).toBe(400);
        expect(refused.type).toMatch(/^application\/problem\+json/);
        expect(refused.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
      }
    }
    // Nothing reached a service; a key of 255 characters, or quoted, does.
    expect(shop.received).toHaveLength(reachedBefore);
    expect((await shop.users.events()).filter((e) => e.type === 'UserRegistered')).toEqual([]);
    expect((await shop.call('POST', '/orders', order, { 'idempotency-key': 'k'.repeat(255) })).status).toBe(
      400,
    );
    expect((await shop.call('POST', '/orders', order, { 'idempotency-key': '"quoted key"' })).status).toBe(
      400,
    );
    expect(shop.received).toHaveLength(reachedBefore + 2);
    // Routes that take no key answer as without one (they were 503 and 504, the call refused unsent).
    const long = { 'idempotency-key': 'k'.repeat(300) };
    const user = await shop.call('POST', '/users', '{"name":"Ada","email":"ada@example.com"}');
    expect(user.status).toBe(201);
    expect((await shop.call('GET', `/users/${String(user.body?.id)}`, undefined, long)).status).toBe(200);
    expect((await shop.call('GET', '/products/green-tea', undefined, long)).status).toBe(400);
    expect((await shop.call('POST', '/orders/o-1/cancel', undefined, long)).status).toBe(202);
  });

  it('refuses with 400 IDEMPOTENCY_KEY_INVALID a key sent on two header lines, on the POSTs that create something: nothing reaches a service', async () => {
    // Node joins the lines into one value (`K, K`): a key nobody sent, that named no order, so the
    // order a client sent again with its key duplicated (by a proxy, a retry library) was placed and
    // charged a second time.
    const shop = await startShopFront();
    const reachedBefore = shop.received.length;
    const admin = ['authorization', 'Bearer admin-token'];
    for (const [path, body, headers] of [
      ['/orders', '{"userId":"u","items":[{"productId":"p","quantity":1}]}', []],
      ['/users', '{"name":"Ada","email":"ada@example.com"}', []],
      ['/products', '{"name":"P","price":1,"stock":1}', admin],
    ] as const) {
      for (const lines of [
        ['idempotency-key', 'k-1', 'Idempotency-Key', 'k-1'],
        ['idempotency-key', 'k-1', 'idempotency-key', 'k-2'],
      ]) {
        const refused = await postWithHeaderLines(`${shop.gateway.url}${path}`, body, [...headers, ...lines]);
        expect(refused.status, `${path} ${lines.join(' ')}`).toBe(400);
        expect(refused.type).toMatch(/^application\/problem\+json/);
        expect(refused.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
      }
    }
    expect(shop.received).toHaveLength(reachedBefore);
    expect((await shop.users.events()).filter((e) => e.type === 'UserRegistered')).toEqual([]);
    // One line holding a comma is one key.
    const comma = await postWithHeaderLines(
      `${shop.gateway.url}/users`,
      '{"name":"Ada","email":"ada@example.com"}',
      ['idempotency-key', 'k-1, k-1'],
    );
    expect(comma.status).toBe(201);
  });

  it("passes an Idempotency-Key to POST /users and POST /products, the client's or one it made and names in the answer: sent again with it, one user", async () => {
    const shop = await startShopFront();
    const ann = '{"name":"Ann","email":"ann@example.com"}';
    const res = await fetch(`${shop.gateway.url}/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: ann,
    });
    expect(res.status).toBe(201);
    const made = res.headers.get('idempotency-key');
    expect(made).toMatch(/^[0-9a-f-]{36}$/);
    const user = await res.json();
    const again = await fetch(`${shop.gateway.url}/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': made as string },
      body: ann,
    });
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('idempotency-key')).toBeNull();
    expect(await again.json()).toEqual(user);
    expect((await shop.users.events()).filter((e) => e.type === 'UserRegistered')).toHaveLength(1);
    // Products: the key made is the one inventory got; a client's own is passed on as it came.
    const admin = { 'content-type': 'application/json', authorization: 'Bearer admin-token' };
    const tea = '{"name":"Tea","price":450,"stock":2}';
    const product = await fetch(`${shop.gateway.url}/products`, {
      method: 'POST',
      headers: admin,
      body: tea,
    });
    expect(product.status).toBe(400); // the stand-in's answer
    expect(product.headers.get('idempotency-key')).toMatch(/^[0-9a-f-]{36}$/);
    expect(shop.keys.at(-1)).toBe(product.headers.get('idempotency-key'));
    // Refused for want of the token, it names a key too (sent again with the token and the key).
    const unauthorized = await fetch(`${shop.gateway.url}/products`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: tea,
    });
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get('idempotency-key')).toMatch(/^[0-9a-f-]{36}$/);
    const own = await fetch(`${shop.gateway.url}/products`, {
      method: 'POST',
      headers: { ...admin, 'idempotency-key': 'tea-1' },
      body: tea,
    });
    expect(own.headers.get('idempotency-key')).toBeNull();
    expect(shop.keys.at(-1)).toBe('tea-1');
  });

  it('checks the operator token before the body: 401 for a malformed, non-JSON or forbidden body sent without it', async () => {
    const shop = await startShopFront();
    // POST /products (catalog management) answered 400, 413 or 415 from its body without the token.
    for (const [method, path] of [
      ['PUT', '/admin/faults/payment-provider'],
      ['POST', '/products'],
    ] as const) {
      for (const [body, type] of [
        ['{"failureRate":', 'application/json'],
        ['failureRate=1', 'text/plain'],
        ['{"__proto__":{"x":1}}', 'application/json'],
        [`{"name":"${'x'.repeat(1_200_000)}"}`, 'application/json'],
      ] as const) {
        for (const authorization of [undefined, 'Bearer wrong']) {
          const res = await fetch(`${shop.gateway.url}${path}`, {
            method,
            headers: { 'content-type': type, ...(authorization === undefined ? {} : { authorization }) },
            body,
          });
          expect(res.status, `${method} ${path} ${body.slice(0, 30)} ${authorization}`).toBe(401);
          expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
          await res.arrayBuffer();
        }
      }
    }
    // With the token, the body is checked as before.
    const malformed = await shop.call('PUT', '/admin/faults/payment-provider', '{"failureRate":', {
      authorization: 'Bearer admin-token',
    });
    expect(malformed.status).toBe(400);
    const faults = await shop.call('GET', '/admin/faults/payment-provider', undefined, {
      authorization: 'Bearer admin-token',
    });
    expect(faults.status).toBe(200);
  });

  it("answers HEAD with the GET's headers, its content-length included", async () => {
    const shop = await startShopFront();
    const user = await shop.call('POST', '/users', '{"name":"Bo","email":"bo@example.com"}');
    for (const path of [`/users/${String(user.body?.id)}`, '/users/nobody']) {
      const get = await fetch(`${shop.gateway.url}${path}`);
      const text = await get.text();
      const head = await fetch(`${shop.gateway.url}${path}`, { method: 'HEAD' });
      expect(head.status, path).toBe(get.status);
      expect(head.headers.get('content-type'), path).toBe(get.headers.get('content-type'));
      expect(head.headers.get('content-length'), path).toBe(String(Buffer.byteLength(text)));
      expect(await head.text()).toBe('');
    }
  });
});

/** The body of a gateway's GET /health over `services`, which must answer 503. */
async function unreadyHealth(services: Parameters<typeof startGateway>[0]['services']): Promise<string> {
  const gateway = await startGateway({ services, adminToken: undefined, port: 0, logger: silentLogger });
  closers.push(() => gateway.close());
  const health = await fetch(`${gateway.url}/health`);
  expect(health.status).toBe(503);
  return health.text();
}
