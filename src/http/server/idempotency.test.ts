import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ferryContext, ferryErrors, ferryIdempotency } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import {
  IdempotencyGuard,
  isReplayableStatus,
  MemoryIdempotencyStore,
  parseIdempotencyKey,
  requestFingerprint,
  sha256Hex,
  storedBody,
} from './idempotency.js';
import type { ProblemLogger } from './problem.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const close of closers.splice(0)) await close();
});

const silent: ProblemLogger = { error: () => {} };
const ok = { status: 201, headers: { 'content-type': 'application/json' }, body: '{"id":1}' };

describe('MemoryIdempotencyStore', () => {
  it('claims a key once, reports it in progress, then replays what was stored', async () => {
    const store = new MemoryIdempotencyStore();
    expect(await store.begin('k', 'f')).toEqual({ state: 'new' });
    expect(await store.begin('k', 'f')).toEqual({ state: 'in-progress' });
    expect(await store.begin('k', 'other')).toEqual({ state: 'mismatch' });
    await store.complete('k', ok);
    expect(await store.begin('k', 'f')).toEqual({ state: 'replay', response: ok });
    expect(await store.begin('k', 'other')).toEqual({ state: 'mismatch' });
    await store.abandon('k'); // completed keys are not released
    expect((await store.begin('k', 'f')).state).toBe('replay');
  });

  it('releases an abandoned key', async () => {
    const store = new MemoryIdempotencyStore();
    await store.begin('k', 'f');
    await store.abandon('k');
    expect(await store.begin('k', 'another fingerprint')).toEqual({ state: 'new' });
  });

  it('forgets keys after ttlMs', async () => {
    vi.useFakeTimers();
    const store = new MemoryIdempotencyStore({ ttlMs: 1000 });
    await store.begin('k', 'f');
    await store.complete('k', ok);
    vi.advanceTimersByTime(999);
    expect((await store.begin('k', 'f')).state).toBe('replay');
    vi.advanceTimersByTime(2);
    expect((await store.begin('k', 'f')).state).toBe('new');
  });

  it('keeps at most maxEntries keys, forgetting the oldest', async () => {
    const store = new MemoryIdempotencyStore({ maxEntries: 3 });
    for (const key of ['a', 'b', 'c', 'd']) await store.begin(key, 'f');
    expect(store.size).toBe(3);
    expect((await store.begin('a', 'f')).state).toBe('new');
    expect((await store.begin('d', 'f')).state).toBe('in-progress');
  });

  it('rejects nonsensical options', () => {
    expect(() => new MemoryIdempotencyStore({ ttlMs: 0 })).toThrow(/ttlMs/);
    expect(() => new MemoryIdempotencyStore({ maxEntries: 0 })).toThrow(/maxEntries/);
  });
});

describe('IdempotencyGuard', () => {
  it('reads keys of 1 to 255 characters, quoted or not', () => {
    expect(parseIdempotencyKey('abc')).toBe('abc');
    expect(parseIdempotencyKey('"abc"')).toBe('abc');
    expect(parseIdempotencyKey('x'.repeat(255))).toBe('x'.repeat(255));
    expect(parseIdempotencyKey('x'.repeat(256))).toBeUndefined();
    expect(parseIdempotencyKey('')).toBeUndefined();
    expect(parseIdempotencyKey('""')).toBeUndefined();
  });

  it('fingerprints method, path and body', () => {
    expect(requestFingerprint('post', '/a?x=1', sha256Hex('{}'))).toBe(
      'POST /a?x=1 sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
    );
  });

  it('stores final answers and releases the key for those worth retrying', async () => {
    for (const status of [200, 201, 204, 302, 400, 404]) expect(isReplayableStatus(status)).toBe(true);
    for (const status of [408, 409, 422, 425, 429, 499, 500, 503])
      expect(isReplayableStatus(status)).toBe(false);
    const store = new MemoryIdempotencyStore();
    const guard = new IdempotencyGuard({ store });
    const req = { method: 'POST', url: '/x', headers: { 'idempotency-key': 'k' }, bodySha256: sha256Hex('') };
    expect(await guard.begin(req)).toEqual({ action: 'run', key: 'k' });
    await guard.finish(
      'k',
      200,
      { 'content-type': 'image/png', 'x-internal': 'no' },
      new Uint8Array([0, 255]),
    );
    const replay = await guard.begin(req);
    expect(replay.action).toBe('replay');
    if (replay.action !== 'replay') return;
    expect(replay.response.headers).toEqual({ 'content-type': 'image/png' });
    expect([...storedBody(replay.response)]).toEqual([0, 255]);
    expect(await guard.begin({ ...req, method: 'PUT' })).toEqual({ action: 'pass' });
    expect(await guard.begin({ ...req, headers: {} })).toEqual({ action: 'pass' });
  });

  it('stores scoped keys apart, and no scope and key can spell another pair', async () => {
    const guard = new IdempotencyGuard({ store: new MemoryIdempotencyStore() });
    const req = (scope: string, key: string) => ({
      method: 'POST',
      url: '/x',
      headers: { 'idempotency-key': key },
      bodySha256: sha256Hex(''),
      scope,
    });
    const first = await guard.begin(req('a:b', 'c'));
    const second = await guard.begin(req('a', 'b:c'));
    expect(first.action).toBe('run');
    expect(second.action).toBe('run');
    if (first.action === 'run' && second.action === 'run') expect(first.key).not.toBe(second.key);
  });
});

