import { createServer } from 'node:http';
import { connect } from 'node:net';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import type { ConstraintStrategy, HTTPVersion } from 'find-my-way';
import { afterEach, describe, expect, it } from 'vitest';
import { ferryClientErrors, ferryContext, ferryErrors, ferryNotFound } from './express.js';
import { ferryFastify, ferryFastifyOptions } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import { type RawAnswer, sendRaw } from './fixtures/raw-http.js';
import type { ProblemLogger } from './problem.js';

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

class RecordingLogger implements ProblemLogger {
  readonly entries: string[] = [];
  error(message: string): void {
    this.entries.push(message);
  }
}

/** An async route constraint whose strategy fails: Fastify reports it through `frameworkErrors`. */
const failingConstraint = {
  name: 'tenant',
  mustMatchWhenDerived: true,
  storage() {
    const handlers = new Map<string, unknown>();
    return {
      get: (value: string) => (handlers.get(value) ?? null) as never,
      set: (value: string, handler: unknown) => {
        handlers.set(value, handler);
      },
    };
  },
  deriveConstraint(_req: unknown, _ctx: unknown, done: (error: Error | null, value?: string) => void) {
    done(new Error('tenant lookup failed'));
  },
  validate() {},
};

interface Harness {
  readonly name: 'fastify' | 'express';
  start(logger: ProblemLogger): Promise<string>;
}

const harnesses: Harness[] = [
  {
    name: 'fastify',
    async start(logger) {
      const options = { logger };
      const app: FastifyInstance = Fastify({ ...ferryFastifyOptions(options), bodyLimit: 1024 });
      ferryFastify(app, options);
      app.get('/orders/:id', async (request) => request.params);
      app.get('/static', async () => ({ ok: true }));
      app.post('/orders', async (request) => request.body);
      return listenFastify(app, closers);
    },
  },
  {
    name: 'express',
    async start(logger) {
      const app = express();
      app.use(ferryContext());
      // Something that sets the request's encoding before the body parser: a server-side mistake.
      app.use('/encoded', (req, _res, next) => {
        req.setEncoding('utf8');
        next();
      });
      app.use(express.json({ limit: 1024 }));
      app.get('/orders/:id', (req, res) => {
        res.json(req.params);
      });
      app.post(['/orders', '/encoded'], (req, res) => {
        res.json(req.body);
      });
      app.use(ferryNotFound());
      app.use(ferryErrors({ logger }));
      const server = createServer(app);
      ferryClientErrors(server);
      return listenNode(server, closers);
    },
  },
];

function post(path: string, headers: Record<string, string | number>, body = ''): string {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `POST ${path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n${lines.join('')}\r\n${body}`;
}

const get = (path: string, extra = '') =>
  `GET ${path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n${extra}\r\n`;

function expectProblem(answer: RawAnswer, status: number): Record<string, unknown> {
  expect(answer.status).toBe(status);
  expect(answer.headers['content-type']).toBe('application/problem+json');
  const body = JSON.parse(answer.body) as Record<string, unknown>;
  expect(body).toMatchObject({ type: 'about:blank', status });
  return body;
}

