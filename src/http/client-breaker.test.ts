import { describe, expect, it } from 'vitest';
import { runWithContext } from '../context/context.js';
import { isCircuitOpenError, isTimeoutError } from '../resilience/errors.js';
import { FaultServer } from '../testing/fault-server.js';
import { ServiceClient } from './client.js';
import { isConnectionError, isHttpError, isInvalidRequestError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

// A breaker must open for the target's failures and for nothing else: not for the caller's own
// abort, not for a deadline the caller chose, not for a request that could not be sent.

const BREAKER = { minimumVolume: 5, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 } as const;

const { cleanups, server, client } = clientKit({ retry: false, breaker: BREAKER });

describe('ServiceClient breaker counts only the target', () => {
  it("does not count the caller's aborts", async () => {
    const s = await server();
    s.setDefault({ status: 200, delayMs: 200, body: { ok: true } });
    const c = client(s);
    const errors = await Promise.all(
      Array.from({ length: 20 }, () => rejection(c.get('/x', { signal: AbortSignal.timeout(20) }))),
    );
    for (const error of errors) expect((error as Error).name).toBe('TimeoutError');
    expect(c.breakers()).toEqual([{ name: s.url, state: 'closed' }]);
    expect(await c.get('/x')).toEqual({ ok: true });
  });

  it('does not count timeouts cut short by a deadline, but counts its own attempt timeouts', async () => {
    const s = await server();
    s.setDefault({ status: 200, delayMs: 1200, body: { ok: true } });
    const c = client(s, { timeout: 5000 });
    for (let i = 0; i < 10; i++)
      expect(isTimeoutError(await rejection(c.get('/x', { deadline: 150 })))).toBe(true);
    // The same for an ambient deadline, as a request with `x-deadline-ms: 150` sets it.
    for (let i = 0; i < 10; i++) {
      const error = await rejection(
        runWithContext({ correlationId: 'c', deadline: Date.now() + 150 }, () => c.get('/x')),
      );
      expect(isTimeoutError(error)).toBe(true);
    }
    expect(c.breakers()[0]!.state).toBe('closed');
    // A timeout of the attempt itself is the target being slow: it counts.
    for (let i = 0; i < 5; i++) await rejection(c.get('/x', { timeout: 100 }));
    expect(c.breakers()[0]!.state).toBe('open');
    expect(isCircuitOpenError(await rejection(c.get('/x')))).toBe(true);
  });

  it('does not let a half-open probe that the caller aborted close or reopen the breaker', async () => {
    const s = await server();
    const c = client(s, { breaker: { ...BREAKER, resetTimeoutMs: 100 } });
    s.setDefault({ status: 503 });
    for (let i = 0; i < 5; i++) await rejection(c.get('/x'));
    expect(c.breakers()[0]!.state).toBe('open');
    await new Promise((resolve) => setTimeout(resolve, 120));
    s.setDefault({ status: 200, delayMs: 300, body: { ok: true } });
    // The probe is aborted by its caller: no verdict, the next call may probe.
    await rejection(c.get('/x', { signal: AbortSignal.timeout(20) }));
    expect(c.breakers()[0]!.state).toBe('half-open');
    expect(await c.get('/x')).toEqual({ ok: true });
    expect(c.breakers()[0]!.state).toBe('closed');
  });

  it('refuses a request that cannot be sent with INVALID_REQUEST, never counting it', async () => {
    const s = await server();
    const c = client(s);
    for (let i = 0; i < 10; i++) {
      const error = await rejection(c.get('/x', { headers: { 'x-note': 'evil\nline' } }));
      expect(error).toMatchObject({ code: 'INVALID_REQUEST' });
    }
    expect(s.requests).toHaveLength(0);
    // Refused before the call met any policy: no breaker was even needed.
    expect(c.breakers().every((breaker) => breaker.state === 'closed')).toBe(true);
  });

  it('refuses a content-length not matching the body, or Expect, with INVALID_REQUEST: not sent, retried nor counted', async () => {
    const s = await server();
    // Retries on, and a POST made safe to retry by its key: the refusal must still not be retried.
    const c = client(s, { retry: { maxAttempts: 3, backoff: () => 1 } });
    const attempts: number[] = [];
    c.on('attempt', (event) => attempts.push(event.attempt));
    const bad = [{ 'Content-Length': '3' }, { 'content-length': '0' }, { Expect: '100-continue' }];
    for (let i = 0; i < 10; i++) {
      const headers = bad[i % bad.length]!;
      const error = await rejection(c.post('/x', { a: 1 }, { headers, idempotencyKey: `k-${i}` }));
      expect(isInvalidRequestError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/content-length|Expect/);
    }
    // A GET declaring a body it does not have.
    expect(await rejection(c.get('/x', { headers: { 'content-length': '5' } }))).toMatchObject({
      code: 'INVALID_REQUEST',
    });
    expect(s.requests).toHaveLength(0);
    expect(attempts).toEqual([]);
    expect(c.breakers().every((breaker) => breaker.state === 'closed')).toBe(true);
    // The healthy origin is still called; a content-length that is the body's goes through.
    expect(await c.get('/x')).toMatchObject({ ok: true });
    const body = JSON.stringify({ a: 1 });
    await c.post('/x', { a: 1 }, { headers: { 'content-length': String(Buffer.byteLength(body)) } });
    expect(s.requests.map((request) => request.body)).toEqual(['', body]);
  });

  it('replaces an ambient correlation id that is not a valid header value, and calls', async () => {
    const s = await server();
    const c = client(s);
    for (const bad of ['evil\nline-1', 'x'.repeat(64 * 1024), '', 'spaces are not visible']) {
      await runWithContext({ correlationId: bad }, () => c.get('/x'));
    }
    const ids = s.requests.map((r) => r.headers['x-correlation-id']);
    expect(ids).toHaveLength(4);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}$/);
    await runWithContext({ correlationId: 'fine-123' }, () => c.get('/x'));
    expect(s.requests[4]!.headers['x-correlation-id']).toBe('fine-123');
  });

  it('evicts the least recently used route breaker, so a hot failing route still opens', async () => {
    const s = await server();
    s.route('GET', '/hot', ...Array.from({ length: 40 }, () => ({ status: 503 })));
    s.setDefault({ status: 200, body: { ok: true } });
    const c = client(s, { breaker: { ...BREAKER, key: 'route', maxRoutes: 3 } });
    const codes: string[] = [];
    for (let i = 0; i < 40; i++) {
      const error = await rejection(c.get('/hot'));
      codes.push((error as { code: string }).code);
      // Each failure is followed by calls to new routes, which must evict the cold ones, not /hot.
      await c.get(`/cold-${i}-a`);
      await c.get(`/cold-${i}-b`);
    }
    expect(codes.slice(0, 5)).toEqual(Array(5).fill('HTTP_ERROR'));
    expect(codes.slice(5)).toEqual(Array(35).fill('CIRCUIT_OPEN'));
    expect(c.breakers().length).toBeLessThanOrEqual(3);
  });
});

