import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Upstream } from './upstream.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A local instance that counts the requests it gets; `answers` false: it never answers (a frozen process). */
async function instance(answers: boolean): Promise<{ url: string; received: () => number }> {
  let received = 0;
  const server = createServer((_request, response) => {
    received++;
    if (answers) setTimeout(() => response.end('{}'), 20);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received: () => received };
}

describe('Upstream', () => {
  it('names its instances as the supervisor names their processes: orders#0, orders#1; one alone by its service', async () => {
    const two = new Upstream('orders', ['http://127.0.0.1:1', 'http://127.0.0.1:2']);
    const one = new Upstream('users', ['http://127.0.0.1:3']);
    try {
      expect(two.clients.map((c) => c.name)).toEqual(['orders#0', 'orders#1']);
      expect(one.clients.map((c) => c.name)).toEqual(['users']);
    } finally {
      await Promise.all([two.close(), one.close()]);
    }
  });

  /** `count` GET requests to `upstream`, one every 10 ms; resolves once all have settled. */
  async function burst(upstream: Upstream, count: number): Promise<void> {
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < count; i++) {
      calls.push(upstream.request({ method: 'GET', path: '/orders/1' }).catch((e: unknown) => e));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await Promise.all(calls);
  }

  it('passes over an instance that stopped answering, while its requests wait, for the fewest-busy one that answers', async () => {
    // Before, requests went to each instance in turn: every second one waited for its time limit
    // behind the frozen instance until that instance's breaker opened.
    const frozen = await instance(false);
    const healthy = await instance(true);
    const upstream = new Upstream('orders', [frozen.url, healthy.url], { timeoutMs: 1500, stallMs: 300 });
    try {
      const first = burst(upstream, 20);
      await new Promise((resolve) => setTimeout(resolve, 100));
      // The frozen instance has had requests under way for less than stallMs: it takes one now and
      // then, while it has fewer under way than the other.
      const early = frozen.received();
      expect(early).toBeGreaterThanOrEqual(1);
      expect(early).toBeLessThanOrEqual(4);
      await new Promise((resolve) => setTimeout(resolve, 400));
      // Past stallMs without an answer: nothing more goes to it.
      const before = frozen.received();
      await burst(upstream, 30);
      expect(frozen.received()).toBe(before);
      await first;
      expect(frozen.received() + healthy.received()).toBe(50);
    } finally {
      await upstream.close();
    }
  });

  it('passes over an instance for coolDownMs after a request of it got no answer, then tries it again', async () => {
    const frozen = await instance(false);
    const healthy = await instance(true);
    const upstream = new Upstream('orders', [frozen.url, healthy.url], { timeoutMs: 300, coolDownMs: 800 });
    try {
      // The first request goes to the first instance, and times out.
      await expect(upstream.request({ method: 'GET', path: '/orders/1' })).rejects.toThrow();
      expect(frozen.received()).toBe(1);
      await burst(upstream, 30);
      expect(frozen.received()).toBe(1);
      // Cooled down: it is tried again (it may have come back).
      await new Promise((resolve) => setTimeout(resolve, 600));
      await burst(upstream, 4);
      expect(frozen.received()).toBeGreaterThan(1);
    } finally {
      await upstream.close();
    }
  });

  it('takes instances in turn while they answer alike', async () => {
    const one = await instance(true);
    const two = await instance(true);
    const upstream = new Upstream('orders', [one.url, two.url]);
    try {
      for (let i = 0; i < 10; i++) await upstream.request({ method: 'GET', path: '/orders/1' });
      expect([one.received(), two.received()]).toEqual([5, 5]);
    } finally {
      await upstream.close();
    }
  });

  it('spreads calls evenly over the instances still answering when one of three is passed over', async () => {
    // Before, the turn of the passed-over instance went to the instance after it: 2:1.
    const frozen = await instance(false);
    const one = await instance(true);
    const two = await instance(true);
    const upstream = new Upstream('orders', [frozen.url, one.url, two.url], {
      timeoutMs: 300,
      coolDownMs: 10_000,
    });
    try {
      await expect(upstream.request({ method: 'GET', path: '/orders/1' })).rejects.toThrow();
      expect(frozen.received()).toBe(1);
      for (let i = 0; i < 20; i++) await upstream.request({ method: 'GET', path: '/orders/1' });
      expect([frozen.received(), one.received(), two.received()]).toEqual([1, 10, 10]);
    } finally {
      await upstream.close();
    }
  });
});
