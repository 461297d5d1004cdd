import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { ServiceClient, type ServiceClientOptions } from './client.js';
import { DEFAULT_SERVICE_CLIENT_OPTIONS } from './client-options.js';

/** What `new ServiceClient` threw with these options (undefined when it made a client). */
function refusal(options: unknown): unknown {
  try {
    void new ServiceClient('http://127.0.0.1:1', options as ServiceClientOptions).close();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('ServiceClient options', () => {
  // Each of these lifted a limit or was accepted only to fail every call later.
  it.each([
    [
      'maxResponseBytes: NaN',
      { maxResponseBytes: Number.NaN },
      /maxResponseBytes must be an integer at least 1/,
    ],
    ['maxResponseBytes: Infinity', { maxResponseBytes: Number.POSITIVE_INFINITY }, /maxResponseBytes/],
    ['maxResponseBytes: 0', { maxResponseBytes: 0 }, /maxResponseBytes/],
    ['maxResponseBytes: -1', { maxResponseBytes: -1 }, /maxResponseBytes/],
    ['maxResponseBytes: 1.5', { maxResponseBytes: 1.5 }, /maxResponseBytes/],
    ['maxResponseBytes: "1000"', { maxResponseBytes: '1000' }, /maxResponseBytes/],
    ['connections: 0', { connections: 0 }, /connections must be an integer at least 1, not 0/],
    ['connections: -1', { connections: -1 }, /connections/],
    ['connections: NaN', { connections: Number.NaN }, /connections/],
    ['connections: 2.5', { connections: 2.5 }, /connections/],
    ['name: ""', { name: '' }, /name must be a non-empty string, not ""/],
    ['name: 5', { name: 5 }, /name must be a non-empty string, not 5/],
    ['name: null', { name: null }, /name must be a non-empty string, not null/],
    [
      'breaker: { errorThresholdPercentage: 150 }',
      { breaker: { errorThresholdPercentage: 150 } },
      /errorThresholdPercentage must be in \(0, 100\]/,
    ],
    ['breaker: { minimumVolume: -1 }', { breaker: { minimumVolume: -1 } }, /minimumVolume/],
    ['breaker: { resetTimeoutMs: NaN }', { breaker: { resetTimeoutMs: Number.NaN } }, /resetTimeoutMs/],
    ['breaker: { buckets: 0 }', { breaker: { buckets: 0 } }, /buckets/],
    ['breaker: { isIgnored: "x" }', { breaker: { isIgnored: 'x' as never } }, /isIgnored/],
    [
      'breaker: { key: "routes" }',
      { breaker: { key: 'routes' } },
      /breaker.key must be 'origin' or 'route', not "routes"/,
    ],
    [
      'breaker: { maxRoutes: 0 }',
      { breaker: { maxRoutes: 0 } },
      /breaker.maxRoutes must be an integer at least 1/,
    ],
    ['breaker: "route"', { breaker: 'route' }, /breaker must be false or an object/],
    // The client counts failures its own way and names its breakers: both were dropped.
    [
      'breaker: { isFailure }',
      { breaker: { isFailure: () => false } },
      /breaker.isFailure is not read by ServiceClient.*breaker.isIgnored/,
    ],
    ['breaker: { name }', { breaker: { name: 'mine' } }, /breaker.name is not read by ServiceClient/],
    // Every call failed with a ConnectionError (opening the breaker), or an untyped Error for null.
    ['dispatcher: {}', { dispatcher: {} }, /dispatcher must be an undici Dispatcher.*not an object/],
    ['dispatcher: "agent"', { dispatcher: 'agent' }, /dispatcher must be an undici Dispatcher/],
    ['dispatcher: null', { dispatcher: null }, /dispatcher must be an undici Dispatcher.*not null/],
    ['retry: { backoff: 5 }', { retry: { backoff: 5 } }, /retry.backoff must be a function/],
    [
      'retry',
      { retry: { maxRetryAfterMs: Number.NaN } },
      /retry.maxRetryAfterMs must be a number of milliseconds in \[0, /,
    ],
    ['retry: { maxRetryAfterMs: -1 }', { retry: { maxRetryAfterMs: -1 } }, /retry.maxRetryAfterMs/],
    ['retry: { maxRetryAfterMs: 2 ** 31 }', { retry: { maxRetryAfterMs: 2 ** 31 } }, /retry.maxRetryAfterMs/],
    [
      'retry: { maxAttempts: 0 }',
      { retry: { maxAttempts: 0 } },
      /retry.maxAttempts must be an integer from 1 to 100, not 0/,
    ],
    [
      'retry: { statuses: 503 }',
      { retry: { statuses: 503 } },
      /retry.statuses must be an array of HTTP statuses/,
    ],
    ['retry: { statuses: [503, 5030] }', { retry: { statuses: [503, 5030] } }, /retry.statuses/],
    ['retry: true', { retry: true }, /retry must be false or an object/],
    ['retryBudget: { ratio: NaN }', { retryBudget: { ratio: Number.NaN } }, /ratio/],
    ['retryBudget: 0.2', { retryBudget: 0.2 }, /retryBudget must be false or an object/],
    ['bulkhead: { maxConcurrent: 0 }', { bulkhead: { maxConcurrent: 0 } }, /maxConcurrent/],
    ['bulkhead: { maxQueue: -1 }', { bulkhead: { maxQueue: -1 } }, /maxQueue/],
  ])('refuses %s in the constructor', (_, options, message) => {
    const error = refusal(options);
    expect(isInvalidOptionsError(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(message);
  });

  it('takes the values at the edges of their ranges', () => {
    for (const options of [
      { maxResponseBytes: 1, connections: 1, name: 'users' },
      { breaker: { key: 'route', maxRoutes: 1, errorThresholdPercentage: 100, minimumVolume: 1 } },
      { retry: { maxAttempts: 100, maxRetryAfterMs: 0, statuses: [] } },
      { retry: { maxAttempts: 1, maxRetryAfterMs: 2 ** 31 - 1, statuses: [100, 599], backoff: () => 0 } },
      { retry: false, retryBudget: false, breaker: false, bulkhead: false },
      { bulkhead: { maxConcurrent: 1, maxQueue: 0 }, retryBudget: { ratio: 0, minRetriesPerSecond: 0 } },
    ] as const) {
      expect(refusal(options), JSON.stringify(options)).toBeUndefined();
    }
  });

  it('checks the retry settings of a call as the client does', async () => {
    const c = new ServiceClient('http://127.0.0.1:1', { breaker: false });
    try {
      const error = await c.get('/x', { retry: { maxRetryAfterMs: Number.NaN } }).catch((e: unknown) => e);
      expect(isInvalidOptionsError(error)).toBe(true);
      expect((error as Error).message).toMatch(/retry.maxRetryAfterMs/);
    } finally {
      await c.close();
    }
  });
});

describe('ServiceClient options it does not read, and its headers', () => {
  // Each was accepted: a misspelt option dropped for its default, headers that failed every call.
  it.each([
    [
      'a misspelt option',
      { timeOut: 100 },
      /^ServiceClient has no option "timeOut": it takes name, timeout, /,
    ],
    ['a misspelt retry option', { retry: { maxAttempt: 5 } }, /^retry has no option "maxAttempt"/],
    [
      'a breaker option from opossum',
      { breaker: { failureThreshold: 3 } },
      /has no option "failureThreshold"/,
    ],
    [
      'a misspelt bulkhead option',
      { bulkhead: { maxConcurrency: 3 } },
      /^bulkhead has no option "maxConcurrency"/,
    ],
    [
      'headers as a string (sent as headers 0, 1…)',
      { headers: 'xy' },
      /ServiceClient headers options must be an object/,
    ],
    [
      'a header value with a line break',
      { headers: { 'x-tenant': 'a\r\nx-injected: 1' } },
      /x-tenant holds a line break or control character \(U\+000D at index 1 of 16; the value is not shown/,
    ],
    ['a header value that is not a string', { headers: { 'x-n': 5 } }, /x-n must be a string, not a number/],
    [
      'a connection header undici would refuse on every call',
      { headers: { connection: 'a b' } },
      /connection may only say close or keep-alive/,
    ],
    [
      'an empty connection header',
      { headers: { Connection: '' } },
      /connection may only say close or keep-alive/,
    ],
    [
      'headers as a Map (never sent)',
      { headers: new Map([['authorization', 'Bearer t']]) },
      /must be a plain object of header names and string values/,
    ],
    [
      'headers as a Headers (failed every call)',
      { headers: new Headers({ authorization: 'Bearer t' }) },
      /must be a plain object/,
    ],
    ['a header name with a space', { headers: { 'x tenant': 'a' } }, /"x tenant" is not a header name/],
    [
      'transfer-encoding',
      { headers: { 'Transfer-Encoding': 'chunked' } },
      /Transfer-Encoding is the connection's own/,
    ],
    ['upgrade', { headers: { upgrade: 'websocket' } }, /upgrade is the connection's own/],
    ['keep-alive', { headers: { 'keep-alive': 'timeout=5' } }, /keep-alive is the connection's own/],
    ['expect', { headers: { expect: '100-continue' } }, /must not hold expect/],
    ['content-length', { headers: { 'content-length': '5' } }, /must not hold content-length/],
    ['an Idempotency-Key', { headers: { 'Idempotency-Key': 'k' } }, /must not hold an Idempotency-Key/],
  ])('refuses %s with INVALID_OPTIONS as it is made', (_what, options, message) => {
    const error = refusal(options);
    expect(isInvalidOptionsError(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(message);
  });

  it('does not quote a header value it refuses: it may be a credential', () => {
    const error = refusal({ headers: { authorization: 'Bearer sk_live_SECRET\n' } }) as Error;
    expect(isInvalidOptionsError(error)).toBe(true);
    expect(error.message).not.toContain('sk_live_SECRET');
  });

  it('takes the exported defaults spread into its options (maxRoutes sat beside them, refused)', () => {
    expect(refusal({ ...DEFAULT_SERVICE_CLIENT_OPTIONS, timeout: 1000 })).toBeUndefined();
  });

  it('takes headers it can send with every call, an undefined one left out', () => {
    expect(
      refusal({ headers: { authorization: 'Bearer t', 'x-tenant': 'café', 'x-u': undefined } }),
    ).toBeUndefined();
    expect(refusal({ name: 'users', timeout: undefined })).toBeUndefined();
  });

  it("refuses a call option it does not read (a POST sent without its misspelt idempotency key), request()'s own taken", async () => {
    const c = new ServiceClient('http://127.0.0.1:1', { breaker: false, retry: false });
    try {
      const error = await c.post('/x', {}, { idempotencykey: 'k' } as never).catch((e: unknown) => e);
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(
        /^the call has no option "idempotencykey": it takes headers, timeout, /,
      );
      const other = await c
        .request({ method: 'GET', path: '/x', timeOut: 5 } as never)
        .catch((e: unknown) => e);
      expect((other as Error).message).toMatch(
        /^request has no option "timeOut": it takes method, path, body, headers/,
      );
      // request()'s method, path and body are its own: the call is made (and finds nothing there).
      const made = await c
        .request({ method: 'POST', path: '/x', body: {}, timeout: 500 })
        .catch((e: unknown) => e);
      expect((made as { code?: string }).code).toBe('CONNECTION_ERROR');
      // A call's headers as a Map were dropped without a word.
      const mapped = await c
        .get('/x', { headers: new Map([['x-a', 'b']]) as never })
        .catch((e: unknown) => e);
      expect(isInvalidOptionsError(mapped), String(mapped)).toBe(true);
      // request() without a method, or with one that is not a string: a TypeError thrown at the caller.
      for (const init of [{ path: '/x' }, { method: 5, path: '/x' }, null]) {
        await expect(c.request(init as never)).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
      }
    } finally {
      await c.close();
    }
  });

  it('refuses a call query that is not a plain object of scalars, and a signal that is not an AbortSignal, sending nothing', async () => {
    const seen: string[] = [];
    const server = createServer((request, response) => {
      seen.push(request.url ?? '');
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const c = new ServiceClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
      retry: false,
    });
    try {
      const refused: [unknown, RegExp][] = [
        // Went out with no query at all.
        [
          { query: new URLSearchParams({ status: 'open' }) },
          /the call query must be a plain object.*URLSearchParams/,
        ],
        [{ query: new Map([['status', 'open']]) }, /the call query must be a plain object/],
        // Went out as ?0=s&1=t&….
        [{ query: 'status=open' }, /the call query options must be an object/],
        [{ query: null }, /the call query options must be an object/],
        [
          { query: { ids: [1, 2] } },
          /query parameter "ids" must be a string, a finite number, a boolean or undefined/,
        ],
        [{ query: { page: Number.NaN } }, /query parameter "page"/],
        // A raw TypeError.
        [{ signal: {} }, /the call signal must be an AbortSignal, not an object/],
        [{ signal: null }, /the call signal must be an AbortSignal, not null/],
      ];
      for (const [options, message] of refused) {
        const error = await c.get('/orders', options as never).catch((e: unknown) => e);
        expect(isInvalidOptionsError(error), String(error)).toBe(true);
        expect((error as Error).message).toMatch(message);
      }
      expect(seen).toEqual([]);
      await c.get('/orders', {
        query: { status: 'open', page: 2, all: true, none: undefined },
        signal: new AbortController().signal,
      });
      await c.get('/orders', { query: Object.assign(Object.create(null), { a: 'b' }) });
      expect(seen).toEqual(['/orders?status=open&page=2&all=true', '/orders?a=b']);
    } finally {
      await c.close();
      server.close();
    }
  });

  it("refuses a call's header value that is not a string, as the constructor does, sending nothing", async () => {
    const seen: (string | string[] | undefined)[] = [];
    const server = createServer((request, response) => {
      seen.push(request.headers['x-n']);
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const c = new ServiceClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
      retry: false,
    });
    try {
      // Went out as 5, true, a,b.
      for (const [value, kind] of [
        [5, 'a number'],
        [true, 'a boolean'],
        [['a', 'b'], 'an array'],
        [null, 'null'],
        [{ v: 'sk_live_SECRET' }, 'an object'],
      ] as const) {
        const error = await c.get('/x', { headers: { 'x-n': value } as never }).catch((e: unknown) => e);
        expect(isInvalidOptionsError(error), String(error)).toBe(true);
        expect((error as Error).message).toBe(`the call headers: x-n must be a string, not ${kind}`);
      }
      expect(refusal({ headers: { 'x-n': [1] } })).toMatchObject({
        message: 'ServiceClient headers: x-n must be a string, not an array',
      });
      expect(seen).toEqual([]);
      await c.get('/x', { headers: { 'x-n': '5', 'x-u': undefined } as never });
      expect(seen).toEqual(['5']);
    } finally {
      await c.close();
      server.close();
    }
  });
});
