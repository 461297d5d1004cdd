import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { server, client } = clientKit({ retry: { maxAttempts: 2, backoff: () => 5 }, breaker: false });

const SECRET = 'sk_live_51SECRETVALUE';

/**
 * A call's target shows in its errors and events, which end up in logs (the server middleware logs
 * a failed dependency's error): the values of secret query parameters (`?api_key=`, `?token=`) are
 * masked there, as `redactUrl` masks them; the request itself carries them. They were shown raw.
 */
describe('ServiceClient: secrets in the query of a call', () => {
  it('are masked in HttpError (message and url), and in every event, but sent as given', async () => {
    const s = await server();
    s.enqueue({ status: 503 }, { status: 500 });
    const c = client(s);
    const events: string[] = [];
    for (const kind of ['attempt', 'response', 'retry', 'rejection'] as const) {
      c.on(
        kind,
        (event) =>
          void events.push(
            `${kind} ${JSON.stringify(event)} ${String((event as { error?: Error }).error?.message)}`,
          ),
      );
    }
    const error = await rejection(c.get(`/charge?api_key=${SECRET}&order=7`));
    expect(error).toMatchObject({
      code: 'HTTP_ERROR',
      status: 500,
      message: `GET ${s.url}/charge?api_key=***&order=7 answered 500`,
      url: `${s.url}/charge?api_key=***&order=7`,
    });
    expect(events.filter((e) => e.startsWith('attempt'))).toHaveLength(2);
    expect(events.some((e) => e.startsWith('retry'))).toBe(true);
    expect(events.join('\n')).not.toContain(SECRET);
    expect(events.join('\n')).toContain('/charge?api_key=***&order=7');
    expect(s.requests.map((r) => r.path)).toEqual([
      `/charge?api_key=${SECRET}&order=7`,
      `/charge?api_key=${SECRET}&order=7`,
    ]);
  });

  it('are masked in TimeoutError and ConnectionError, query option included', async () => {
    const s = await server();
    s.enqueue({ hang: true });
    const timedOut = (await rejection(
      client(s, { retry: false }).get('/slow', { timeout: 100, query: { token: SECRET } }),
    )) as Error;
    expect(timedOut).toMatchObject({ code: 'TIMEOUT' });
    expect(timedOut.message).toContain('/slow?token=***');
    expect(timedOut.message).not.toContain(SECRET);

    s.enqueue({ reset: true });
    const broken = (await rejection(client(s, { retry: false }).get(`/x?password=${SECRET}`))) as Error;
    expect(broken).toMatchObject({ code: 'CONNECTION_ERROR' });
    expect(broken.message).toContain('/x?password=***');
    expect(broken.message).not.toContain(SECRET);
  });

  it('are masked in the refusal of a path without its "/", and under encoded or other secret names', async () => {
    const c = client('http://127.0.0.1:9');
    const refused = (await rejection(c.get(`charges?api_key=${SECRET}`))) as Error;
    expect(refused).toMatchObject({ code: 'INVALID_REQUEST' });
    expect(refused.message).not.toContain(SECRET);
    for (const name of ['toke%6E', 'X-Amz-Signature', 'sig', 'auth', 'jwt', 'session']) {
      const s = await server();
      s.enqueue({ status: 500 });
      const error = (await rejection(
        client(s, { retry: false }).get(`/f?${name}=${SECRET}&page=2`),
      )) as Error;
      expect(error.message, name).toBe(`GET ${s.url}/f?${name}=***&page=2 answered 500`);
    }
  });

  it('refuses a path that is not a string with INVALID_REQUEST (it threw a TypeError)', async () => {
    const c = client('http://127.0.0.1:9');
    for (const path of [123, null, Symbol('p'), {}]) {
      expect(await rejection(c.get(path as never))).toMatchObject({
        code: 'INVALID_REQUEST',
        message: expect.stringMatching(/the path must be a string starting with "\/", not /),
      });
    }
  });

  it('keeps a response Set-Cookie out of the HttpError JSON and inspection, readable in headers', async () => {
    const s = await server();
    const cookie = `session=${SECRET}; HttpOnly; Secure`;
    s.enqueue({ status: 401, headers: { 'set-cookie': cookie } });
    const error = await rejection(client(s).get('/login'));
    expect(error).toMatchObject({ code: 'HTTP_ERROR', status: 401 });
    // What a log line holds of the error: a structured logger serializes its enumerable fields.
    expect(JSON.stringify(error)).not.toContain(SECRET);
    expect(JSON.stringify({ ...(error as object) })).not.toContain(SECRET);
    expect(inspect(error)).not.toContain(SECRET);
    expect((error as { headers: Record<string, unknown> }).headers['set-cookie']).toBe(cookie);
  });
});
