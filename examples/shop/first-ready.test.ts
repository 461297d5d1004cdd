import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { firstReady } from './first-ready.js';

const servers: Server[] = [];

/** A service whose GET /health/ready answers 503 `notReadyFor` times, then 200; counts the asks. */
async function service(notReadyFor: number): Promise<{ url: string; asked: () => number }> {
  let asked = 0;
  const server = createServer((request, response) => {
    if (request.url !== '/health/ready') return void response.writeHead(404).end();
    asked++;
    response.writeHead(asked > notReadyFor ? 200 : 503, { 'content-type': 'application/json' }).end('{}');
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, asked: () => asked };
}

afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

describe('firstReady', () => {
  it('resolves true once the service answers 200, after its 503s', async () => {
    const orders = await service(3);
    await expect(firstReady('orders', [orders.url], { everyMs: 10, withinMs: 5000 })).resolves.toBe(true);
    expect(orders.asked()).toBe(4);
  });

  it('takes any instance: one not listening does not hold it up', async () => {
    const up = await service(0);
    const started = Date.now();
    await expect(firstReady('orders', ['http://127.0.0.1:1', up.url], { withinMs: 5000 })).resolves.toBe(
      true,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('resolves false once the time is up when no instance is ever ready, asking until then', async () => {
    const never = await service(Number.POSITIVE_INFINITY);
    const started = Date.now();
    await expect(firstReady('orders', [never.url], { everyMs: 20, withinMs: 300 })).resolves.toBe(false);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(1500);
    expect(never.asked()).toBeGreaterThan(3);
  });

  it('gives up in time on an instance that never answers', async () => {
    const stalled = createServer(() => {}); // Takes the request, says nothing.
    servers.push(stalled);
    await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(stalled.address() as AddressInfo).port}`;
    const started = Date.now();
    await expect(firstReady('orders', [url], { withinMs: 400 })).resolves.toBe(false);
    expect(Date.now() - started).toBeLessThan(1500);
    stalled.closeAllConnections();
  });
});
