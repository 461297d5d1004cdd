import { describe, expect, it } from 'vitest';
import { ServiceClient } from './client.js';
import { isInvalidRequestError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { server, client } = clientKit({ retry: false });

describe('ServiceClient request target', () => {
  it('refuses a path with characters that are not printable ASCII, saying to encode them, and sends nothing', async () => {
    const s = await server();
    const c = client(s.url);
    for (const path of ['/users/café', '/users/日本', '/search?q=crème', '/a b', '/tab\there', '/x\u007f']) {
      const error = await rejection(c.get(path));
      expect(isInvalidRequestError(error), `${JSON.stringify(path)}: ${String(error)}`).toBe(true);
      expect((error as Error).message).toMatch(/encodeURIComponent/);
    }
    expect(s.requests).toHaveLength(0);
    // Encoded, they are sent as they are; a fragment, never sent, is not checked.
    await c.get(`/users/${encodeURIComponent('café')}#naïve`);
    expect(s.requests.map((request) => request.path)).toEqual(['/users/caf%C3%A9']);
  });

  it("joins the query option to the path's own query with &", async () => {
    const s = await server();
    const c = client(`${s.url}/api`);
    await c.get('/orders?status=open', { query: { page: 2, q: 'a&b' } });
    await c.get('/orders', { query: { page: 3 } });
    expect(s.requests.map((request) => request.path)).toEqual([
      '/api/orders?status=open&page=2&q=a%26b',
      '/api/orders?page=3',
    ]);
  });

  it('adds no empty pair to a query the path leaves open, or to an empty one before a fragment', async () => {
    const s = await server();
    const c = client(s.url);
    for (const path of ['/p?', '/p?#top', '/p?a=1&', '/p?a=1&#top', '/p?a=1']) {
      await c.get(path, { query: { x: 1 } });
    }
    expect(s.requests.map((request) => request.path)).toEqual([
      '/p?x=1',
      '/p?x=1',
      '/p?a=1&x=1',
      '/p?a=1&x=1',
      '/p?a=1&x=1',
    ]);
  });

  it('joins a base URL ending in slashes and a path with one slash between them', async () => {
    const s = await server();
    for (const base of [`${s.url}/api/`, `${s.url}/api//`, `${s.url}/api///`]) {
      await client(base).get('/orders');
    }
    for (const base of [`${s.url}/`, `${s.url}//`]) await client(base).get('/orders');
    expect(s.requests.map((request) => request.path)).toEqual([
      '/api/orders',
      '/api/orders',
      '/api/orders',
      '/orders',
      '/orders',
    ]);
  });

  it('refuses a base URL with a query or fragment, an empty one too, with INVALID_OPTIONS', async () => {
    // URL parsing drops an empty `?` or `#`: they were accepted, and silently dropped.
    for (const suffix of ['?x=1', '?', '#', '#f', '?#', '/?', '/#']) {
      const base = `http://127.0.0.1:1/api${suffix}`;
      expect(() => new ServiceClient(base), base).toThrow(
        expect.objectContaining({
          code: 'INVALID_OPTIONS',
          message: expect.stringMatching(/query or fragment/),
        }),
      );
    }
    // Encoded, they are the path's characters.
    await new ServiceClient('http://127.0.0.1:1/a%3Fb%23c').close();
  });
});