describe.each(harnesses)('framework errors from $name, on a raw connection', (harness) => {
  let url: string;
  let logger: RecordingLogger;

  async function start(): Promise<void> {
    logger = new RecordingLogger();
    url = await harness.start(logger);
  }

  it('answers a path parameter that is not valid percent-encoding with 400', async () => {
    await start();
    const answer = await sendRaw(url, get('/orders/%E0%A4%A', 'x-correlation-id: bad-url\r\n'));
    const body = expectProblem(answer, 400);
    expect(body).toMatchObject({
      title: 'Bad Request',
      detail: 'The request path is not valid percent-encoding.',
      correlationId: 'bad-url',
    });
    expect(answer.headers['x-correlation-id']).toBe('bad-url');
    // The path still works when it is valid.
    expect((await sendRaw(url, get('/orders/%E2%82%AC'))).status).toBe(200);
    expect(logger.entries).toEqual([]);
  });

  it('answers a path that is not valid percent-encoding with 400 where no route matches it (Express said 404)', async () => {
    await start();
    for (const path of ['/orders%ZZ', '/%c0', '/nowhere/%E0%A4%A', '/x%']) {
      const body = expectProblem(await sendRaw(url, get(path)), 400);
      expect(body, path).toMatchObject({ detail: 'The request path is not valid percent-encoding.' });
    }
    // An unknown path that decodes is still 404, escapes and all.
    for (const path of ['/nowhere', '/nowhere/%E2%82%AC', '/%25']) {
      expectProblem(await sendRaw(url, get(path)), 404);
    }
    expect(logger.entries).toEqual([]);
  });

  it('answers headers larger than the server accepts with 431', async () => {
    await start();
    const answer = await sendRaw(url, get('/orders/1', `x-big: ${'a'.repeat(20_000)}\r\n`));
    expectProblem(answer, 431);
  });

  it('answers a request that is not HTTP with 400', async () => {
    await start();
    expectProblem(await sendRaw(url, 'HELLO THERE\r\n\r\n'), 400);
    expectProblem(await sendRaw(url, post('/orders', { 'content-length': 'abc' })), 400);
  });

  it('answers an HTTP/1.1 request without Host with 400, and serves HTTP/1.0 without it', async () => {
    await start();
    const answer = await sendRaw(url, 'GET /orders/1 HTTP/1.1\r\nconnection: close\r\n\r\n');
    expect(expectProblem(answer, 400)).toMatchObject({
      title: 'Bad Request',
      detail: 'An HTTP/1.1 request must have a Host header.',
    });
    expect(answer.headers.connection).toBe('close');
    expect((await sendRaw(url, 'GET /orders/1 HTTP/1.0\r\n\r\n')).status).toBe(200);
    expect((await sendRaw(url, get('/orders/1'))).status).toBe(200);
  });

  it('answers an Expect header other than 100-continue with 417, and 100-continue as usual', async () => {
    await start();
    const answer = await sendRaw(
      url,
      post('/orders', { 'content-type': 'application/json', 'content-length': 2, expect: 'weird' }, '{}'),
    );
    expect(expectProblem(answer, 417)).toMatchObject({ title: 'Expectation Failed' });
    expect(answer.headers.connection).toBe('close');
    expect((await sendRaw(url, get('/orders/1'))).status).toBe(200);
  });

  it('answers CONNECT with 400, in either form of its target, and closes the connection', async () => {
    // Node hands CONNECT to `connect` listeners only: with none, the connection was closed unanswered.
    await start();
    const { host } = new URL(url);
    for (const target of [host, '/orders']) {
      const answer = await sendRaw(url, `CONNECT ${target} HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
      expect(expectProblem(answer, 400)).toMatchObject({
        detail: 'This server is no proxy: CONNECT is not served.',
      });
      expect(answer.headers.connection).toBe('close');
    }
    expect((await sendRaw(url, get('/orders/1'))).status).toBe(200);
  });

  it('answers the requests pipelined before a CONNECT first, in order, then the CONNECT with 400', async () => {
    // Before, the 400 went out at once, ahead of the answer to the POST sent before it: a client
    // took it for the POST's answer ("refused, nothing done"), though the POST had run.
    await start();
    const { hostname, port } = new URL(url);
    const received = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname);
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        text += chunk;
      });
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      // The POST keeps the connection open; the CONNECT follows it on the same one.
      const first = post('/orders', { 'content-type': 'application/json', 'content-length': 9 }, '{"sku":1}');
      socket.write(
        `${first.replace('connection: close\r\n', '')}CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n`,
      );
    });
    const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '400']);
    expect(received).toContain('{"sku":1}');
    expect(received.indexOf('{"sku":1}')).toBeLessThan(received.indexOf('HTTP/1.1 400'));
  });

  it('answers a body cut short by the client with 400', async () => {
    await start();
    const answer = await sendRaw(
      url,
      post('/orders', { 'content-type': 'application/json', 'content-length': 100 }, '{"sku":'),
      { halfClose: true },
    );
    expectProblem(answer, 400);
  });

  it('answers malformed JSON with 400', async () => {
    await start();
    const body = '{"sku":';
    const answer = await sendRaw(
      url,
      post('/orders', { 'content-type': 'application/json', 'content-length': body.length }, body),
    );
    expect(expectProblem(answer, 400)).toMatchObject({ detail: 'The request body is not valid JSON.' });
  });

  it('answers a body over the limit with 413', async () => {
    await start();
    const body = JSON.stringify({ sku: 'x'.repeat(5000) });
    const answer = await sendRaw(
      url,
      post('/orders', { 'content-type': 'application/json', 'content-length': body.length }, body),
    );
    expectProblem(answer, 413);
  });

  it("answers a body that is not what its Content-Encoding says with 400 saying so, not with zlib's words", async () => {
    await start();
    const body = 'not gzip at all';
    const answer = await sendRaw(
      url,
      post(
        '/orders',
        { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length },
        body,
      ),
    );
    const problem = expectProblem(answer, 400);
    expect(JSON.stringify(problem)).not.toMatch(/header check/);
    if (harness.name === 'express') {
      expect(problem).toMatchObject({
        detail: 'The request body cannot be decoded as its Content-Encoding says.',
      });
      // body-parser decodes brotli too: its failure has codes of another kind ("Decompression failed").
      for (const encoding of ['br', 'deflate']) {
        const plain = '{"a":1}';
        const other = await sendRaw(
          url,
          post(
            '/orders',
            {
              'content-type': 'application/json',
              'content-encoding': encoding,
              'content-length': plain.length,
            },
            plain,
          ),
        );
        expect(expectProblem(other, 400)).toMatchObject({
          detail: 'The request body cannot be decoded as its Content-Encoding says.',
        });
      }
    }
  });

  it('answers a body it cannot read with 415', async () => {
    await start();
    const answer =
      harness.name === 'fastify'
        ? await sendRaw(url, post('/orders', { 'content-type': 'text/xml', 'content-length': 2 }, '<a'))
        : await sendRaw(
            url,
            post(
              '/orders',
              { 'content-type': 'application/json', 'content-encoding': 'br2', 'content-length': 2 },
              '{}',
            ),
          );
    expectProblem(answer, 415);
    const charset = await sendRaw(
      url,
      post('/orders', { 'content-type': 'application/json; charset=klingon', 'content-length': 2 }, '{}'),
    );
    // Fastify reads JSON as UTF-8 whatever the charset says; body-parser refuses what it cannot decode.
    if (harness.name === 'express') expectProblem(charset, 415);
    else expect(charset.status).toBe(200);
  });
});

describe('ferryClientErrors and CONNECT', () => {
  it('leaves CONNECT to a server that tunnels (a connect listener of its own)', async () => {
    const server = createServer((_request, response) => response.end('{}'));
    ferryClientErrors(server);
    server.on('connect', (_request, socket) => {
      socket.end('HTTP/1.1 200 Connection Established\r\n\r\n');
    });
    const url = await listenNode(server, closers);
    const answer = await sendRaw(url, 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n');
    expect(answer.status).toBe(200);
  });
});

describe('fastify framework errors', () => {
  let logger: RecordingLogger;
  let url: string;

  async function start(): Promise<void> {
    logger = new RecordingLogger();
    url = await harnesses[0]!.start(logger);
  }

  it('answers bad percent-encoding outside a parameter and a parameter too long', async () => {
    await start();
    expectProblem(await sendRaw(url, get('/static%E0%A4%A')), 400);
    const long = expectProblem(await sendRaw(url, get(`/orders/${'a'.repeat(200)}`)), 414);
    expect(long).toMatchObject({ title: 'URI Too Long' });
    expect(long.detail).toBe('A segment of the request path is longer than this server accepts.');
  });

  it('answers a failing async route constraint with 500', async () => {
    const app = Fastify({
      ...ferryFastifyOptions(),
      constraints: { tenant: failingConstraint as unknown as ConstraintStrategy<HTTPVersion.V1> },
    });
    ferryFastify(app, { logger: new RecordingLogger() });
    app.get('/tenants', { constraints: { tenant: 'a' } }, async () => ({ ok: true }));
    const base = await listenFastify(app, closers);
    expectProblem(await sendRaw(base, get('/tenants')), 500);
  });

  it('answers a path served under other methods with 405 and Allow, an unknown one with 404', async () => {
    const app = Fastify({ ...ferryFastifyOptions(), ignoreTrailingSlash: true });
    ferryFastify(app, { logger: new RecordingLogger() });
    app.post('/orders', async () => ({ ok: true }));
    app.get('/orders/:id', async () => ({ ok: true }));
    app.delete('/orders/:id', async () => ({ ok: true }));
    await app.register(
      async (child) => {
        child.put('/faults', async () => ({ ok: true }));
      },
      { prefix: '/admin' },
    );
    const base = await listenFastify(app, closers);
    const refused = await fetch(`${base}/orders?page=2`);
    expect(refused.status).toBe(405);
    expect(refused.headers.get('allow')).toBe('POST');
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await refused.json()).toMatchObject({
      status: 405,
      title: 'Method Not Allowed',
      detail: 'This resource answers POST.',
      instance: '/orders',
    });
    const patch = await fetch(`${base}/orders/7/`, { method: 'PATCH' });
    expect([patch.status, patch.headers.get('allow')]).toEqual([405, 'DELETE, GET, HEAD']);
    const prefixed = await fetch(`${base}/admin/faults`);
    expect([prefixed.status, prefixed.headers.get('allow')]).toEqual([405, 'PUT']);
    // HEAD of a GET route is served; paths nothing serves stay 404 under any method.
    expect((await fetch(`${base}/orders/7`, { method: 'HEAD' })).status).toBe(200);
    for (const [method, path] of [
      ['GET', '/nowhere'],
      ['DELETE', '/orders/7/cancel'],
      ['GET', '/admin'],
    ] as const) {
      const answer = await fetch(`${base}${path}`, { method });
      expect([answer.status, answer.headers.get('allow')], `${method} ${path}`).toEqual([404, null]);
    }
  });

  it('answers an empty JSON body with 400', async () => {
    await start();
    const answer = await sendRaw(
      url,
      post('/orders', { 'content-type': 'application/json', 'content-length': 0 }),
    );
    expectProblem(answer, 400);
  });

  it('answers a request arriving while the instance closes with 503', async () => {
    const app = Fastify({ ...ferryFastifyOptions() });
    ferryFastify(app, { logger: new RecordingLogger() });
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered = () => {};
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    app.get('/hold', async () => {
      entered();
      await held;
      return { ok: true };
    });
    app.get('/after', async () => ({ ok: true }));
    const base = await listenFastify(app, closers);
    // A keep-alive connection busy with /hold when close starts; /after arrives on it meanwhile.
    const { hostname, port } = new URL(base);
    const { connect } = await import('node:net');
    const socket = connect(Number(port), hostname);
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
    });
    socket.on('error', () => {});
    socket.write('GET /hold HTTP/1.1\r\nhost: test\r\n\r\n');
    await inside;
    const closed = app.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.write('GET /after HTTP/1.1\r\nhost: test\r\n\r\n');
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    await closed;
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.destroy();
    const responses = received.split(/(?=HTTP\/1\.1 )/);
    expect(responses[0]).toMatch(/^HTTP\/1\.1 200/);
    expect(responses[1]).toMatch(/^HTTP\/1\.1 503/);
    expect(responses[1]).toMatch(/content-type: application\/problem\+json/i);
    expect(responses[1]).toMatch(/connection: close/i);
  });

  it('answers what Node refuses as problems even without the server options', async () => {
    const app = Fastify();
    ferryFastify(app, { logger: new RecordingLogger() });
    const base = await listenFastify(app, closers);
    expectProblem(await sendRaw(base, get('/', `x-big: ${'a'.repeat(20_000)}\r\n`)), 431);
    expectProblem(await sendRaw(base, 'HELLO THERE\r\n\r\n'), 400);
  });
});

describe('express framework errors', () => {
  it('answers a body-parser error of the server itself with a 500 problem, and logs it', async () => {
    const logger = new RecordingLogger();
    const url = await harnesses[1]!.start(logger);
    const answer = await sendRaw(
      url,
      post('/encoded', { 'content-type': 'application/json', 'content-length': 2 }, '{}'),
    );
    expect(expectProblem(answer, 500)).toMatchObject({ title: 'Internal Server Error' });
    expect(logger.entries).toEqual(['unexpected error while serving a request']);
  });

  it('maps every body-parser error type to a problem', async () => {
    const logger = new RecordingLogger();
    const app = express();
    app.use(ferryContext());
    const types: Record<string, number> = {
      'entity.parse.failed': 400,
      'entity.too.large': 413,
      'encoding.unsupported': 415,
      'charset.unsupported': 415,
      'request.aborted': 400,
      'request.size.invalid': 400,
      'stream.encoding.set': 500,
      'stream.not.readable': 500,
      'parameters.too.many': 413,
    };
    // What body-parser passes on (http-errors: `status`, `expose` below 500, `type`).
    app.post('/:type', (req, _res, next) => {
      const type = String(req.params.type);
      const status = types[type] ?? 500;
      next(
        Object.assign(new Error(`body-parser: ${type}`), {
          type,
          status,
          statusCode: status,
          expose: status < 500,
        }),
      );
    });
    app.use(ferryErrors({ logger }));
    const server = createServer(app);
    ferryClientErrors(server);
    const url = await listenNode(server, closers);
    for (const [type, status] of Object.entries(types)) {
      const answer = await sendRaw(url, post(`/${type}`, { 'content-length': 0 }));
      expect(answer.status, type).toBe(status);
      expect(answer.headers['content-type'], type).toBe('application/problem+json');
    }
  });

  it('installs its client error answers once however often it is called', async () => {
    const server = createServer((_req, res) => res.end());
    ferryClientErrors(server);
    ferryClientErrors(server);
    expect(server.listeners('clientError')).toHaveLength(1);
    const url = await listenNode(server, closers);
    expectProblem(await sendRaw(url, 'HELLO THERE\r\n\r\n'), 400);
  });
});