/** The caller, as an authentication layer would establish it; here simply a header. */
const accountOf = (headers: Record<string, string | string[] | undefined>): string | undefined =>
  typeof headers['x-account'] === 'string' ? headers['x-account'] : undefined;

/** One server per framework with the same endpoints, so both must honour the same protocol. */
interface Endpoints {
  calls: number;
  gate: Promise<void> | undefined;
  failNext: boolean;
}

async function startFastify(endpoints: Endpoints): Promise<string> {
  const app = Fastify();
  ferryFastify(app, {
    idempotency: { store: new MemoryIdempotencyStore(), scope: (req) => accountOf(req.headers) },
    logger: silent,
  });
  app.post('/orders', async (req, reply) => {
    endpoints.calls++;
    await endpoints.gate;
    if (endpoints.failNext) {
      endpoints.failNext = false;
      throw new Error('database down');
    }
    reply.code(201).header('location', `/orders/${endpoints.calls}`).header('x-request-only', 'yes');
    return { id: endpoints.calls, received: req.body };
  });
  app.get('/orders', async () => ({ calls: ++endpoints.calls }));
  return listenFastify(app, closers);
}

async function startExpress(endpoints: Endpoints): Promise<string> {
  const app = express();
  app.use(ferryContext());
  app.use(express.json());
  app.use(
    ferryIdempotency({
      store: new MemoryIdempotencyStore(),
      scope: (req) => accountOf(req.headers),
      logger: silent,
    }),
  );
  app.post('/orders', async (req, res) => {
    endpoints.calls++;
    await endpoints.gate;
    if (endpoints.failNext) {
      endpoints.failNext = false;
      throw new Error('database down');
    }
    res
      .status(201)
      .location(`/orders/${endpoints.calls}`)
      .set('x-request-only', 'yes')
      .json({ id: endpoints.calls, received: req.body });
  });
  app.get('/orders', (_req, res) => {
    res.json({ calls: ++endpoints.calls });
  });
  app.use(ferryErrors({ logger: silent }));
  const server = createServer(app);
  return listenNode(server, closers);
}

