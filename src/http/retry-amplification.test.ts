import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { FaultServer } from '../testing/fault-server.js';
import { ServiceClient } from './client.js';
import { isHttpError } from './errors.js';
import { ferryContext, ferryErrors } from './server/express.js';
import { ferryFastify } from './server/fastify.js';
import { type Closers, listenFastify, listenNode } from './server/fixtures/listen.js';

// caller -> gateway (Fastify) -> orders (Express) -> payments, every hop a ServiceClient with its
// default 3 attempts. With payments always failing, only the hop next to it may retry: without the
// `x-ferry-no-retry` mark the load multiplies by 3 per layer (orders 3x, payments 9x, gateway 3x).

const closers: Closers = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {});
});

const quiet = { logger: { error: () => {} } };
const fast = { retry: { maxAttempts: 3, backoff: () => 5 } } as const;

async function chain(
  payments: FaultServer,
): Promise<{ gatewayUrl: string; hits: { gateway: number; orders: number } }> {
  const hits = { gateway: 0, orders: 0 };

  const toPayments = new ServiceClient(payments.url, { name: 'payments', ...fast });
  closers.push(() => toPayments.close());
  const orders = express();
  orders.use(ferryContext(quiet));
  orders.get('/orders/:id/pay', async (_req, res, next) => {
    hits.orders++;
    try {
      res.json(await toPayments.post('/charges', { amount: 10 }));
    } catch (error) {
      next(error);
    }
  });
  orders.use(ferryErrors(quiet));
  const ordersUrl = await listenNode(createServer(orders), closers);

  const toOrders = new ServiceClient(ordersUrl, { name: 'orders', ...fast });
  closers.push(() => toOrders.close());
  const gateway = Fastify();
  ferryFastify(gateway, quiet);
  gateway.get('/pay/:id', async (request) => {
    hits.gateway++;
    return toOrders.get(`/orders/${(request.params as { id: string }).id}/pay`);
  });
  const gatewayUrl = await listenFastify(gateway, closers);
  return { gatewayUrl, hits };
}

describe('retries across three hops', () => {
  it('retries only next to the failure: payments 3 times, every other hop once', async () => {
    const payments = await FaultServer.start();
    closers.push(() => payments.close());
    payments.setDefault({ status: 503 });
    const { gatewayUrl, hits } = await chain(payments);
    const caller = new ServiceClient(gatewayUrl, { name: 'gateway', ...fast });
    closers.push(() => caller.close());

    const error = await caller.get('/pay/1').catch((e: unknown) => e);
    expect(isHttpError(error) && error.status).toBe(503);
    expect(isHttpError(error) && error.headers['x-ferry-no-retry']).toBe('1');
    expect(payments.requests).toHaveLength(3);
    expect(hits).toEqual({ gateway: 1, orders: 1 });
  });

  it('still retries a hop whose own answer is a plain 503 (no dependency behind it)', async () => {
    const payments = await FaultServer.start();
    closers.push(() => payments.close());
    payments.enqueue({ status: 503 }, { status: 503 }, { status: 200, body: { charged: true } });
    const { gatewayUrl, hits } = await chain(payments);
    const caller = new ServiceClient(gatewayUrl, { name: 'gateway', ...fast });
    closers.push(() => caller.close());
    expect(await caller.get('/pay/1')).toEqual({ charged: true });
    expect(payments.requests).toHaveLength(3);
    expect(hits).toEqual({ gateway: 1, orders: 1 });
  });

  it('answers a dependency it cannot reach with 502 and no-retry, retried next to it only', async () => {
    // A port nothing listens on: every connection is refused.
    const gone = await FaultServer.start();
    const url = gone.url;
    await gone.close();
    const payments = { url, requests: [] } as unknown as FaultServer;
    const { gatewayUrl, hits } = await chain(payments);
    const caller = new ServiceClient(gatewayUrl, { name: 'gateway', ...fast });
    closers.push(() => caller.close());
    const error = await caller.get('/pay/1').catch((e: unknown) => e);
    expect(isHttpError(error) && error.status).toBe(502);
    expect(isHttpError(error) && error.headers['x-ferry-no-retry']).toBe('1');
    expect(hits).toEqual({ gateway: 1, orders: 1 });
  });
});