describe('ServiceClient breaker opening during a call', () => {
  /** A call whose first attempt got 503 and which waits its backoff while two others open the breaker. */
  async function callWhileTheBreakerOpens<T>(call: (c: ServiceClient) => Promise<T>) {
    const s = await server();
    s.setDefault({ status: 503 });
    const c = client(s, {
      retry: { maxAttempts: 3, backoff: () => 300 },
      breaker: { minimumVolume: 3, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
    });
    const refused: string[] = [];
    c.on('rejection', (event) => refused.push(`${event.path} ${event.reason}`));
    const outcome = call(c).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    while (s.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    for (let i = 0; i < 2; i++) await rejection(c.get('/other', { retry: false }));
    expect(c.breakers()[0]!.state).toBe('open');
    return { s, c, refused, outcome: await outcome };
  }

  it('ends the call with what its last attempt got, not CIRCUIT_OPEN "not made"', async () => {
    const { s, c, refused, outcome } = await callWhileTheBreakerOpens((c) => c.get('/orders'));
    expect('error' in outcome && isHttpError(outcome.error) && outcome.error.status).toBe(503);
    expect(s.requests.filter((request) => request.path === '/orders')).toHaveLength(1);
    expect(refused).toContain('/orders CIRCUIT_OPEN');
    // A call refused at its first attempt was not made: CIRCUIT_OPEN.
    const open = await rejection(c.get('/orders'));
    expect(isCircuitOpenError(open) && (open as Error).message).toMatch(/not made/);
  });

  it('resolves request() with the answer its last attempt got', async () => {
    const { outcome } = await callWhileTheBreakerOpens((c) => c.request({ method: 'GET', path: '/orders' }));
    expect(outcome).toMatchObject({ value: { status: 503 } });
  });
});

describe('ServiceClient connection failures', () => {
  it('rejects with a typed CONNECTION_ERROR carrying the cause, retried, and counted by the breaker', async () => {
    const gone = await FaultServer.start();
    const url = gone.url;
    await gone.close();
    const c = new ServiceClient(url, { retry: { maxAttempts: 2, backoff: () => 1 }, breaker: BREAKER });
    cleanups.push(() => c.close());
    const retries: number[] = [];
    c.on('retry', (event) => retries.push(event.attempt));
    const error = await rejection(c.get('/x'));
    expect(error).toMatchObject({ code: 'CONNECTION_ERROR', errorCode: 'ECONNREFUSED' });
    expect(isConnectionError(error)).toBe(true);
    expect((error as Error).cause).toBeInstanceOf(Error);
    expect(retries).toEqual([1]);
    for (let i = 0; i < 3; i++) await rejection(c.get('/x'));
    expect(c.breakers()[0]!.state).toBe('open');
  });

  it("leaves out of the count what the caller's breaker.isIgnored says, besides its own", async () => {
    // isIgnored was accepted by the type and dropped: connection errors still opened the breaker.
    const gone = await FaultServer.start();
    const url = gone.url;
    await gone.close();
    const c = new ServiceClient(url, {
      retry: false,
      breaker: { ...BREAKER, isIgnored: (error) => isConnectionError(error) },
    });
    cleanups.push(() => c.close());
    for (let i = 0; i < 8; i++) expect(isConnectionError(await rejection(c.get('/x')))).toBe(true);
    expect(c.breakers()[0]!.state).toBe('closed');
  });
});

describe('ServiceClient retries that do not multiply', () => {
  it('does not retry an answer marked x-ferry-no-retry (the callee already retried)', async () => {
    const s = await server();
    s.setDefault({ status: 503, headers: { 'x-ferry-no-retry': '1' } });
    const c = client(s, { breaker: false, retry: { maxAttempts: 3, backoff: () => 1 } });
    const error = await rejection(c.get('/x'));
    expect(isHttpError(error) && error.status).toBe(503);
    expect(s.requests).toHaveLength(1);
    s.setDefault({ status: 503 });
    await rejection(c.get('/y'));
    expect(s.requests).toHaveLength(4);
  });

  it('waits a Retry-After beyond 30 s when maxRetryAfterMs allows it', async () => {
    const s = await server();
    s.setDefault({ status: 503, retryAfter: 45 });
    const c = client(s, { breaker: false, retry: { maxAttempts: 2, maxRetryAfterMs: 60_000 } });
    const delays: number[] = [];
    const controller = new AbortController();
    c.on('retry', (event) => {
      delays.push(event.delayMs);
      controller.abort(new Error('enough'));
    });
    await rejection(c.get('/x', { signal: controller.signal }));
    expect(delays).toEqual([45_000]);
  });
});

describe('ServiceClient headers', () => {
  it('lets explicit headers win over the ambient ones whatever their case', async () => {
    const s = await server();
    const c = client(s, { headers: { 'X-Service': 'orders' } });
    await runWithContext(
      {
        correlationId: 'ambient',
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        deadline: Date.now() + 10_000,
      },
      () =>
        c.get('/x', {
          headers: {
            'X-Correlation-Id': 'explicit',
            Traceparent: '00-11111111111111111111111111111111-2222222222222222-00',
            'X-Deadline-Ms': '777',
            'x-SERVICE': 'override',
          },
        }),
    );
    const headers = s.requests[0]!.headers;
    expect(headers['x-correlation-id']).toBe('explicit');
    expect(headers.traceparent).toBe('00-11111111111111111111111111111111-2222222222222222-00');
    expect(headers['x-deadline-ms']).toBe('777');
    expect(headers['x-service']).toBe('override');
  });

  it('honours an explicit Idempotency-Key and Content-Type in any case', async () => {
    const s = await server();
    const c = client(s, { retry: { maxAttempts: 2, backoff: () => 1 } });
    await c.post(
      '/x',
      { a: 1 },
      { headers: { 'IDEMPOTENCY-KEY': 'k-1', 'Content-Type': 'application/vnd+json' } },
    );
    expect(s.requests[0]!.headers['idempotency-key']).toBe('k-1');
    expect(s.requests[0]!.headers['content-type']).toBe('application/vnd+json');
  });
});

describe('ServiceClient close while calls wait', () => {
  it('ends a call waiting in backoff with CLIENT_CLOSED at once', async () => {
    const s = await server();
    s.setDefault({ status: 503, retryAfter: 20 });
    const c = client(s, { breaker: false, retry: { maxAttempts: 3, backoff: () => 200 } });
    const call = rejection(c.get('/x'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const closed = performance.now();
    await c.close();
    expect(await call).toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(performance.now() - closed).toBeLessThan(100);
    expect(s.requests).toHaveLength(1);
  });

  it('ends a call waiting in the bulkhead with CLIENT_CLOSED at once, and lets the running one finish', async () => {
    const s = await server();
    s.route('GET', '/long', { status: 200, delayMs: 500, body: { long: true } });
    const c = client(s, { bulkhead: { maxConcurrent: 1, maxQueue: 5 } });
    const long = c.get('/long');
    const queued = rejection(c.get('/queued', { signal: new AbortController().signal }));
    const queuedToo = rejection(c.get('/queued-too'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const closed = performance.now();
    const closing = c.close();
    expect(await queued).toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(await queuedToo).toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(performance.now() - closed).toBeLessThan(100);
    expect(await long).toEqual({ long: true });
    await closing;
    expect(s.requests.map((r) => r.path)).toEqual(['/long']);
  });

  // A first call made while undici still loads, then close(): see client-cold-start.test.ts.
  it('lets a first call made before close() finish, as any call in flight, and leaves no connection open', async () => {
    const s = await server();
    s.setDefault({ status: 200, delayMs: 50, body: { ok: true } });
    const c = new ServiceClient(s.url, { retry: false });
    const call = c.get('/x');
    await c.close();
    expect(await call).toEqual({ ok: true });
    await expect(c.get('/y')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(s.requests).toHaveLength(1);
    // No connection was left open: the server closes at once.
    const closing = s.close();
    await expect(
      Promise.race([closing.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 500))]),
    ).resolves.toBe('closed');
  });
});