describe.each([
  { name: 'fastify', start: startFastify },
  { name: 'express', start: startExpress },
])('Idempotency-Key with $name', ({ start }) => {
  let endpoints: Endpoints;
  let url: string;

  async function post(key: string | undefined, body: unknown, path = '/orders', account?: string) {
    const response = await request(`${url}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key === undefined ? {} : { 'idempotency-key': key }),
        ...(account === undefined ? {} : { 'x-account': account }),
      },
      body: JSON.stringify(body),
    });
    return {
      status: response.statusCode,
      headers: response.headers,
      body: (await response.body.json()) as never,
    };
  }

  async function setup(): Promise<void> {
    endpoints = { calls: 0, gate: undefined, failNext: false };
    url = await start(endpoints);
  }

  it('replays the stored response without running the handler again', async () => {
    await setup();
    const first = await post('key-1', { sku: 'A' });
    expect(first.status).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const again = await post('key-1', { sku: 'A' });
    expect(endpoints.calls).toBe(1);
    expect(again.status).toBe(201);
    expect(again.body).toEqual({ id: 1, received: { sku: 'A' } });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers.location).toBe('/orders/1');
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    expect(again.headers['x-request-only']).toBeUndefined();
    expect(again.headers['x-correlation-id']).not.toBe(first.headers['x-correlation-id']);

    const other = await post('key-2', { sku: 'A' });
    expect(other.body).toMatchObject({ id: 2 });
  });

  it('keeps the same key of different callers apart when a scope names them', async () => {
    await setup();
    const ada = await post('order-1', { sku: 'A' }, '/orders', 'ada');
    const bob = await post('order-1', { sku: 'B' }, '/orders', 'bob');
    expect([ada.status, bob.status]).toEqual([201, 201]);
    expect(bob.body).toMatchObject({ id: 2, received: { sku: 'B' } });
    const adaAgain = await post('order-1', { sku: 'A' }, '/orders', 'ada');
    expect(adaAgain.headers['idempotent-replayed']).toBe('true');
    expect(adaAgain.body).toMatchObject({ id: 1 });
    const unscoped = await post('order-1', { sku: 'C' });
    expect(unscoped.body).toMatchObject({ id: 3 });
    expect(endpoints.calls).toBe(3);
  });

  it('refuses the same key with another body or path with 422', async () => {
    await setup();
    await post('key-1', { sku: 'A' });
    const otherBody = await post('key-1', { sku: 'B' });
    expect(otherBody.status).toBe(422);
    expect(otherBody.headers['content-type']).toBe('application/problem+json');
    expect(otherBody.body).toMatchObject({
      status: 422,
      code: 'IDEMPOTENCY_KEY_MISMATCH',
      instance: '/orders',
    });
    const otherPath = await post('key-1', { sku: 'A' }, '/orders?dryRun=1');
    expect(otherPath.status).toBe(422);
    expect(endpoints.calls).toBe(1);
  });

  it('refuses the same key with 409 while the first request is running', async () => {
    await setup();
    let open!: () => void;
    endpoints.gate = new Promise((resolve) => {
      open = resolve;
    });
    const first = post('key-1', { sku: 'A' });
    await expect.poll(() => endpoints.calls).toBe(1);
    const concurrent = await post('key-1', { sku: 'A' });
    expect(concurrent.status).toBe(409);
    expect(concurrent.body).toMatchObject({ status: 409, code: 'IDEMPOTENCY_KEY_IN_USE' });
    expect(concurrent.headers['retry-after']).toBe('1');
    open();
    expect((await first).status).toBe(201);
    const after = await post('key-1', { sku: 'A' });
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(endpoints.calls).toBe(1);
  });

  it('releases the key when the handler fails, so that a retry runs it', async () => {
    await setup();
    endpoints.failNext = true;
    const failed = await post('key-1', { sku: 'A' });
    expect(failed.status).toBe(500);
    const retried = await post('key-1', { sku: 'A' });
    expect(retried.status).toBe(201);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
    expect(endpoints.calls).toBe(2);
  });

  it('ignores the key on GET and refuses a malformed key', async () => {
    await setup();
    for (let i = 0; i < 2; i++) {
      const response = await request(`${url}/orders`, { headers: { 'idempotency-key': 'key-1' } });
      expect(response.headers['idempotent-replayed']).toBeUndefined();
      expect(await response.body.json()).toEqual({ calls: i + 1 });
    }
    const tooLong = await post('k'.repeat(256), { sku: 'A' });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
    expect(endpoints.calls).toBe(2);
  });

  it('fingerprints the raw body: the same JSON spelled differently is another request', async () => {
    await setup();
    const send = async (body: string) => {
      const response = await request(`${url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'key-raw' },
        body,
      });
      await response.body.dump();
      return { status: response.statusCode, replayed: response.headers['idempotent-replayed'] };
    };
    expect(await send('{"sku":"A"}')).toEqual({ status: 201, replayed: undefined });
    expect(await send('{"sku":"A"}')).toEqual({ status: 201, replayed: 'true' });
    expect((await send('{ "sku": "A" }')).status).toBe(422);
  });

  it('runs requests without a key as usual', async () => {
    await setup();
    await post(undefined, { sku: 'A' });
    const second = await post(undefined, { sku: 'A' });
    expect(second.headers['idempotent-replayed']).toBeUndefined();
    expect(endpoints.calls).toBe(2);
  });
});

describe('Idempotency-Key with express, body parsed before the context', () => {
  it('fingerprints the parsed body when the raw one is gone', async () => {
    let calls = 0;
    const app = express();
    app.use(express.json());
    app.use(ferryContext());
    app.use(ferryIdempotency({ store: new MemoryIdempotencyStore(), logger: silent }));
    app.post('/orders', (req, res) => {
      res.status(201).json({ id: ++calls, received: req.body });
    });
    app.use(ferryErrors({ logger: silent }));
    const server = createServer(app);
    const url = await listenNode(server, closers);
    const send = async (body: string) => {
      const response = await request(`${url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'k' },
        body,
      });
      return { status: response.statusCode, headers: response.headers, body: await response.body.json() };
    };
    expect((await send('{"sku":"A"}')).status).toBe(201);
    const replay = await send('{ "sku": "A" }');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual({ id: 1, received: { sku: 'A' } });
    expect((await send('{"sku":"B"}')).status).toBe(422);
    expect(calls).toBe(1);
  });
});
