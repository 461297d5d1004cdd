import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runWithContext } from '../context/context.js';
import { isBulkheadFullError, isCircuitOpenError, isTimeoutError } from '../resilience/errors.js';
import { FaultServer } from '../testing/fault-server.js';
import { waitFor } from '../testing/wait.js';
import { parseRetryAfter, routeOfPath, ServiceClient } from './client.js';
import { isHttpError, isInvalidResponseBodyError, isRequestBodyNotSerializableError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { cleanups, server, client } = clientKit({ retry: { maxAttempts: 3, backoff: () => 10 } });

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

describe('ServiceClient', () => {
  it('returns the parsed JSON body and sends correlation and trace headers', async () => {
    const s = await server();
    s.enqueue({ status: 200, body: { id: 42, name: 'Ada' } });
    const c = client(s);
    expect(await c.get('/users/42')).toEqual({ id: 42, name: 'Ada' });
    const [request] = s.requests;
    expect(request).toMatchObject({ method: 'GET', path: '/users/42' });
    expect(request!.headers['x-correlation-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(request!.headers.traceparent).toMatch(TRACEPARENT);
    expect(request!.headers['idempotency-key']).toBeUndefined();
  });

  it('refuses a body JSON cannot carry with a typed error, and sends nothing', async () => {
    const s = await server();
    const c = client(s);
    let deep: unknown = 1;
    for (let i = 0; i < 20_000; i++) deep = [deep];
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const body of [deep, cyclic, { n: 1n }, () => 1]) {
      const error = await rejection(c.post('/orders', body));
      expect(isRequestBodyNotSerializableError(error), String(error)).toBe(true);
      expect(error).toMatchObject({ code: 'REQUEST_BODY_NOT_SERIALIZABLE' });
    }
    expect(s.requests).toHaveLength(0);
  });

  it('sends an ArrayBuffer and every view of one as its bytes, application/octet-stream unless told otherwise', async () => {
    const s = await server();
    const c = client(s);
    const ascii = (text: string): ArrayBuffer => new TextEncoder().encode(text).buffer as ArrayBuffer;
    const bodies: [unknown, string][] = [
      [ascii('ab'), 'ab'],
      [new DataView(ascii('..cd..'), 2, 2), 'cd'],
      [new Uint16Array(ascii('efgh')), 'efgh'],
      [new Int32Array(ascii('....ijkl....'), 4, 1), 'ijkl'],
      [new Float64Array(ascii('mnopqrst')), 'mnopqrst'],
      [new Uint8ClampedArray(ascii('uv')), 'uv'],
      [new BigUint64Array(ascii('01234567')), '01234567'],
      [new Uint8Array(ascii('..wx'), 2), 'wx'],
      [Buffer.from('yz'), 'yz'],
    ];
    for (const [body] of bodies) await c.post('/bytes', body);
    expect(s.requests.map((request) => request.body)).toEqual(bodies.map(([, text]) => text));
    for (const request of s.requests)
      expect(request.headers['content-type']).toBe('application/octet-stream');
    await c.put('/bytes', new Uint16Array(ascii('png!')), { headers: { 'Content-Type': 'image/png' } });
    expect(s.requests[bodies.length]).toMatchObject({
      body: 'png!',
      headers: { 'content-type': 'image/png' },
    });
  });

  it('refuses a stream, Blob, FormData, Map… body naming its type, and sends nothing', async () => {
    const s = await server();
    const c = client(s);
    const bodies: [unknown, string][] = [
      [Readable.from(['x']), 'Readable'],
      [new ReadableStream(), 'ReadableStream'],
      [new Blob(['x']), 'Blob'],
      [new FormData(), 'FormData'],
      [new URLSearchParams('a=1'), 'URLSearchParams'],
      [new Map([['a', 1]]), 'Map'],
      [new Set([1]), 'Set'],
      [Promise.resolve({ a: 1 }), 'Promise'],
      [(function* () {})(), 'Generator'],
    ];
    for (const [body, kind] of bodies) {
      const error = await rejection(c.post('/orders', body));
      expect(isRequestBodyNotSerializableError(error), `${kind}: ${String(error)}`).toBe(true);
      expect((error as Error).message).toContain(kind);
    }
    expect(s.requests).toHaveLength(0);
    // A value with toJSON is what toJSON says, whatever its class; a plain class, its fields.
    class Money {
      constructor(readonly cents: number) {}
      toJSON(): string {
        return `${this.cents / 100} EUR`;
      }
    }
    class Tags extends Set<string> {
      toJSON(): string[] {
        return [...this];
      }
    }
    class Line {
      constructor(readonly sku: string) {}
    }
    await c.post('/orders', { total: new Money(250), tags: new Tags(['gift']), line: new Line('tea') });
    await c.post('/orders', new Tags(['a', 'b']));
    await c.post('/orders', new Date(0));
    expect(s.requests.map((request) => request.body)).toEqual([
      '{"total":"2.5 EUR","tags":["gift"],"line":{"sku":"tea"}}',
      '["a","b"]',
      '"1970-01-01T00:00:00.000Z"',
    ]);
    expect(s.requests[0]!.headers['content-type']).toBe('application/json');
  });

  it('propagates the ambient correlation id and continues the ambient trace', async () => {
    const s = await server();
    const c = client(s);
    const parent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    await runWithContext({ correlationId: 'corr-123', traceparent: parent }, () => c.get('/x'));
    const headers = s.requests[0]!.headers;
    expect(headers['x-correlation-id']).toBe('corr-123');
    const [, traceId, spanId, flags] = TRACEPARENT.exec(String(headers.traceparent))!;
    expect(traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(spanId).not.toBe('00f067aa0ba902b7');
    expect(flags).toBe('01');
  });

  it('retries a GET on 502, 503, 504, 429 and 408, and reports each retry', async () => {
    const s = await server();
    s.enqueue({ status: 503 }, { status: 502 }, { status: 200, body: { ok: 1 } });
    const c = client(s);
    const retries: number[] = [];
    c.on('retry', (e) => retries.push(e.attempt));
    expect(await c.get('/flaky')).toEqual({ ok: 1 });
    expect(s.requests).toHaveLength(3);
    expect(retries).toEqual([1, 2]);
    for (const status of [504, 429, 408]) {
      s.enqueue({ status }, { status: 200, body: { status } });
      expect(await c.get(`/s${status}`)).toEqual({ status });
    }
  });

  it('never retries other 4xx nor 500, and rejects with HttpError carrying the problem', async () => {
    const s = await server();
    s.enqueue({ status: 404, problem: { title: 'No such user', detail: 'user 7 does not exist' } });
    const c = client(s);
    const error = await rejection(c.get('/users/7'));
    expect(isHttpError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'HTTP_ERROR', status: 404, problem: { title: 'No such user' } });
    s.enqueue({ status: 500 });
    expect(await rejection(c.get('/boom'))).toMatchObject({ status: 500 });
    s.enqueue({ status: 400 });
    expect(await rejection(c.get('/bad'))).toMatchObject({ status: 400 });
    expect(s.requests).toHaveLength(3);
  });

  it('honours Retry-After before retrying', async () => {
    const s = await server();
    s.enqueue({ status: 503, retryAfter: 1 }, { status: 200, body: { ok: true } });
    const c = client(s);
    const started = Date.now();
    await c.get('/busy');
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    // A Retry-After beyond what the client accepts ends the retries instead of waiting.
    s.enqueue({ status: 503, retryAfter: 3600 });
    const error = await rejection(c.get('/very-busy'));
    expect(error).toMatchObject({ status: 503, retryAfterMs: 3_600_000 });
  });

  it('adds one Idempotency-Key to a retried POST and sends the same key on every attempt', async () => {
    const s = await server();
    s.enqueue({ status: 503 }, { status: 201, body: { created: true } });
    const c = client(s);
    expect(await c.post('/orders', { sku: 'tea' })).toEqual({ created: true });
    const [first, second] = s.requests;
    expect(first!.headers['idempotency-key']).toMatch(/^[0-9a-f-]{36}$/);
    expect(second!.headers['idempotency-key']).toBe(first!.headers['idempotency-key']);
    expect(JSON.parse(second!.body)).toEqual({ sku: 'tea' });
    expect(second!.headers['content-type']).toBe('application/json');
    // The caller's own key is used as it is, given as an option or as a header.
    await c.post('/orders', { sku: 'pie' }, { idempotencyKey: 'order-77' });
    expect(s.requests[2]!.headers['idempotency-key']).toBe('order-77');
    await c.post(
      '/orders',
      { sku: 'jam' },
      { headers: { 'Idempotency-Key': 'order-78', 'Content-Type': 'application/vnd.x+json' } },
    );
    expect(s.requests[3]!.headers['idempotency-key']).toBe('order-78');
    expect(s.requests[3]!.headers['content-type']).toBe('application/vnd.x+json');
  });

  it('refuses a call header that cannot be sent before anything is sent, and keeps every connection for the next calls', async () => {
    const s = await server();
    s.setDefault({ status: 200, body: { ok: true } });
    // Two connections: undici kept one for good per such call, so that later calls timed out.
    const c = client(s, { connections: 2, timeout: 1000, retry: false });
    const bad = [
      { 'x-note': 'a\nb' },
      { 'x-note': 'a\rb' },
      { 'x-note': 'nul\u0000' },
      { 'bad name': 'v' },
      { 'Transfer-Encoding': 'chunked' },
      { 'keep-alive': 'timeout=5' },
      { upgrade: 'websocket' },
      { connection: 'upgrade' },
    ];
    for (const headers of bad) {
      const error = await rejection(c.get('/p', { headers }));
      expect(error, JSON.stringify(headers)).toMatchObject({ code: 'INVALID_REQUEST' });
      expect((error as Error).message).not.toMatch(/a\s?b|nul/);
    }
    // A method undici refuses kept a connection the same way; CONNECT's answer was taken for a tunnel.
    for (const method of ['BAD METHOD', 'GET/', '(GET)', 'G\u00c9T', 'GET\r\n', 'CONNECT', 'connect']) {
      const error = await rejection(c.request({ method, path: '/p' }));
      expect(error, JSON.stringify(method)).toMatchObject({ code: 'INVALID_REQUEST' });
    }
    // A body whose bytes were transferred away threw a raw TypeError.
    const buffer = new ArrayBuffer(4);
    const bytes = new Uint8Array(4);
    const view = new DataView(new ArrayBuffer(4));
    for (const gone of [buffer, bytes.buffer, view.buffer]) structuredClone(gone, { transfer: [gone] });
    for (const body of [buffer, bytes, view]) {
      expect(await rejection(c.post('/p', body))).toMatchObject({ code: 'INVALID_REQUEST' });
    }
    expect(await c.get('/ok')).toEqual({ ok: true });
    expect(await c.get('/ok', { headers: { 'x-note': 'tab\tand latin-1 \u00e9' } })).toEqual({ ok: true });
    expect(s.requests.map((r) => r.path)).toEqual(['/ok', '/ok']);
    await c.close();
  });

  it('refuses an idempotency key the server would not read as sent, and sends nothing', async () => {
    const s = await server();
    s.setDefault({ status: 503 });
    const c = client(s);
    const bad = ['', 'x'.repeat(256), 'a\nb', 'a\u0000b', 'tab\there', 'caf\u00e9', ' lead', 'trail ', '""'];
    for (const key of bad) {
      const error = await rejection(c.post('/orders', { sku: 'tea' }, { idempotencyKey: key }));
      expect(error, JSON.stringify(key)).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect((error as Error).message).toMatch(/idempotencyKey must be 1 to 255/);
    }
    for (const key of ['', 'x'.repeat(256)]) {
      const error = await rejection(c.post('/orders', {}, { headers: { 'Idempotency-Key': key } }));
      expect(error).toMatchObject({
        code: 'INVALID_REQUEST',
        message: expect.stringMatching(/Idempotency-Key/),
      });
    }
    expect(s.requests).toHaveLength(0);
    // 255 characters, surrounding quotes not counted (as the server reads it), spaces inside.
    s.setDefault({ status: 201, body: {} });
    const good = ['x'.repeat(255), `"${'y'.repeat(255)}"`, 'order 42', 'a-b_c.d:e/f'];
    for (const key of good) await c.post('/orders', {}, { idempotencyKey: key });
    expect(s.requests.map((request) => request.headers['idempotency-key'])).toEqual(good);
  });

  it('does not retry a POST without an idempotency key when retries are off for it', async () => {
    const s = await server();
    s.enqueue({ status: 503 });
    const c = client(s);
    expect(await rejection(c.post('/pay', { amount: 5 }, { retry: false }))).toMatchObject({ status: 503 });
    expect(s.requests).toHaveLength(1);
    expect(s.requests[0]!.headers['idempotency-key']).toBeUndefined();
  });

  it('retries after a connection reset', async () => {
    const s = await server();
    s.enqueue({ reset: true }, { status: 200, body: { ok: true } });
    const c = client(s);
    expect(await c.get('/reset')).toEqual({ ok: true });
    expect(s.requests).toHaveLength(2);
  });

  it('retries an answer that is not HTTP as a connection error when safe, and a POST without a key never', async () => {
    // Answers each request on a connection with `answers[n]`, then a good 200.
    const answers = ['HTTP/1.1 abc\r\n\r\n', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n'];
    let requests = 0;
    const raw = createNetServer((socket) => {
      socket.on('error', () => {});
      socket.on('data', () => {
        const garbage = answers[requests++ % 3];
        if (garbage !== undefined) socket.end(garbage);
        else
          socket.write(
            'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}',
          );
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => raw.close(() => resolve())));
    const c = new ServiceClient(`http://127.0.0.1:${(raw.address() as AddressInfo).port}`, {
      retry: { maxAttempts: 3, backoff: () => 1 },
      breaker: false,
    });
    cleanups.push(() => c.close());
    expect(await c.get('/garbled')).toEqual({ ok: true });
    expect(requests).toBe(3);
    const error = await rejection(c.post('/pay', { amount: 5 }, { retry: false }));
    expect(error).toMatchObject({ code: 'CONNECTION_ERROR', errorCode: 'HPE_INVALID_RESPONSE' });
    expect(requests).toBe(4);
  });

  it('times out each attempt, retrying what is safe', async () => {
    const s = await server();
    s.enqueue({ hang: true }, { status: 200, body: { ok: true } });
    const c = client(s, { timeout: 200 });
    expect(await c.get('/slow')).toEqual({ ok: true });
    s.enqueue({ hang: true }, { hang: true }, { hang: true });
    const error = await rejection(c.get('/slower'));
    expect(isTimeoutError(error)).toBe(true);
  });

  it('keeps the whole call within its deadline and sends the time left to the callee', async () => {
    const s = await server();
    s.enqueue({ status: 503, delayMs: 150 }, { status: 503, delayMs: 150 }, { status: 503, delayMs: 150 });
    const c = client(s, { retry: { maxAttempts: 5, backoff: () => 100 } });
    const started = Date.now();
    const error = await rejection(c.get('/deadline', { deadline: 400 }));
    expect(Date.now() - started).toBeLessThan(700);
    expect(isHttpError(error) || isTimeoutError(error)).toBe(true);
    const sent = s.requests.map((r) => Number(r.headers['x-deadline-ms']));
    expect(sent[0]).toBeGreaterThan(300);
    expect(sent[0]).toBeLessThanOrEqual(400);
    for (let i = 1; i < sent.length; i++) expect(sent[i]).toBeLessThan(sent[i - 1]!);
  });

  it('uses the ambient deadline when it is sooner, and refuses to call when it has passed', async () => {
    const s = await server();
    const c = client(s);
    await runWithContext({ correlationId: 'c', deadline: Date.now() + 250 }, () =>
      c.get('/x', { deadline: 10_000 }),
    );
    expect(Number(s.requests[0]!.headers['x-deadline-ms'])).toBeLessThanOrEqual(250);
    const error = await rejection(
      runWithContext({ correlationId: 'c', deadline: Date.now() - 1 }, () => c.get('/y')),
    );
    expect(isTimeoutError(error)).toBe(true);
    expect(s.requests).toHaveLength(1);
  });

  it('takes an ambient deadline that is not a finite number for none: no x-deadline-ms sent, the call made', async () => {
    const s = await server();
    const c = client(s);
    // NaN went out as `x-deadline-ms: NaN`, Infinity as `Infinity`, a string was compared as a number.
    for (const deadline of [
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      '99999999999999',
    ]) {
      await runWithContext({ correlationId: 'c', deadline: deadline as number }, () => c.get('/x'));
    }
    expect(s.requests.map((r) => r.headers['x-deadline-ms'])).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
    // The call's own deadline still applies.
    await runWithContext({ correlationId: 'c', deadline: Number.NaN }, () => c.get('/x', { deadline: 5000 }));
    expect(Number(s.requests[4]!.headers['x-deadline-ms'])).toBeLessThanOrEqual(5000);
  });

  it('opens the breaker of a failing target, stops calling it, and keeps other routes apart', async () => {
    const s = await server();
    const c = client(s, {
      retry: false,
      breaker: { key: 'route', minimumVolume: 4, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
    });
    const changes: string[] = [];
    c.on('breaker', (e) => changes.push(`${e.breaker}: ${e.from} -> ${e.to}`));
    s.setDefault({ status: 503 });
    for (let i = 0; i < 4; i++) await rejection(c.get('/orders/1', { route: '/orders/:id' }));
    const calls = s.requests.length;
    const open = await rejection(c.get('/orders/2', { route: '/orders/:id' }));
    expect(isCircuitOpenError(open)).toBe(true);
    expect(s.requests).toHaveLength(calls);
    expect(changes).toEqual([`${c.name} GET /orders/:id: closed -> open`]);
    expect(c.breakers()).toEqual([{ name: `${c.name} GET /orders/:id`, state: 'open' }]);
    // Another route has its own breaker.
    s.setDefault({ status: 200, body: { ok: true } });
    expect(await c.get('/users/1', { route: '/users/:id' })).toEqual({ ok: true });
  });

  it('reads id-like path segments as :id for route breakers without a route template', async () => {
    const s = await server();
    s.setDefault({ status: 200, body: {} });
    const c = client(s, { breaker: { key: 'route' } });
    await c.get('/orders/17');
    await c.get('/orders/0190f6a1-7c2e-7a11-9d3e-1c5a2b3c4d5e/lines?page=2');
    await c.get('/orders/42');
    await c.get('/orders/0190f6a17c2e7a11/lines');
    await c.post('/orders/42', {});
    expect(c.breakers().map((b) => b.name)).toEqual([
      `${c.name} GET /orders/:id`,
      `${c.name} GET /orders/:id/lines`,
      `${c.name} POST /orders/:id`,
    ]);
    expect(routeOfPath('/users/ada/avatar.png?size=2')).toBe('/users/ada/avatar.png');
  });

  it('keeps at most maxRoutes route breakers, forgetting the oldest closed one, never an open one', async () => {
    const s = await server();
    s.setDefault({ status: 200, body: {} });
    const c = client(s, {
      retry: false,
      breaker: { key: 'route', maxRoutes: 2, minimumVolume: 1, errorThresholdPercentage: 50 },
    });
    s.enqueue({ status: 503 });
    await rejection(c.get('/a'));
    await c.get('/b');
    await c.get('/c');
    expect(c.breakers()).toEqual([
      { name: `${c.name} GET /a`, state: 'open' },
      { name: `${c.name} GET /c`, state: 'closed' },
    ]);
    // Every kept breaker open: a new route shares the origin's breaker rather than growing the map.
    s.enqueue({ status: 503 });
    await rejection(c.get('/c'));
    await c.get('/d');
    expect(c.breakers().map((b) => b.name)).toEqual([`${c.name} GET /a`, `${c.name} GET /c`, c.name]);
    expect(isCircuitOpenError(await rejection(c.get('/a')))).toBe(true);
    expect(() => new ServiceClient(s.url, { breaker: { key: 'route', maxRoutes: 0 } })).toThrow(/maxRoutes/);
  });

  it('does not count 4xx answers against the breaker', async () => {
    const s = await server();
    const c = client(s, { retry: false, breaker: { minimumVolume: 3, errorThresholdPercentage: 50 } });
    s.setDefault({ status: 404 });
    for (let i = 0; i < 10; i++) await rejection(c.get('/missing'));
    expect(c.breakers()[0]!.state).toBe('closed');
  });

  it('rejects with BULKHEAD_FULL beyond its concurrency and queue', async () => {
    const s = await server();
    s.setDefault({ status: 200, delayMs: 200, body: { ok: true } });
    const c = client(s, { bulkhead: { maxConcurrent: 1, maxQueue: 1 } });
    const first = c.get('/a');
    const second = c.get('/b');
    expect(c.bulkheadStats()).toEqual({ running: 1, queued: 1 });
    const third = await rejection(c.get('/c'));
    expect(isBulkheadFullError(third)).toBe(true);
    expect(await first).toEqual({ ok: true });
    expect(await second).toEqual({ ok: true });
    expect(c.bulkheadStats()).toEqual({ running: 0, queued: 0 });
  });

  it('counts calls made without retries as traffic the retry budget is a share of', async () => {
    const s = await server();
    const c = client(s, { retryBudget: { ratio: 0.5, minRetriesPerSecond: 0 } });
    // Four calls without retries: the budget's share of five requests is 2.5 retries.
    await c.get('/a', { retry: false });
    await c.post('/b', {}, { retry: false });
    await c.get('/c', { retry: { maxAttempts: 1 } });
    await c.get('/d', { retry: false });
    s.enqueue({ status: 503 }, { status: 503 });
    expect(await c.get('/x')).toMatchObject({ ok: true });
    expect(s.requests).toHaveLength(7);
  });

  it('does not count calls a breaker or the bulkhead refused as traffic the retry budget is a share of', async () => {
    const s = await server();
    s.setDefault({ status: 200, delayMs: 100, body: {} });
    const c = client(s, {
      retryBudget: { ratio: 0.5, minRetriesPerSecond: 0 },
      // 503s leave the breakers alone, so that the last call's retries meet the budget only.
      breaker: {
        key: 'route',
        minimumVolume: 2,
        resetTimeoutMs: 60_000,
        isIgnored: (e) => isHttpError(e) && e.status === 503,
      },
      bulkhead: { maxConcurrent: 1, maxQueue: 0 },
    });
    s.enqueue({ status: 500 }, { status: 500 });
    await rejection(c.get('/a', { retry: false }));
    await rejection(c.get('/a', { retry: false }));
    // Never sent: the open breaker of GET /a refuses them, with retries and without.
    for (let i = 0; i < 20; i++) expect(isCircuitOpenError(await rejection(c.get('/a')))).toBe(true);
    for (let i = 0; i < 20; i++) {
      expect(isCircuitOpenError(await rejection(c.get('/a', { retry: false })))).toBe(true);
    }
    // Never sent either: refused as given.
    for (let i = 0; i < 20; i++) {
      expect(await rejection(c.request({ method: 'BAD METHOD', path: '/c' }))).toMatchObject({
        code: 'INVALID_REQUEST',
      });
    }
    for (let i = 0; i < 20; i++) {
      expect(await rejection(c.get('/c', { headers: { 'x-bad': 'a\nb' } }))).toMatchObject({
        code: 'INVALID_REQUEST',
      });
    }
    // Never sent either: the bulkhead is full while one slow call runs.
    const running = c.get('/slow');
    for (let i = 0; i < 20; i++) expect(isBulkheadFullError(await rejection(c.get('/b')))).toBe(true);
    for (let i = 0; i < 20; i++) {
      expect(isBulkheadFullError(await rejection(c.get('/b', { retry: false })))).toBe(true);
    }
    await running;
    // Four calls made, this one included: their share is two retries, not the 60 more that the 120
    // refused calls would buy if they counted.
    s.setDefault({ status: 503 });
    const error = await rejection(c.get('/x', { retry: { maxAttempts: 100, backoff: () => 1 } }));
    expect(isHttpError(error) && error.status).toBe(503);
    expect(s.requests.filter((r) => r.path === '/x')).toHaveLength(3);
  });

  it('counts a call as traffic when it is sent, not when it ends: slow calls long gone buy no retries', async () => {
    const s = await server();
    let now = 0;
    const c = client(s, {
      retry: { maxAttempts: 10, backoff: () => 1 },
      retryBudget: { ratio: 0.5, minRetriesPerSecond: 0, windowMs: 1000, now: () => now },
    });
    s.setDefault({ status: 200, delayMs: 150, body: {} });
    const slow = Array.from({ length: 10 }, () => c.get('/slow'));
    await waitFor(() => s.requests.length === 10, 'the slow calls sent');
    // Their window ends before their answers come: counted as they ended, they bought five retries.
    now = 1500;
    await Promise.all(slow);
    s.setDefault({ status: 503 });
    const error = await rejection(c.get('/x'));
    expect(isHttpError(error) && error.status).toBe(503);
    expect(s.requests.filter((r) => r.path === '/x')).toHaveLength(1);
  });

  it('stops retrying when the retry budget is spent', async () => {
    const s = await server();
    s.setDefault({ status: 503 });
    const c = client(s, { retryBudget: { ratio: 0, minRetriesPerSecond: 0 } });
    const refused: string[] = [];
    c.on('rejection', (event) => refused.push(`${event.method} ${event.path} ${event.reason}`));
    // The call ends with what it got, not with a budget error hiding it.
    const error = await rejection(c.get('/x'));
    expect(isHttpError(error) && error.status).toBe(503);
    expect(s.requests).toHaveLength(1);
    expect(refused).toEqual(['GET /x RETRY_BUDGET_EXHAUSTED']);
    // request() resolves the answer, as it does for any final status.
    expect((await c.request({ method: 'GET', path: '/x' })).status).toBe(503);
    expect(s.requests).toHaveLength(2);
  });

  it('reports attempts, responses and rejections to listeners, and nothing after unsubscribing', async () => {
    const s = await server();
    s.enqueue({ status: 503 }, { status: 200, body: { ok: true } }, { status: 404 });
    const c = client(s, { bulkhead: { maxConcurrent: 1, maxQueue: 0 } });
    const seen: string[] = [];
    const offAttempt = c.on('attempt', (e) => seen.push(`attempt ${e.method} ${e.path} #${e.attempt}`));
    c.on('response', (e) => {
      expect(e.durationMs).toBeGreaterThanOrEqual(0);
      seen.push(`response ${e.status} #${e.attempt}`);
    });
    c.on('rejection', (e) => seen.push(`rejection ${e.path} ${e.reason}`));
    expect(await c.get('/a')).toEqual({ ok: true });
    // An answer, even an error status, is a response; a rejection is a call the client refused.
    expect(isHttpError(await rejection(c.get('/b')))).toBe(true);
    s.enqueue({ status: 200, delayMs: 100, body: {} });
    const running = c.get('/slow');
    expect(isBulkheadFullError(await rejection(c.get('/refused')))).toBe(true);
    await running;
    expect(seen).toEqual([
      'attempt GET /a #1',
      'response 503 #1',
      'attempt GET /a #2',
      'response 200 #2',
      'attempt GET /b #1',
      'response 404 #1',
      'attempt GET /slow #1',
      'rejection /refused BULKHEAD_FULL',
      'response 200 #1',
    ]);
    offAttempt();
    seen.length = 0;
    s.enqueue({ status: 200, body: {} });
    await c.get('/c');
    expect(seen).toEqual(['response 200 #1']);
  });

  it('rejects a redirect from get/post/… with HttpError, without following it or counting it as a failure', async () => {
    const s = await server();
    s.enqueue({ status: 301, headers: { location: '/users/42' } }, { status: 302 });
    const c = client(s, { breaker: { minimumVolume: 1, errorThresholdPercentage: 1 } });
    expect(await rejection(c.get('/people/42'))).toMatchObject({
      code: 'HTTP_ERROR',
      status: 301,
      headers: { location: '/users/42' },
    });
    expect(s.requests).toHaveLength(1);
    expect((await c.request({ method: 'GET', path: '/old' })).status).toBe(302);
    expect(c.breakers()[0]!.state).toBe('closed');
  });

  it('rejects a body that claims to be JSON and is not, rather than handing back a string', async () => {
    const s = await server();
    const json = { 'content-type': 'application/json' };
    s.enqueue({ status: 200, body: '{"id": 42, "name": "Ada', headers: json });
    const c = client(s);
    const error = await rejection(c.get('/users/42'));
    expect(isInvalidResponseBodyError(error)).toBe(true);
    expect(error).toMatchObject({ status: 200, body: '{"id": 42, "name": "Ada' });
    expect(s.requests).toHaveLength(1); // not retried
    // An error status keeps its broken body as text inside the HttpError.
    s.enqueue({ status: 404, body: 'not json', headers: json });
    expect(await rejection(c.get('/users/43'))).toMatchObject({
      code: 'HTTP_ERROR',
      status: 404,
      body: 'not json',
    });
    s.enqueue({ status: 200, body: '<html>', headers: json });
    expect(isInvalidResponseBodyError(await rejection(c.request({ method: 'GET', path: '/x' })))).toBe(true);
    // request() hands back an error answer whatever its body.
    s.enqueue({ status: 404, body: '<html>', headers: json });
    expect(await c.request({ method: 'GET', path: '/y' })).toMatchObject({ status: 404, body: '<html>' });
  });

  it('request() resolves the final response whatever its status', async () => {
    const s = await server();
    s.enqueue({ status: 404, body: { missing: true } });
    const c = client(s);
    const res = await c.request({ method: 'GET', path: '/nope', query: { a: 1, b: 'x y' } });
    expect(res).toMatchObject({ status: 404, body: { missing: true } });
    expect(s.requests[0]!.path).toBe('/nope?a=1&b=x+y');
    s.enqueue({ status: 503 }, { status: 503 }, { status: 503 });
    expect((await c.request({ method: 'GET', path: '/down' })).status).toBe(503);
    expect(s.requests).toHaveLength(4);
  });

  it('appends the query before a #fragment, and never sends the fragment', async () => {
    const s = await server();
    const c = client(s);
    await c.get('/p#frag', { query: { x: 1 } });
    await c.get('/q?a=1#f?not=query', { query: { x: 2 } });
    await c.get('/r#only-a-fragment');
    await c.request({ method: 'GET', path: '/s?b=2#f' });
    expect(s.requests.map((request) => request.path)).toEqual(['/p?x=1', '/q?a=1&x=2', '/r', '/s?b=2']);
  });

  it('joins the path of its base URL before every path, and refuses one with a query or fragment', async () => {
    const s = await server();
    for (const base of [`${s.url}/api`, `${s.url}/api/`]) {
      const c = new ServiceClient(base, { retry: false });
      cleanups.push(() => c.close());
      await c.get('/orders/7', { query: { full: true } });
    }
    const v2 = new ServiceClient(`${s.url}/api/v2`, { retry: false });
    cleanups.push(() => v2.close());
    await v2.request({ method: 'POST', path: '/orders#x', body: {} });
    expect(s.requests.map((request) => request.path)).toEqual([
      '/api/orders/7?full=true',
      '/api/orders/7?full=true',
      '/api/v2/orders',
    ]);
    const error = await rejection(v2.get('http://elsewhere.example/orders'));
    expect(error).toMatchObject({
      code: 'INVALID_REQUEST',
      message: expect.stringMatching(/must start with "\/"/),
    });
    expect(await rejection(v2.get('orders'))).toMatchObject({ code: 'INVALID_REQUEST' });
    expect(s.requests).toHaveLength(3);
    expect(() => new ServiceClient(`${s.url}/api?v=2`)).toThrow(/query or fragment/);
    expect(() => new ServiceClient(`${s.url}/api#x`)).toThrow(/query or fragment/);
    // A URL object, which new URL() takes too, as its text: served, or refused alike (not a TypeError).
    const fromUrl = new ServiceClient(new URL(`${s.url}/api`) as unknown as string, { retry: false });
    cleanups.push(() => fromUrl.close());
    await fromUrl.get('/from-url');
    expect(s.requests.at(-1)?.path).toBe('/api/from-url');
    expect(() => new ServiceClient(new URL(`${s.url}/api?`) as unknown as string)).toThrow(
      /query or fragment/,
    );
    // Credentials in it were dropped without a word: refused, the password never quoted.
    for (const base of ['http://alice:s3cret@127.0.0.1:9', 'http://alice@127.0.0.1:9']) {
      let error: unknown;
      try {
        new ServiceClient(base);
      } catch (e) {
        error = e;
      }
      expect((error as { code?: string }).code).toBe('INVALID_OPTIONS');
      expect((error as Error).message).toMatch(/without credentials/);
      expect((error as Error).message).not.toContain('s3cret');
    }
    // Nor in a base URL refused for another reason (a bad port, a space, a query), nor in a call's
    // path given as a whole URL.
    for (const base of [
      'http://svc:s3cret@127.0.0.1:99999',
      'http://svc:s3cret@bad host:8080',
      'http://svc:s3cret@[::1:8443/api',
      'http://127.0.0.1:9/?token=s3cret',
      'https://127.0.0.1:9/api?api_key=s3cret',
    ]) {
      expect(() => new ServiceClient(base)).toThrow(/absolute http\(s\) URL|query or fragment/);
      expect(() => new ServiceClient(base)).not.toThrow(/s3cret/);
    }
    const whole = await rejection(v2.get('http://svc:s3cret@provider.example/charge'));
    expect(whole).toMatchObject({ code: 'INVALID_REQUEST', message: expect.stringMatching(/svc:\*\*\*@/) });
    expect((whole as Error).message).not.toContain('s3cret');
  });

  it('refuses invalid options', () => {
    expect(() => new ServiceClient('not a url')).toThrow(/absolute/);
    expect(() => new ServiceClient('ftp://host')).toThrow(/http/);
    expect(() => new ServiceClient('http://h', { timeout: -1 })).toThrow(/timeout/);
  });
});

describe('parseRetryAfter', () => {
  it('reads delay seconds and HTTP dates', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    const now = Date.parse('2026-11-30T10:00:00Z');
    expect(parseRetryAfter('Mon, 30 Nov 2026 10:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });
});

describe('ServiceClient failures before any request', () => {
  it('reports them as rejections, never as synchronous throws', async () => {
    const c = new ServiceClient('http://127.0.0.1:9', { retry: false });
    await c.close();
    let thrown: unknown;
    let promise: Promise<unknown> | undefined;
    try {
      promise = c.get('/x');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeUndefined();
    await expect(promise).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    const open = new ServiceClient('http://127.0.0.1:9', { retry: false });
    cleanups.push(() => open.close());
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await expect(open.post('/x', cyclic)).rejects.toThrow();
  });
});

describe('ServiceClient close', () => {
  it('lets calls in flight finish, then refuses new ones with CLIENT_CLOSED', async () => {
    const s = await FaultServer.start();
    cleanups.push(() => s.close());
    s.enqueue({ status: 200, delayMs: 200, body: { slow: true } });
    const c = new ServiceClient(s.url, { retry: false });
    const inFlight = c.get('/slow');
    await new Promise((resolve) => setTimeout(resolve, 50));
    let closed = false;
    const closing = c.close().then(() => {
      closed = true;
    });
    await expect(c.get('/late')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(closed).toBe(false);
    expect(await inFlight).toEqual({ slow: true });
    await closing;
    expect(s.requests.map((r) => r.path)).toEqual(['/slow']);
  });

  it('closes once however often it is called: a second close resolves (two shutdown hooks)', async () => {
    const s = await FaultServer.start();
    cleanups.push(() => s.close());
    s.enqueue({ status: 200, body: { ok: true } });
    const c = new ServiceClient(s.url, { retry: false });
    await c.get('/');
    await c.close();
    // It rejected with undici's ClientDestroyedError; unawaited, that ended the process.
    await expect(c.close()).resolves.toBeUndefined();
    await expect(Promise.all([c.close(), c.close()])).resolves.toEqual([undefined, undefined]);
    await expect(c.get('/')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
  });
});

describe('ServiceClient response size', () => {
  it('fails a response larger than maxResponseBytes instead of buffering it', async () => {
    const s = await FaultServer.start();
    cleanups.push(() => s.close());
    s.enqueue({ status: 200, body: { blob: 'x'.repeat(10_000) } });
    const c = new ServiceClient(s.url, { retry: false, maxResponseBytes: 1000 });
    cleanups.push(() => c.close());
    await expect(c.get('/big')).rejects.toMatchObject({ code: 'RESPONSE_TOO_LARGE', limit: 1000 });
    s.enqueue({ status: 200, body: { small: true } });
    expect(await c.get('/small')).toEqual({ small: true });
  });
});
