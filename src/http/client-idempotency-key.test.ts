import { afterEach, describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { FaultServer } from '../testing/fault-server.js';
import { ServiceClient, type ServiceClientOptions } from './client.js';
import { rejection } from './fixtures/rejection.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function server(): Promise<FaultServer> {
  const s = await FaultServer.start();
  cleanups.push(() => s.close());
  return s;
}

function client(s: FaultServer, options: ServiceClientOptions = {}): ServiceClient {
  const c = new ServiceClient(s.url, { retry: { maxAttempts: 3, backoff: () => 10 }, ...options });
  cleanups.push(() => c.close());
  return c;
}

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
    expect((error as Error).message).toMatch(/"order-2".*"order-1"/);
    expect(s.requests).toHaveLength(0);
    // The same key both ways (quoted or not, as the server reads it) is that key.
    await c.post('/orders', {}, { idempotencyKey: 'order-3', headers: { 'idempotency-key': 'order-3' } });
    await c.post('/orders', {}, { idempotencyKey: 'order-4', headers: { 'Idempotency-Key': '"order-4"' } });
    expect(s.requests.map((request) => request.headers['idempotency-key'])).toEqual(['order-3', '"order-4"']);
  });
});
