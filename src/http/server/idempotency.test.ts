import { createServer, request as httpRequest } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as root from '../../index.js';
import { isTimeoutError } from '../../resilience/errors.js';
import { ServiceClient } from '../client.js';
import { isHttpError } from '../errors.js';
import { ferryContext, ferryErrors, ferryIdempotency } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import { sendRaw } from './fixtures/raw-http.js';
import {
  IdempotencyGuard,
  isReplayableStatus,
  jsonBodySha256,
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
    expect(await store.begin('k', 'f')).toEqual({ state: 'new', claim: expect.any(String) });
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
    expect(await store.begin('k', 'another fingerprint')).toMatchObject({ state: 'new' });
  });

  it('holds a claimed key for leaseMs at most, and a lapsed claim cannot end the next one', async () => {
    vi.useFakeTimers();
    const store = new MemoryIdempotencyStore({ leaseMs: 1000 });
    const first = await store.begin('k', 'f');
    vi.advanceTimersByTime(999);
    expect((await store.begin('k', 'f')).state).toBe('in-progress');
    vi.advanceTimersByTime(2);
    const second = await store.begin('k', 'f');
    expect(second.state).toBe('new');
    if (first.state !== 'new' || second.state !== 'new') return;
    expect(second.claim).not.toBe(first.claim);
    await store.abandon('k', first.claim);
    await store.complete('k', ok, first.claim);
    expect((await store.begin('k', 'f')).state).toBe('in-progress');
    await store.complete('k', ok, second.claim);
    expect(await store.begin('k', 'f')).toEqual({ state: 'replay', response: ok });
  });

  it('stores the answer of a lapsed claim that nobody took over', async () => {
    vi.useFakeTimers();
    const store = new MemoryIdempotencyStore({ leaseMs: 1000 });
    const claimed = await store.begin('k', 'f');
    vi.advanceTimersByTime(5000);
    await store.complete('k', ok, claimed.state === 'new' ? claimed.claim : undefined);
    expect((await store.begin('k', 'f')).state).toBe('replay');
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

  it('keeps at most maxEntries answers, forgetting the oldest', async () => {
    const store = new MemoryIdempotencyStore({ maxEntries: 3 });
    const answer = { status: 201, headers: {}, body: '{}' };
    for (const key of ['a', 'b', 'c', 'd']) {
      const begun = await store.begin(key, 'f');
      await store.complete(key, answer, begun.state === 'new' ? begun.claim : undefined);
    }
    expect(store.size).toBe(3);
    expect((await store.begin('a', 'f')).state).toBe('new');
    expect((await store.begin('d', 'f')).state).toBe('replay');
  });

  it('never forgets a key whose handler is still running, however many answers arrive meanwhile', async () => {
    const store = new MemoryIdempotencyStore({ maxEntries: 5 });
    expect((await store.begin('slow', 'f')).state).toBe('new');
    const answer = { status: 200, headers: {}, body: '{}' };
    for (let i = 0; i < 10; i++) {
      const begun = await store.begin(`quick-${i}`, 'f');
      await store.complete(`quick-${i}`, answer, begun.state === 'new' ? begun.claim : undefined);
    }
    expect((await store.begin('slow', 'f')).state).toBe('in-progress');
    expect(store.size).toBeLessThanOrEqual(6);
  });

  it('forgets expired answers even behind a key still in flight', async () => {
    vi.useFakeTimers();
    const store = new MemoryIdempotencyStore({ ttlMs: 1000, leaseMs: 60_000 });
    const answer = { status: 200, headers: {}, body: '{}' };
    expect((await store.begin('slow', 'f')).state).toBe('new');
    for (const key of ['a', 'b']) {
      const begun = await store.begin(key, 'f');
      await store.complete(key, answer, begun.state === 'new' ? begun.claim : undefined);
    }
    vi.advanceTimersByTime(1001);
    await store.begin('c', 'f');
    // 'a' and 'b' expired: only the key in flight and the new one are remembered.
    expect(store.size).toBe(2);
    expect((await store.begin('slow', 'f')).state).toBe('in-progress');
    expect((await store.begin('a', 'f')).state).toBe('new');
  });

  it('keeps maxEntries answers beside the keys in flight, which it does not count', async () => {
    const store = new MemoryIdempotencyStore({ maxEntries: 3 });
    const answer = { status: 200, headers: {}, body: '{}' };
    for (const key of ['slow', 'slower', 'slowest']) expect((await store.begin(key, 'f')).state).toBe('new');
    // As many handlers running as maxEntries: a fresh answer is still kept, its retry replayed.
    const charge = await store.begin('pay-1', 'f');
    await store.complete('pay-1', answer, charge.state === 'new' ? charge.claim : undefined);
    expect((await store.begin('pay-1', 'f')).state).toBe('replay');
    for (const key of ['d', 'e', 'g']) {
      const begun = await store.begin(key, 'f');
      await store.complete(key, answer, begun.state === 'new' ? begun.claim : undefined);
    }
    expect(store.size).toBe(6);
    for (const key of ['e', 'g']) expect((await store.begin(key, 'f')).state, key).toBe('replay');
    for (const key of ['slow', 'slower', 'slowest'])
      expect((await store.begin(key, 'f')).state).toBe('in-progress');
    expect((await store.begin('pay-1', 'f')).state).toBe('new');
  });

  it('rejects nonsensical options', () => {
    expect(() => new MemoryIdempotencyStore({ ttlMs: 0 })).toThrow(/ttlMs/);
    expect(() => new MemoryIdempotencyStore({ maxEntries: 0 })).toThrow(/maxEntries/);
    expect(() => new MemoryIdempotencyStore({ leaseMs: 0 })).toThrow(/leaseMs/);
    // A misspelt ttl kept answers 24 h where minutes were meant, without a word.
    expect(() => new MemoryIdempotencyStore({ ttl: 60_000 } as never)).toThrow(
      /MemoryIdempotencyStore has no option "ttl": it takes ttlMs, leaseMs, maxEntries/,
    );
    expect(() => new IdempotencyGuard({ store: new MemoryIdempotencyStore(), maxHeldBodyBytes: -1 })).toThrow(
      /maxHeldBodyBytes/,
    );
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

  it('fingerprints a JSON body by its canonical JSON, any other by its raw bytes', async () => {
    const guard = new IdempotencyGuard({ store: new MemoryIdempotencyStore() });
    const json = { 'content-type': 'application/json; charset=utf-8', 'idempotency-key': 'k' };
    const begin = (headers: Record<string, string>, body: unknown, bodySha256 = sha256Hex('raw')) =>
      guard.begin({
        method: 'POST',
        url: '/x',
        headers,
        bodySha256,
        jsonSha256: jsonBodySha256(headers['content-type'], body),
      });
    expect((await begin(json, { a: 1, b: [1, 2] }, sha256Hex('{"a":1,"b":[1,2]}'))).action).toBe('run');
    // Another spelling of the same data (other raw bytes): the same request, still running.
    expect(await begin(json, { b: [1, 2], a: 1 }, sha256Hex('{ "b":[1,2], "a":1 }'))).toMatchObject({
      action: 'reject',
      error: { status: 409 },
    });
    expect(await begin(json, { a: 1, b: [2, 1] })).toMatchObject({
      action: 'reject',
      error: { status: 422 },
    });
    expect(jsonBodySha256('application/problem+json', { a: 1 })).toBe(sha256Hex('{"a":1}'));
    // Not JSON, or not what a JSON parser makes: the raw bytes count.
    expect(jsonBodySha256('text/plain', { a: 1 })).toBeUndefined();
    expect(jsonBodySha256(undefined, { a: 1 })).toBeUndefined();
    expect(jsonBodySha256('application/json', '{"a":1}')).toBeUndefined();
    expect(jsonBodySha256('application/json', new Date())).toBeUndefined();
    expect(jsonBodySha256('application/json', undefined)).toBeUndefined();
    // An adapter for another framework gets it from the package's root, beside IdempotencyGuard.
    expect(root.jsonBodySha256).toBe(jsonBodySha256);
    expect(root.IdempotencyGuard).toBe(IdempotencyGuard);
  });

  it('stores final answers and releases the key for those worth retrying', async () => {
    for (const status of [200, 201, 204, 302, 400, 404]) expect(isReplayableStatus(status)).toBe(true);
    for (const status of [408, 409, 422, 425, 429, 499, 500, 503])
      expect(isReplayableStatus(status)).toBe(false);
    const store = new MemoryIdempotencyStore();
    const guard = new IdempotencyGuard({ store });
    const req = { method: 'POST', url: '/x', headers: { 'idempotency-key': 'k' }, bodySha256: sha256Hex('') };
    expect(await guard.begin(req)).toEqual({ action: 'run', key: 'k', claim: expect.any(String) });
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

  it('refuses a key sent on two header lines (read as one joined value, it would run the request again)', async () => {
    await setup();
    const first = await post('key-1', { sku: 'A' });
    expect(first.status).toBe(201);
    // Node joins the two lines into `key-1, key-1`: before, a key nobody sent, and a second call.
    const twice = await rawPost(url, ['idempotency-key', 'key-1', 'Idempotency-Key', 'key-1'], { sku: 'A' });
    expect(twice.status).toBe(400);
    expect(twice.contentType).toMatch(/^application\/problem\+json/);
    expect(twice.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
    const different = await rawPost(url, ['idempotency-key', 'key-2', 'idempotency-key', 'key-3'], {
      sku: 'A',
    });
    expect(different.status).toBe(400);
    expect(endpoints.calls).toBe(1);
    // One line holding a comma is one key.
    const comma = await post('key-2, key-3', { sku: 'A' });
    expect(comma.status).toBe(201);
    expect(endpoints.calls).toBe(2);
  });

  it('fingerprints a JSON body as its data: members in another order or spacing are the same body, an array in another order is not', async () => {
    await setup();
    const send = async (body: string) => {
      const response = await request(`${url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'key-json' },
        body,
      });
      await response.body.dump();
      return { status: response.statusCode, replayed: response.headers['idempotent-replayed'] };
    };
    const first = '{"sku":"A","lines":[{"id":1,"qty":2},{"id":2,"qty":1}]}';
    expect(await send(first)).toEqual({ status: 201, replayed: undefined });
    expect(await send(first)).toEqual({ status: 201, replayed: 'true' });
    expect(await send('{ "lines": [ {"qty":2, "id":1}, {"qty":1,"id":2} ], "sku": "\\u0041" }')).toEqual({
      status: 201,
      replayed: 'true',
    });
    expect((await send('{"sku":"A","lines":[{"id":2,"qty":1},{"id":1,"qty":2}]}')).status).toBe(422);
    expect((await send('{"sku":"A","lines":[{"id":1,"qty":2},{"id":2,"qty":1}],"note":null}')).status).toBe(
      422,
    );
    expect(endpoints.calls).toBe(1);
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

// ---------------------------------------------------------------------------------------------
// The key is held for as long as the handler runs, whatever the client does

/** A POST /charge that takes `ms` and counts its runs; the keys it was sent are recorded. */
interface SlowCharge {
  runs: number;
  finished: number;
  keys: string[];
  /** Waited for instead of the delay: a handler that hangs until the test ends. */
  gate?: Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function startSlowFastify(charge: SlowCharge, ms: number, store = new MemoryIdempotencyStore()) {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store }, logger: silent });
  app.post('/charge', async (req, reply) => {
    const run = ++charge.runs;
    charge.keys.push(String(req.headers['idempotency-key']));
    await (charge.gate ?? sleep(ms));
    charge.finished++;
    reply.code(201);
    return { charge: run, received: req.body };
  });
  // Resolves with nothing: Fastify sends an empty answer, or nothing at all when the client left.
  app.post('/mark', async (_req, reply) => {
    charge.runs++;
    await sleep(ms);
    charge.finished++;
    reply.code(204);
  });
  return listenFastify(app, closers);
}

async function startSlowExpress(charge: SlowCharge, ms: number, store = new MemoryIdempotencyStore()) {
  const app = express();
  app.use(ferryContext());
  app.use(express.json());
  app.use(ferryIdempotency({ store, logger: silent }));
  app.post('/charge', async (req, res) => {
    const run = ++charge.runs;
    charge.keys.push(String(req.headers['idempotency-key']));
    await (charge.gate ?? sleep(ms));
    charge.finished++;
    res.status(201).json({ charge: run, received: req.body });
  });
  app.use(ferryErrors({ logger: silent }));
  return listenNode(createServer(app), closers);
}

/** A POST of JSON `body` to `${url}/orders` with `headerLines` (name, value, …) sent as they are, repeats included. */
async function rawPost(url: string, headerLines: string[], body: unknown) {
  const text = JSON.stringify(body);
  const lines = [];
  for (let i = 0; i < headerLines.length; i += 2) lines.push(`${headerLines[i]}: ${headerLines[i + 1]}\r\n`);
  const answer = await sendRaw(
    url,
    `POST /orders HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n${lines.join('')}\r\n${text}`,
  );
  return {
    status: answer.status,
    contentType: answer.headers['content-type'] ?? '',
    body: JSON.parse(answer.body),
  };
}

async function postJson(url: string, key: string, body: unknown) {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify(body),
  });
  const text = await response.body.text();
  return {
    status: response.statusCode,
    headers: response.headers,
    body: text === '' ? undefined : JSON.parse(text),
  };
}

/** Sends a keyed POST with node:http and gives up on it (socket destroyed) once the handler runs. */
async function postAndLeave(url: string, key: string, body: unknown, running: () => boolean): Promise<void> {
  const sent = httpRequest(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
  });
  sent.on('error', () => {});
  sent.end(JSON.stringify(body));
  await expect.poll(running).toBe(true);
  await sleep(100);
  sent.destroy();
  await sleep(100); // the server sees the connection close
}

describe.each([
  { name: 'fastify', start: startSlowFastify },
  { name: 'express', start: startSlowExpress },
])('Idempotency-Key with $name, client gone before the answer', ({ start }) => {
  it('runs a POST retried by ServiceClient after its timeouts once, and replays it afterwards', async () => {
    const charge: SlowCharge = { runs: 0, finished: 0, keys: [] };
    const url = await start(charge, 2500);
    const client = new ServiceClient(url, { timeout: 300 });
    closers.push(() => client.close());
    let attempts = 0;
    client.on('attempt', () => {
      attempts++;
    });
    const error: unknown = await client.post('/charge', { amount: 10 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(attempts).toBeGreaterThan(1);
    // The retry found the first still running (409), or timed out waiting like the first.
    expect(isTimeoutError(error) || (isHttpError(error) && error.status === 409)).toBe(true);
    expect(charge.runs).toBe(1);

    await expect.poll(() => charge.finished, { timeout: 5000 }).toBe(1);
    const [key] = charge.keys;
    const replay = await postJson(`${url}/charge`, String(key), { amount: 10 });
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual({ charge: 1, received: { amount: 10 } });
    expect(charge.runs).toBe(1);
  });

  it('answers 409 while the abandoned first request runs, then replays its answer', async () => {
    const charge: SlowCharge = { runs: 0, finished: 0, keys: [] };
    const url = await start(charge, 1000);
    await postAndLeave(`${url}/charge`, 'left-1', { amount: 10 }, () => charge.runs === 1);

    const during = await postJson(`${url}/charge`, 'left-1', { amount: 10 });
    expect(during.status).toBe(409);
    expect(during.headers['content-type']).toBe('application/problem+json');
    expect(during.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_IN_USE' });

    await expect.poll(() => charge.finished, { timeout: 5000 }).toBe(1);
    const after = await postJson(`${url}/charge`, 'left-1', { amount: 10 });
    expect(after.status).toBe(201);
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(after.body).toEqual({ charge: 1, received: { amount: 10 } });
    expect(charge.runs).toBe(1);
  });

  it("frees the key of a handler that never answers once the store's lease runs out", async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    closers.push(async () => open());
    const charge: SlowCharge = { runs: 0, finished: 0, keys: [], gate };
    const url = await start(charge, 0, new MemoryIdempotencyStore({ leaseMs: 1000 }));
    await postAndLeave(`${url}/charge`, 'hung-1', { amount: 10 }, () => charge.runs === 1);
    expect((await postJson(`${url}/charge`, 'hung-1', { amount: 10 })).status).toBe(409);
    await sleep(1000);
    await postAndLeave(`${url}/charge`, 'hung-1', { amount: 10 }, () => charge.runs === 2);
  });
});

describe('Idempotency-Key with fastify, handler resolving with nothing after the client left', () => {
  it('stores the empty answer Fastify would have sent', async () => {
    const charge: SlowCharge = { runs: 0, finished: 0, keys: [] };
    const url = await startSlowFastify(charge, 500);
    await postAndLeave(`${url}/mark`, 'mark-1', {}, () => charge.runs === 1);
    await expect.poll(() => charge.finished, { timeout: 5000 }).toBe(1);
    const after = await postJson(`${url}/mark`, 'mark-1', {});
    expect(after.status).toBe(204);
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(charge.runs).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Bodies no parser reads: the handler streams them itself (as multipart handlers do)

async function readAll(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

interface Upload {
  runs: number;
}

async function startStreamingFastify(upload: Upload, idempotency: { maxHeldBodyBytes?: number } = {}) {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore(), ...idempotency }, logger: silent });
  app.addContentTypeParser('application/octet-stream', (_req, _payload, done) => done(null));
  app.post('/upload', async (req, reply) => {
    const run = ++upload.runs;
    const bytes = await readAll(req.raw);
    reply.code(201);
    return { run, size: bytes.length, sha256: sha256Hex(bytes) };
  });
  app.post('/ignore', async (_req, reply) => {
    reply.code(201);
    return { run: ++upload.runs };
  });
  return listenFastify(app, closers);
}

function streamingExpress(withContext: boolean) {
  return async (upload: Upload, idempotency: { maxHeldBodyBytes?: number } = {}) => {
    const app = express();
    if (withContext) app.use(ferryContext());
    app.use(express.json());
    app.use(ferryIdempotency({ store: new MemoryIdempotencyStore(), logger: silent, ...idempotency }));
    app.post('/upload', async (req, res) => {
      const run = ++upload.runs;
      const bytes = await readAll(req);
      res.status(201).json({ run, size: bytes.length, sha256: sha256Hex(bytes) });
    });
    app.post('/ignore', (_req, res) => {
      res.status(201).json({ run: ++upload.runs });
    });
    app.use(ferryErrors({ logger: silent }));
    return listenNode(createServer(app), closers);
  };
}

describe.each([
  { name: 'fastify with a pass-through parser', start: startStreamingFastify },
  { name: 'express, handler reading the request', start: streamingExpress(true) },
  { name: 'express without ferryContext, handler reading the request', start: streamingExpress(false) },
])('Idempotency-Key with $name', ({ start }) => {
  const send = async (url: string, key: string, body: Uint8Array | string) => {
    const response = await request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'idempotency-key': key },
      body,
    });
    return {
      status: response.statusCode,
      replayed: response.headers['idempotent-replayed'],
      body: (await response.body.json()) as Record<string, unknown>,
    };
  };

  it('fingerprints the bytes the handler reads: same body replays, another body is refused', async () => {
    const upload: Upload = { runs: 0 };
    const url = await start(upload);
    const small = 'part one';
    const first = await send(`${url}/upload`, 'up-1', small);
    expect(first).toMatchObject({ status: 201, replayed: undefined });
    expect(first.body).toEqual({ run: 1, size: small.length, sha256: sha256Hex(small) });
    expect(await send(`${url}/upload`, 'up-1', small)).toMatchObject({ status: 201, replayed: 'true' });
    const other = await send(`${url}/upload`, 'up-1', 'part two');
    expect(other.status).toBe(422);
    expect(other.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_MISMATCH' });
    expect(upload.runs).toBe(1);
  });

  it('hands the handler every byte of a large body, and tells bodies apart by their last byte', async () => {
    const upload: Upload = { runs: 0 };
    const url = await start(upload);
    const large = Buffer.alloc(300_000, 7);
    const first = await send(`${url}/upload`, 'up-large', large);
    expect(first.body).toEqual({ run: 1, size: large.length, sha256: sha256Hex(large) });
    expect((await send(`${url}/upload`, 'up-large', large)).replayed).toBe('true');
    const changed = Buffer.from(large);
    changed[changed.length - 1] = 8;
    expect((await send(`${url}/upload`, 'up-large', changed)).status).toBe(422);
    expect(upload.runs).toBe(1);
  });

  it('fingerprints a body the handler never reads', async () => {
    const upload: Upload = { runs: 0 };
    const url = await start(upload);
    expect((await send(`${url}/ignore`, 'ig-1', 'a')).status).toBe(201);
    expect((await send(`${url}/ignore`, 'ig-1', 'a')).replayed).toBe('true');
    expect((await send(`${url}/ignore`, 'ig-1', 'b')).status).toBe(422);
    expect(upload.runs).toBe(1);
  });

  it('refuses with 413 a streamed body larger than it holds, without running the handler', async () => {
    const upload: Upload = { runs: 0 };
    const url = await start(upload, { maxHeldBodyBytes: 1000 });
    const refused = await send(`${url}/upload`, 'up-big', Buffer.alloc(50_000, 1));
    expect(refused.status).toBe(413);
    expect(refused.body).toMatchObject({ code: 'IDEMPOTENCY_BODY_TOO_LARGE' });
    expect(upload.runs).toBe(0);
    expect((await send(`${url}/upload`, 'up-ok', Buffer.alloc(1000, 1))).status).toBe(201);
  });

  it('claims nothing for a body the client gave up on half-way', async () => {
    const upload: Upload = { runs: 0 };
    const url = await start(upload);
    const partial = httpRequest(`${url}/upload`, {
      method: 'POST',
      headers: {
        'content-type': 'application/octet-stream',
        'idempotency-key': 'up-cut',
        'content-length': 1000,
      },
    });
    partial.on('error', () => {});
    partial.write(Buffer.alloc(100, 1));
    await sleep(100);
    partial.destroy();
    await sleep(100);
    const whole = await send(`${url}/upload`, 'up-cut', Buffer.alloc(1000, 1));
    expect(whole).toMatchObject({ status: 201, replayed: undefined, body: { run: 1, size: 1000 } });
  });
});

describe('Idempotency-Key with fastify.inject and a pass-through parser', () => {
  it('fingerprints the body the handler reads from the injected request', async () => {
    let runs = 0;
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.addContentTypeParser('application/octet-stream', (_req, _payload, done) => done(null));
    app.post('/upload', async (req) => ({ run: ++runs, body: (await readAll(req.raw)).toString() }));
    closers.push(() => app.close());
    const send = (payload: string) =>
      app.inject({
        method: 'POST',
        url: '/upload',
        headers: { 'content-type': 'application/octet-stream', 'idempotency-key': 'inj-1' },
        payload,
      });
    const first = await send('abc');
    expect(first.json()).toEqual({ run: 1, body: 'abc' });
    expect((await send('abc')).headers['idempotent-replayed']).toBe('true');
    expect((await send('abd')).statusCode).toBe(422);
    expect(runs).toBe(1);
  });
});

describe('Idempotency-Key with fastify and a route schema', () => {
  it('fingerprints the body as sent, before validation fills in defaults or coerces it', async () => {
    let runs = 0;
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    const schema = {
      body: {
        type: 'object',
        properties: { sku: { type: 'string' }, qty: { type: 'integer', default: 1 } },
      },
    };
    app.post('/orders', { schema }, async (req) => ({ run: ++runs, body: req.body }));
    closers.push(() => app.close());
    const send = (payload: string) =>
      app.inject({
        method: 'POST',
        url: '/orders',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'schema-1' },
        payload,
      });
    expect((await send('{"sku":"A"}')).json()).toEqual({ run: 1, body: { sku: 'A', qty: 1 } });
    expect((await send(' {"sku" : "A"}')).headers['idempotent-replayed']).toBe('true');
    // The handler would see the same data, but the client sent other data.
    expect((await send('{"sku":"A","qty":1}')).statusCode).toBe(422);
    expect((await send('{"sku":"A","qty":"1"}')).statusCode).toBe(422);
    expect(runs).toBe(1);
  });
});
