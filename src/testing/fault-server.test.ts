import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { FaultServer } from './fault-server.js';

const servers: FaultServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function start(...args: Parameters<typeof FaultServer.start>): Promise<FaultServer> {
  const server = await FaultServer.start(...args);
  servers.push(server);
  return server;
}

async function call(url: string, init: Parameters<typeof request>[1] = {}) {
  const response = await request(url, init);
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

describe('FaultServer', () => {
  it('answers 200 { ok, path, method } by default, on 127.0.0.1', async () => {
    const server = await start();
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await call(`${server.url}/users/42?x=1`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(JSON.parse(res.text)).toEqual({ ok: true, path: '/users/42?x=1', method: 'GET' });
  });

  it('consumes scripted faults in order, then falls back to the default', async () => {
    const server = await start();
    server.enqueue(
      { status: 500 },
      { status: 201, body: { id: 7 }, headers: { 'x-extra': 'yes' } },
      { body: 'plain' },
    );
    expect(server.pending).toBe(3);
    const first = await call(server.url);
    expect(first).toMatchObject({ status: 500, text: '' });
    const second = await call(server.url);
    expect(second.status).toBe(201);
    expect(second.headers['x-extra']).toBe('yes');
    expect(JSON.parse(second.text)).toEqual({ id: 7 });
    const third = await call(server.url);
    expect(third).toMatchObject({ status: 200, text: 'plain' });
    expect(third.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect((await call(server.url)).status).toBe(200);
    expect(server.pending).toBe(0);

    server.setDefault({ status: 503 });
    expect((await call(server.url)).status).toBe(503);
  });

  it('takes a default answer from its options', async () => {
    const server = await start({ default: { status: 418, body: { teapot: true } } });
    const res = await call(server.url);
    expect(res.status).toBe(418);
    expect(JSON.parse(res.text)).toEqual({ teapot: true });
  });

  it('sets Retry-After from seconds or an HTTP date, with 503 unless told otherwise', async () => {
    const server = await start();
    const date = 'Wed, 21 Oct 2026 07:28:00 GMT';
    server.enqueue({ retryAfter: 2 }, { status: 429, retryAfter: date });
    const seconds = await call(server.url);
    expect(seconds.status).toBe(503);
    expect(seconds.headers['retry-after']).toBe('2');
    const http = await call(server.url);
    expect(http.status).toBe(429);
    expect(http.headers['retry-after']).toBe(date);
  });

  it('answers with a problem document', async () => {
    const server = await start();
    server.enqueue(
      { problem: { title: 'Out of stock', detail: 'sku A', sku: 'A' } },
      { problem: { status: 409 } },
    );
    const res = await call(server.url);
    expect(res.status).toBe(500);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.text)).toEqual({
      type: 'about:blank',
      title: 'Out of stock',
      status: 500,
      detail: 'sku A',
      sku: 'A',
    });
    const conflict = await call(server.url);
    expect(conflict.status).toBe(409);
    expect(JSON.parse(conflict.text)).toMatchObject({ title: 'Conflict', status: 409 });
  });

  it('delays the answer', async () => {
    const server = await start();
    server.enqueue({ delayMs: 150 });
    const started = Date.now();
    expect((await call(server.url)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('resets the connection without answering', async () => {
    const server = await start();
    server.enqueue({ reset: true });
    await expect(request(server.url)).rejects.toMatchObject({
      code: expect.stringMatching(/ECONNRESET|UND_ERR_SOCKET/),
    });
    expect((await call(server.url)).status).toBe(200);
    expect(server.requests).toHaveLength(2);
  });

  it('hangs until the client gives up, and close() ends the hanging connection', async () => {
    const server = await start();
    server.enqueue({ hang: true }, { hang: true });
    await expect(request(server.url, { headersTimeout: 100 })).rejects.toMatchObject({
      code: 'UND_ERR_HEADERS_TIMEOUT',
    });
    const pending = request(server.url);
    await expect.poll(() => server.requests.length).toBe(2);
    const started = Date.now();
    await server.close();
    await expect(pending).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('close() ends idle keep-alive connections and pending delays', async () => {
    const server = await start();
    await call(server.url); // leaves a keep-alive connection in undici's pool
    server.enqueue({ delayMs: 60_000 });
    const delayed = request(server.url);
    await expect.poll(() => server.requests.length).toBe(2);
    const started = Date.now();
    await server.close();
    await expect(delayed).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('close() called twice resolves once the server is closed, both times', async () => {
    const server = await start();
    const { url } = server;
    await call(url);
    let firstDone = false;
    const first = server.close().then(() => {
      firstDone = true;
    });
    await server.close();
    // The second call waited for the first: the port is closed when either resolves.
    expect(firstDone).toBe(true);
    await first;
    await expect(call(url)).rejects.toThrow();
  });

  it('refuses a script given after close(): no request could ever consume it', async () => {
    const server = await start();
    await server.close();
    const closed = { name: 'InvalidOptionsError', message: expect.stringMatching(/is closed/) };
    expect(() => server.enqueue({ status: 503 })).toThrow(expect.objectContaining(closed));
    expect(() => server.route('GET', '/a', { status: 503 })).toThrow(expect.objectContaining(closed));
    expect(() => server.setDefault({ status: 503 })).toThrow(expect.objectContaining(closed));
    expect(server.pending).toBe(0);
  });

  it('routes faults by method and path, each route with its own script', async () => {
    const server = await start();
    server.route('GET', '/users/42', { status: 503 }, { status: 404 });
    server.route('post', '/orders', { status: 201 });
    server.enqueue({ status: 500 });
    expect((await call(`${server.url}/users/42?fields=name`)).status).toBe(503);
    expect((await call(`${server.url}/users/42`, { method: 'DELETE' })).status).toBe(500); // global script
    expect((await call(`${server.url}/orders`, { method: 'POST', body: '{}' })).status).toBe(201);
    expect((await call(`${server.url}/users/42`)).status).toBe(404);
    expect((await call(`${server.url}/users/42`)).status).toBe(200); // route script used up: default
    expect(server.pending).toBe(0);
  });

  it('records every request with method, path, headers, body and time', async () => {
    const server = await start();
    const before = Date.now();
    await call(`${server.url}/orders?x=1`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'idempotency-key': 'key-1',
        'x-correlation-id': 'corr-1',
        'x-deadline-ms': '2500',
      },
      body: '{"sku":"A"}',
    });
    server.enqueue({ reset: true });
    await request(`${server.url}/gone`).catch(() => {});
    expect(server.requests).toHaveLength(2);
    const [first, second] = server.requests;
    expect(first).toMatchObject({ method: 'POST', path: '/orders?x=1', body: '{"sku":"A"}' });
    expect(first?.headers).toMatchObject({
      'idempotency-key': 'key-1',
      'x-correlation-id': 'corr-1',
      'x-deadline-ms': '2500',
    });
    expect(first?.at).toBeGreaterThanOrEqual(before);
    expect(second).toMatchObject({ method: 'GET', path: '/gone', body: '' });
    expect(server.requests.filter((r) => r.path === '/gone')).toHaveLength(1);

    // What was read is a snapshot: later requests and clear() leave it as it was.
    const seen = server.requests;
    await call(`${server.url}/later`);
    server.clear();
    expect(server.requests).toHaveLength(0);
    expect(seen.map((r) => r.path)).toEqual(['/orders?x=1', '/gone']);
    // Each request as received: frozen, its headers too (a test changing one changed every later read).
    expect(Object.isFrozen(seen[0]) && Object.isFrozen(seen[0]?.headers)).toBe(true);
    expect(() => {
      (seen[0]?.headers as Record<string, string>)['x-correlation-id'] = 'changed';
    }).toThrow(TypeError);
  });

  // Each was accepted: a misspelt key answered 200 (the test ran against a healthy server); the
  // others threw inside the server when a request used them, killing the test process.
  it.each([
    ['a misspelt key', { stauts: 500 }, /has no option "stauts"/],
    ['a status Node refuses', { status: 99 }, /status must be an integer from 200 to 599/],
    ['a status past 599', { status: 1000 }, /status must be an integer/],
    ['a fractional status', { status: 200.5 }, /status must be an integer/],
    ['a Retry-After with a line break', { retryAfter: 'soon\r\nX: 1' }, /retryAfter must be/],
    ['a header name with a space', { headers: { 'bad header': 'x' } }, /"bad header" is not a header name/],
    [
      'a header value with a line break',
      { headers: { 'x-a': 'a\nb' } },
      /x-a holds a line break or control character/,
    ],
    ['a body JSON cannot write', { body: 10n }, /body cannot be written as JSON/],
    ['a negative delay', { delayMs: -1 }, /delayMs must be a number of milliseconds from 0 to 2147483647/],
    ['a delay that is not a number', { delayMs: Number.NaN }, /delayMs must be a number/],
    [
      'a delay longer than a timer takes (it fired at once)',
      { delayMs: 2 ** 31 },
      /delayMs must be a number/,
    ],
    [
      'reset and hang at once',
      { reset: true, hang: true },
      /hangs: it sends nothing, so reset would be ignored/,
    ],
    [
      'a status with a reset',
      { reset: true, status: 500 },
      /resets the connection: it answers nothing, so status/,
    ],
    ['a body with a hang', { hang: true, body: 'x' }, /hangs: it sends nothing, so body would be ignored/],
    ['a problem and a body', { problem: { title: 'x' }, body: 'y' }, /cannot have both a problem and a body/],
    ['a body with a 204', { status: 204, body: 'x' }, /cannot have a body with status 204/],
    [
      'a trailer header (Node threw at the first request)',
      { headers: { trailer: 'x-sum' } },
      /must not hold trailer/,
    ],
    [
      'a transfer-encoding header (no client could read the answer)',
      { headers: { 'Transfer-Encoding': 'chunked' } },
      /must not hold Transfer-Encoding/,
    ],
    [
      'a content-length header (it was replaced without a word)',
      { headers: { 'content-length': '5' } },
      /must not hold content-length/,
    ],
    [
      'a header named __proto__ (never sent)',
      { headers: JSON.parse('{"__proto__":"x"}') },
      /"__proto__" is not a header name it can send/,
    ],
    [
      'headers as a Headers (none sent)',
      { headers: new Headers({ a: 'b' }) },
      /headers must be a plain object/,
    ],
    ['a Retry-After too large to write as digits', { retryAfter: 1e21 }, /retryAfter must be a whole number/],
    ['a blank Retry-After', { retryAfter: '   ' }, /retryAfter must be/],
    [
      'a problem with a 204 (sent without its document)',
      { problem: { status: 204, title: 'gone' } },
      /cannot have a problem with status 204/,
    ],
    [
      'a problem with a 304',
      { status: 304, problem: { detail: 'x' } },
      /cannot have a problem with status 304/,
    ],
    [
      'a problem that is a string, beside a status (spread as "0", "1"…)',
      { status: 500, problem: 'oops' },
      /problem must be a plain object/,
    ],
    [
      'a problem with a toJSON (it replaced the document)',
      { problem: { toJSON: () => 'not a problem' } },
      /problem must be a plain object/,
    ],
    ['a body with a 205', { status: 205, body: 'x' }, /cannot have a body with status 205/],
    [
      'one header named twice (one was dropped)',
      { headers: { 'Set-Cookie': ['a=1'], 'set-cookie': ['b=2'] } },
      /name one header twice \(Set-Cookie and set-cookie\)/,
    ],
    ['a string body with a lone surrogate (sent as U+FFFD)', { body: 'a\ud800' }, /lone surrogate/],
    [
      "two statuses (the problem's was replaced)",
      { status: 503, problem: { status: 404 } },
      /gives two statuses \(503 and problem.status 404\)/,
    ],
    [
      'Retry-After twice (one was dropped)',
      { retryAfter: 5, headers: { 'Retry-After': '9' } },
      /gives Retry-After twice/,
    ],
    ['a problem with a bad status', { problem: { status: 42 } }, /problem.status must be an integer/],
  ])('refuses %s as it is scripted, with INVALID_OPTIONS', async (_what, fault, message) => {
    const server = await start();
    for (const script of [
      () => server.enqueue(fault as never),
      () => server.route('GET', '/x', fault as never),
      () => server.setDefault(fault as never),
    ]) {
      let error: unknown;
      try {
        script();
      } catch (caught) {
        error = caught;
      }
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(message);
    }
    await expect(FaultServer.start({ default: fault as never })).rejects.toThrow(message);
    expect(server.pending).toBe(0);
    // Still answering as before.
    expect((await call(server.url)).status).toBe(200);
  });

  it('refuses a route whose method or path cannot match a request', async () => {
    const server = await start();
    expect(() => server.route('GET /x', '/x', {})).toThrow(/method must be one Node's HTTP parser knows/);
    expect(() => server.route('GET', 'x', {})).toThrow(/path must start with "\/"/);
    // Node answers FOO with its own 400; the others arrive percent-encoded: none could ever match.
    expect(() => server.route('FOO', '/x', {})).toThrow(/method must be one Node's HTTP parser knows/);
    expect(() => server.route('GET', '/é', {})).toThrow(/only printable ASCII/);
    expect(() => server.route('GET', '/a b', {})).toThrow(/only printable ASCII/);
    expect(() => server.route('OPTIONS', '*', {})).not.toThrow();
  });

  it('reads a fault once, as it is scripted: changing it afterwards changes nothing', async () => {
    const server = await start();
    const fault: { status: number; body: { n: number } } = { status: 201, body: { n: 1 } };
    server.enqueue(fault);
    fault.status = 42; // a status Node refuses: it threw inside the server at the request
    fault.body.n = 2;
    expect(await call(server.url)).toMatchObject({ status: 201, text: '{"n":1}' });
  });

  it('sends bytes of any view or ArrayBuffer as they are, null as the default body, numbers and lists of header values', async () => {
    const server = await start();
    const bytes = new Uint8Array([0, 1, 2, 3, 4, 5]);
    server.enqueue(
      { body: new DataView(bytes.buffer, 2, 3) },
      { body: bytes.buffer },
      { body: null },
      { headers: { 'x-count': 5, 'set-cookie': ['a=1', 'b=2'] } },
      { status: 204 },
    );
    const view = await request(server.url);
    expect(view.headers['content-type']).toBe('application/octet-stream');
    expect([...new Uint8Array(await view.body.arrayBuffer())]).toEqual([2, 3, 4]);
    const whole = await request(server.url);
    expect([...new Uint8Array(await whole.body.arrayBuffer())]).toEqual([0, 1, 2, 3, 4, 5]);
    expect(JSON.parse((await call(server.url)).text)).toEqual({ ok: true, path: '/', method: 'GET' });
    const listed = await call(server.url);
    expect(listed.headers['x-count']).toBe('5');
    expect(listed.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    // A 204 carries no content-length (RFC 9110 forbids it).
    const empty = await call(server.url);
    expect(empty.status).toBe(204);
    expect(empty.headers['content-length']).toBeUndefined();
  });

  it('serves a route naming a query before one naming only its path, and passes by an emptied route', async () => {
    const server = await start();
    server.route('GET', '/a', { status: 201 }).route('GET', '/a?x=1', { status: 418 });
    // The /a route matched first and shadowed /a?x=1, whose 418 was never sent.
    expect((await call(`${server.url}/a?x=1`)).status).toBe(418);
    expect((await call(`${server.url}/a?x=1`)).status).toBe(201);
    expect((await call(`${server.url}/a?x=1`)).status).toBe(200);
    expect(server.pending).toBe(0);
  });

  it('sends a problem with the defaults its undefined members leave, a SharedArrayBuffer as bytes, a 205 with nothing', async () => {
    const server = await start();
    const shared = new SharedArrayBuffer(3);
    new Uint8Array(shared).set([7, 8, 9]);
    server.enqueue(
      { status: 503, problem: { title: undefined, detail: 'd' } },
      { body: shared },
      { status: 205 },
    );
    const problem = await call(server.url);
    expect(JSON.parse(problem.text)).toEqual({
      type: 'about:blank',
      title: 'Service Unavailable',
      detail: 'd',
      status: 503,
    });
    const bytes = await request(server.url);
    expect(bytes.headers['content-type']).toBe('application/octet-stream');
    expect([...new Uint8Array(await bytes.body.arrayBuffer())]).toEqual([7, 8, 9]);
    const reset = await call(server.url);
    expect(reset).toMatchObject({ status: 205, text: '' });
    expect(reset.headers['content-length']).toBe('0');
  });

  it('reads each member of a fault once (a getter read again after the checks sent a status Node refuses, killing the process), and refuses a detached buffer', async () => {
    const server = await start();
    let reads = 0;
    const fault = {
      get status() {
        reads++;
        return reads === 1 ? 503 : 99;
      },
    };
    server.enqueue(fault);
    expect((await call(server.url)).status).toBe(503);
    const view = new Uint8Array(4);
    const gone = view.buffer;
    structuredClone(gone, { transfer: [gone] });
    for (const body of [gone, view]) {
      expect(() => server.enqueue({ body })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    }
  });
});
