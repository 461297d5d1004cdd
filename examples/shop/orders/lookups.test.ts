import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpProblemError } from 'ferry';
import { afterEach, describe, expect, it } from 'vitest';
import { Upstream } from '../upstream.js';
import { serviceLookups } from './lookups.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A users and inventory stand-in: knows user `u-1` and product `tea`, records every path asked. */
async function services() {
  const asked: string[] = [];
  const server = createServer((req, res) => {
    asked.push(req.url ?? '');
    const known: Record<string, unknown> = {
      '/users/u-1': { id: 'u-1' },
      '/products/tea': { id: 'tea', price: 450 },
      '/users/a%2Fb%3Fc': { id: 'a/b?c' },
    };
    const body = known[req.url ?? ''];
    res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? { status: 404 }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const users = new Upstream('users', [url]);
  const inventory = new Upstream('inventory', [url]);
  closers.push(
    () => new Promise((resolve) => server.close(() => resolve())),
    () => users.close(),
    () => inventory.close(),
  );
  return { asked, lookups: serviceLookups(users, inventory) };
}

describe('order lookups over HTTP', () => {
  it('finds users and products by id, each id one path segment', async () => {
    const { asked, lookups } = await services();
    expect(await lookups.findUser('u-1')).toEqual({ id: 'u-1' });
    expect(await lookups.findProduct('tea')).toEqual({ id: 'tea', price: 450 });
    expect(await lookups.findUser('a/b?c')).toEqual({ id: 'a/b?c' });
    expect(await lookups.findUser('nobody')).toBeUndefined();
    expect(asked).toEqual(['/users/u-1', '/products/tea', '/users/a%2Fb%3Fc', '/users/nobody']);
  });

  it('answers unknown, without a call and without throwing, for ids no URL can name', async () => {
    const { asked, lookups } = await services();
    for (const id of ['\ud800', 'u-1\udc00', '', '.', '..']) {
      await expect(lookups.findUser(id), JSON.stringify(id)).resolves.toBeUndefined();
      await expect(lookups.findProduct(id), JSON.stringify(id)).resolves.toBeUndefined();
    }
    expect(asked).toEqual([]);
  });

  it('answers 503 for a service it cannot reach, without telling the client where that service lives', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise((resolve) => server.close(resolve));
    const gone = new Upstream('users', [`http://127.0.0.1:${port}`], { timeoutMs: 2000 });
    closers.push(() => gone.close());
    const error = await serviceLookups(gone, gone)
      .findUser('u-1')
      .then(
        () => undefined,
        (e: unknown) => e as HttpProblemError,
      );
    expect(error).toBeInstanceOf(HttpProblemError);
    expect(error?.status).toBe(503);
    expect(error?.detail).toBe('users cannot be reached; the order was not placed, try again.');
    expect(JSON.stringify(error?.toProblem())).not.toContain(String(port));
  });
});
