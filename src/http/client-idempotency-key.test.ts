import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { isIdempotentMethod, ServiceClient } from './client.js';
import { type ConnectionError, type HttpError, isConnectionError, isHttpError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';
import { ferryFastify } from './server/fastify.js';
import { listenFastify } from './server/fixtures/listen.js';
import { MemoryIdempotencyStore } from './server/memory-idempotency-store.js';

const { cleanups, server, client } = clientKit({ retry: { maxAttempts: 3, backoff: () => 10 } });

describe('ServiceClient Idempotency-Key', () => {
  it('refuses one in the client headers, which every call would share', () => {
    for (const name of ['Idempotency-Key', 'idempotency-key', 'IDEMPOTENCY-KEY']) {
      let error: unknown;
      try {
        new ServiceClient('http://127.0.0.1:9', { headers: { accept: 'application/json', [name]: 'k-1' } });
      } catch (caught) {
        error = caught;
      }
      expect(isInvalidOptionsError(error), `${name}: ${String(error)}`).toBe(true);
      expect((error as Error).message).toMatch(/Idempotency-Key.*idempotencyKey/s);
    }
  });

  it('refuses a call whose Idempotency-Key header and idempotencyKey option differ, and sends nothing', async () => {
    const s = await server();
    const c = client(s);
    const error = await rejection(
      c.post('/orders', {}, { idempotencyKey: 'order-1', headers: { 'Idempotency-Key': 'order-2' } }),
    );
    expect(error).toMatchObject({ code: 'INVALID_REQUEST' });
    expect((error as Error).message).toMatch(/Idempotency-Key header is not its idempotencyKey/);
    // Neither key is quoted: a key replays its stored answer to whoever sends it.
    expect((error as Error).message).not.toMatch(/order-[12]/);
    expect(s.requests).toHaveLength(0);
    // The same key both ways (quoted or not, as the server reads it) is that key.
    await c.post('/orders', {}, { idempotencyKey: 'order-3', headers: { 'idempotency-key': 'order-3' } });
    await c.post('/orders', {}, { idempotencyKey: 'order-4', headers: { 'Idempotency-Key': '"order-4"' } });
    expect(s.requests.map((request) => request.headers['idempotency-key'])).toEqual(['order-3', '"order-4"']);
  });

  it('says when a call refused at its last attempt may have reached the target at an earlier one', async () => {
    // Before, a POST whose first attempt was taken and whose connection then broke (the process
    // killed) ended with the retry's ECONNREFUSED, which reads "nothing was sent".
    const dying = createServer((request) => {
      request.resume();
      // Taken, then the process "dies": the connection breaks and nothing listens any more.
      dying.close();
      request.socket.destroy();
    });
    await new Promise<void>((resolve) => dying.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(dying.address() as AddressInfo).port}`;
    const c = new ServiceClient(url, { retry: { maxAttempts: 3, backoff: () => 10 } });
    cleanups.push(() => c.close());
    const error = await rejection(c.post('/orders', { item: 1 }));
    expect(isConnectionError(error), String(error)).toBe(true);
    expect((error as ConnectionError).errorCode).toBe('ECONNREFUSED');
    expect((error as ConnectionError).earlierAttemptSent).toBe(true);
    // Refused at every attempt: nothing was sent.
    const refused = await rejection(c.post('/orders', { item: 2 }));
    expect((refused as ConnectionError).errorCode).toBe('ECONNREFUSED');
    expect((refused as ConnectionError).earlierAttemptSent).toBe(false);
  });

  it('sends again, without a key, what isIdempotentMethod names, after an attempt that may have reached the target', async () => {
    // The first request of each method is taken and its connection broken; the next is answered.
    const seen = new Map<string, number>();
    const flaky = createServer((request, response) => {
      request.resume();
      const method = request.method ?? '';
      seen.set(method, (seen.get(method) ?? 0) + 1);
      if (seen.get(method) === 1) request.socket.destroy();
      else response.writeHead(204).end();
    });
    await new Promise<void>((resolve) => flaky.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => flaky.close(() => resolve())));
    const url = `http://127.0.0.1:${(flaky.address() as AddressInfo).port}`;
    const c = new ServiceClient(url, { retry: { maxAttempts: 3, backoff: () => 10 } });
    cleanups.push(() => c.close());
    for (const method of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'PURGE', 'LOCK']) {
      const outcome = await c.request({ method, path: '/x' }).then(
        (response) => response.status,
        (error: unknown) => (isConnectionError(error) ? error.earlierAttemptSent || error.errorCode : error),
      );
      if (isIdempotentMethod(method)) {
        expect(outcome, method).toBe(204);
        expect(seen.get(method), method).toBe(2);
      } else {
        expect(outcome, method).not.toBe(204);
        expect(seen.get(method), method).toBe(1);
      }
    }
    expect(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'].every(isIdempotentMethod)).toBe(true);
    expect(['POST', 'PATCH', 'PURGE', 'LOCK', 'get'].some(isIdempotentMethod)).toBe(false);
  });

  it('refuses a malformed key without quoting it, saying what is wrong with it', async () => {
    const s = await server();
    const c = client(s);
    const secret = 'k3y-Secret-4f1d';
    const cases: [string, RegExp][] = [
      [`${secret}\n`, /a key of 16 characters, with U\+000A at index 15/],
      [`${secret} `, /a key of 16 characters, starting or ending with a space/],
      [`${secret}${'x'.repeat(300)}`, /a key of 315 characters/],
    ];
    for (const [key, reason] of cases) {
      const option = await rejection(c.post('/orders', {}, { idempotencyKey: key }));
      expect(option).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect((option as Error).message).toMatch(reason);
      expect((option as Error).message).not.toContain(secret);
    }
    const header = await rejection(c.post('/orders', {}, { headers: { 'Idempotency-Key': `${secret} ` } }));
    expect(header).toMatchObject({ code: 'INVALID_REQUEST' });
    expect((header as Error).message).not.toContain(secret);
    expect(s.requests).toHaveLength(0);
  });
});

/** A service charging once per Idempotency-Key (the server middleware), each charge taking `ms`. */
async function chargingService(ms: number): Promise<{ url: string; runs: () => number }> {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: { error: () => {} } });
  let runs = 0;
  app.post('/charge', async (request, reply) => {
    const run = ++runs;
    await new Promise((resolve) => setTimeout(resolve, ms));
    reply.code(201);
    return { charge: run, received: request.body };
  });
  const url = await listenFastify(app, cleanups);
  return { url, runs: () => runs };
}

