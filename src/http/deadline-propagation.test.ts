import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { currentContext } from '../context/context.js';
import { FaultServer } from '../testing/fault-server.js';
import { ServiceClient } from './client.js';
import { isHttpError } from './errors.js';
import { ferryFastify } from './server/fastify.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

interface Seen {
  deadlineLeft?: number | undefined;
  correlationId?: string | undefined;
}

/** Service A: a Fastify app with Ferry's middleware whose handler calls service B. */
async function serviceA(b: FaultServer): Promise<{ url: string; seen: Seen }> {
  const seen: Seen = {};
  const app: FastifyInstance = Fastify();
  ferryFastify(app, { logger: { error: () => {} } });
  const toB = new ServiceClient(b.url, { name: 'b', retry: false });
  app.get('/orders/:id', async () => {
    const context = currentContext();
    seen.correlationId = context?.correlationId;
    seen.deadlineLeft = context?.deadline === undefined ? undefined : context.deadline - Date.now();
    // Work that takes a while, then the nested call: its budget is what is left.
    await new Promise((resolve) => setTimeout(resolve, 100));
    return toB.get('/stock/1');
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(async () => {
    await toB.close();
    await app.close();
  });
  const address = app.server.address();
  return { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`, seen };
}

describe('deadline propagation across two hops', () => {
  it('shrinks the budget at each hop, like gRPC deadlines, and keeps the correlation id', async () => {
    const b = await FaultServer.start();
    cleanups.push(() => b.close());
    b.setDefault({ status: 200, body: { inStock: true } });
    const a = await serviceA(b);
    const client = new ServiceClient(a.url, { name: 'a', deadline: 1000, retry: false });
    cleanups.push(() => client.close());

    expect(await client.get('/orders/7', { headers: { 'x-correlation-id': 'corr-from-caller' } })).toEqual({
      inStock: true,
    });
    // A received about 1000 ms; B received what was left after A's 100 ms of work.
    expect(a.seen.deadlineLeft).toBeGreaterThan(800);
    expect(a.seen.deadlineLeft).toBeLessThanOrEqual(1000);
    const atB = Number(b.requests[0]!.headers['x-deadline-ms']);
    expect(atB).toBeGreaterThan(600);
    expect(atB).toBeLessThan(a.seen.deadlineLeft! - 90);
    expect(a.seen.correlationId).toBe('corr-from-caller');
    expect(b.requests[0]!.headers['x-correlation-id']).toBe('corr-from-caller');
  });

  it('fails the nested call, not later work, when the caller’s deadline runs out at the second hop', async () => {
    const b = await FaultServer.start();
    cleanups.push(() => b.close());
    b.setDefault({ status: 200, delayMs: 2000, body: { late: true } });
    const a = await serviceA(b);
    const client = new ServiceClient(a.url, { name: 'a', deadline: 400, retry: false, timeout: 5000 });
    cleanups.push(() => client.close());
    const started = Date.now();
    const error = await client.get('/orders/7').catch((e: unknown) => e);
    // Nobody waits for B's 2 s: A's call to B is cut at A's deadline, and A answers 504 or the caller times out.
    expect(Date.now() - started).toBeLessThan(1200);
    expect(isHttpError(error) ? error.status : (error as { code?: string }).code).toSatisfy(
      (v: unknown) => v === 504 || v === 'TIMEOUT',
    );
  });

  it('refuses a request whose deadline already passed without running the handler', async () => {
    const b = await FaultServer.start();
    cleanups.push(() => b.close());
    const a = await serviceA(b);
    const client = new ServiceClient(a.url, { name: 'a', retry: false });
    cleanups.push(() => client.close());
    const res = await client.request({ method: 'GET', path: '/orders/7', headers: { 'x-deadline-ms': '0' } });
    expect(res.status).toBe(504);
    expect(b.requests).toHaveLength(0);
  });
});