describe('ServiceClient and a key still in progress (409 IDEMPOTENCY_KEY_IN_USE)', () => {
  it("retries after the Retry-After the server asks, and gets the first request's answer", async () => {
    const service = await chargingService(300);
    const c = new ServiceClient(service.url, { retry: { maxAttempts: 3, backoff: () => 10 } });
    cleanups.push(() => c.close());
    const retried: unknown[] = [];
    c.on('retry', (event) => retried.push(event.error));
    const first = c.post('/charge', { amount: 10 }, { idempotencyKey: 'charge-1' });
    await expect.poll(service.runs).toBe(1);
    const started = Date.now();
    const second = await c.post('/charge', { amount: 10 }, { idempotencyKey: 'charge-1' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(950); // Retry-After: 1
    expect(second).toEqual({ charge: 1, received: { amount: 10 } });
    expect(await first).toEqual(second);
    expect(service.runs()).toBe(1);
    expect(retried).toHaveLength(1);
    expect(retried[0]).toMatchObject({
      status: 409,
      problem: { code: 'IDEMPOTENCY_KEY_IN_USE' },
      retryAfterMs: 1000,
    });
    // request() likewise resolves the answer of the retry.
    const third = c.post('/charge', { amount: 20 }, { idempotencyKey: 'charge-2' });
    await expect.poll(service.runs).toBe(2);
    const answer = await c.request({
      method: 'POST',
      path: '/charge',
      body: { amount: 20 },
      idempotencyKey: 'charge-2',
    });
    expect(answer).toMatchObject({ status: 201, body: { charge: 2 } });
    await third;
  });

  it('gives up with the 409 when retries are off, spent, or the deadline would pass', async () => {
    const service = await chargingService(2000);
    const c = new ServiceClient(service.url, { retry: { maxAttempts: 2, backoff: () => 10 } });
    cleanups.push(() => c.close());
    void c.post('/charge', {}, { idempotencyKey: 'slow-1', retry: false }).catch(() => {});
    await expect.poll(service.runs).toBe(1);
    const inUse = (error: unknown): boolean =>
      isHttpError(error) && (error as HttpError).problem?.code === 'IDEMPOTENCY_KEY_IN_USE';
    let attempts = 0;
    c.on('attempt', () => attempts++);
    let started = Date.now();
    expect(inUse(await rejection(c.post('/charge', {}, { idempotencyKey: 'slow-1', retry: false })))).toBe(
      true,
    );
    expect(attempts).toBe(1);
    expect(inUse(await rejection(c.post('/charge', {}, { idempotencyKey: 'slow-1', deadline: 800 })))).toBe(
      true,
    );
    expect(attempts).toBe(2);
    expect(Date.now() - started).toBeLessThan(500);
    started = Date.now();
    expect(inUse(await rejection(c.post('/charge', {}, { idempotencyKey: 'slow-1' })))).toBe(true);
    expect(attempts).toBe(4);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(service.runs()).toBe(1);
  });
});
