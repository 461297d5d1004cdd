import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { currentContext } from '../../context/context.js';
import { FerryError } from '../../errors/ferry-error.js';
import { StoreUnavailableError } from '../../eventstore/errors.js';
import { BrokerConnectionError, PublishBufferFullError } from '../../messaging/errors.js';
import {
  BulkheadFullError,
  CircuitOpenError,
  RetryBudgetExhaustedError,
  TimeoutError,
} from '../../resilience/errors.js';
import { ConnectionError, HttpError, InvalidResponseBodyError } from '../errors.js';
import { ferryContext, ferryErrors, ferryNotFound } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import {
  HttpProblemError,
  isHttpProblemError,
  isRequestValidationError,
  type Problem,
  type ProblemLogger,
  problem,
  problemFromError,
  RequestValidationError,
  validateRequest,
} from './problem.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

class RecordingLogger implements ProblemLogger {
  readonly entries: { message: string; fields: Record<string, unknown> | undefined }[] = [];
  error(message: string, fields?: Record<string, unknown>): void {
    this.entries.push({ message, fields });
  }
}

/** What a library calling another service might throw: its status is not ours to echo. */
const upstreamError = () =>
  Object.assign(new Error('GET /inventory answered 404'), { status: 404, statusCode: 404 });
/** An http-errors style error, meant for the client. */
const exposedError = () =>
  Object.assign(new Error('This order is gone for good'), { status: 410, statusCode: 410, expose: true });

const OrderInput = z.object({ sku: z.string().min(1), quantity: z.number().int().positive() });
const SECRET = 'db password is hunter2';

/** Routes that throw, by path, the same on both frameworks. */
/** Mapped by the harnesses' mapError, each in a way that cannot be sent. */
class MapMe extends Error {
  constructor(readonly how: 'throws' | 'status' | 'bigint' | 'tojson' | 'string' | 'untitled') {
    super(`map me: ${how}, ${SECRET}`);
  }
}
function mapError(error: unknown): Problem | undefined {
  if (!(error instanceof MapMe)) return undefined;
  if (error.how === 'throws') throw new Error(`mapError failed: ${SECRET}`);
  if (error.how === 'status') return { ...problem(404), status: 1000 };
  // JSON would write something else than the problem: its own body, a bare string, no title.
  if (error.how === 'tojson')
    return { ...problem(409), toJSON: () => ({ status: 200, leaked: SECRET }) } as Problem;
  if (error.how === 'string') return SECRET as unknown as Problem;
  if (error.how === 'untitled') return { ...problem(409), title: null } as unknown as Problem;
  return problem(409, undefined, { id: 42n });
}

const THROWN: Record<string, () => Error> = {
  '/conflict': () =>
    new HttpProblemError(409, 'Order already shipped', {
      detail: 'order 42 shipped yesterday',
      extensions: { orderId: 42 },
      headers: { 'retry-after': '5' },
    }),
  '/crash': () => new Error(SECRET),
  // Errors the harness's mapError maps badly: it throws, gives a status HTTP has no room for, a BigInt.
  '/map-throws': () => new MapMe('throws'),
  '/map-status': () => new MapMe('status'),
  '/map-bigint': () => new MapMe('bigint'),
  '/map-tojson': () => new MapMe('tojson'),
  '/map-string': () => new MapMe('string'),
  '/map-untitled': () => new MapMe('untitled'),
  '/bigint-extension': () => new HttpProblemError(409, 'Order exists', { extensions: { id: 42n } }),
  // A handler building a header from request data: the problem cannot be sent as written.
  '/bad-header': () => new HttpProblemError(409, 'Order exists', { headers: { location: '/orders/a\nb' } }),
  // An error whose members throw when read (a driver's lazy getters, a Proxy).
  '/hostile': () =>
    Object.defineProperties(new Error('hostile'), {
      code: {
        get() {
          throw new Error('code read');
        },
      },
      validation: {
        get() {
          throw new Error('validation read');
        },
      },
    }),
  // Every member throws when read: Express's error handler threw on it, and Express answered an HTML
  // page with the stack.
  '/hostile-proxy': () =>
    new Proxy(new Error(SECRET), {
      get() {
        throw new Error(`member read: ${SECRET}`);
      },
    }),
  '/crash-ferry': () => new FerryError('SOMETHING_INTERNAL', SECRET),
  '/upstream': upstreamError,
  '/exposed': exposedError,
  // What a ServiceClient call (or any resilience policy) inside a handler rejects with.
  '/dep-timeout': () => new TimeoutError(2000, `POST http://10.0.0.7:3002/charges (${SECRET})`),
  '/dep-open': () => new CircuitOpenError('payments', Date.now() + 4500),
  '/dep-full': () => new BulkheadFullError(10, 0),
  '/dep-503': () => upstreamHttpError(503, 2000),
  '/dep-404': () => upstreamHttpError(404),
  // The handler's own answer that the service is unavailable: the caller may well retry that one.
  '/own-503': () => new HttpProblemError(503, undefined, { headers: { 'retry-after': '3' } }),
};

function upstreamHttpError(status: number, retryAfterMs?: number): Error {
  return new HttpError({
    status,
    method: 'GET',
    url: 'http://10.0.0.7:3001/users/7',
    headers: {},
    body: SECRET,
    retryAfterMs,
  });
}

/** The same routes on both frameworks, so that both must map every error the same way. */
interface Harness {
  readonly name: string;
  start(logger: ProblemLogger): Promise<string>;
}

const harnesses: Harness[] = [
  {
    name: 'fastify',
    async start(logger) {
      const app: FastifyInstance = Fastify({ bodyLimit: 1024 });
      ferryFastify(app, { logger, mapError });
      app.post('/orders', async (req) => validateRequest(OrderInput, req.body, 'body'));
      app.post(
        '/schema',
        {
          schema: {
            body: {
              type: 'object',
              required: ['sku'],
              properties: { sku: { type: 'string' }, quantity: { type: 'integer', minimum: 1 } },
            },
          },
        },
        async () => ({ ok: true }),
      );
      for (const [path, error] of Object.entries(THROWN)) {
        app.get(path, async () => {
          throw error();
        });
      }
      app.get('/slow', async (req) => {
        await new Promise((_, reject) =>
          req.ferry.signal.addEventListener('abort', () => reject(req.ferry.signal.reason)),
        );
      });
      return listenFastify(app, closers);
    },
  },
  {
    name: 'express',
    async start(logger) {
      const app = express();
      app.use(ferryContext());
      app.use(express.json({ limit: 1024 }));
      app.post('/orders', async (req, res) => {
        res.json(await validateRequest(OrderInput, req.body, 'body'));
      });
      app.post('/schema', async (req, res) => {
        res.json(
          await validateRequest(
            z.object({ sku: z.string(), quantity: z.number().int().min(1).optional() }),
            req.body ?? {},
            'body',
          ),
        );
      });
      for (const [path, error] of Object.entries(THROWN)) {
        // One synchronous throw, the others rejected promises: Express 5 must render both.
        app.get(
          path,
          path === '/conflict'
            ? () => {
                throw error();
              }
            : async () => {
                throw error();
              },
        );
      }
      app.get('/slow', async () => {
        const signal = currentContext()?.signal;
        await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)));
      });
      app.use(ferryNotFound());
      app.use(ferryErrors({ logger, mapError }));
      const server = createServer(app);
      return listenNode(server, closers);
    },
  },
];

async function call(url: string, init: Parameters<typeof request>[1] = {}) {
  const response = await request(url, init);
  const text = await response.body.text();
  return { status: response.statusCode, headers: response.headers, text, body: JSON.parse(text || 'null') };
}

describe('problem documents', () => {
  it('builds about:blank problems with the status phrase and extension members', () => {
    expect(problem(404)).toEqual({ type: 'about:blank', title: 'Not Found', status: 404 });
    expect(
      problem(409, 'Conflict!', { detail: 'd', instance: '/x', orderId: 1, status: 999, title: 'no' }),
    ).toEqual({
      type: 'about:blank',
      title: 'Conflict!',
      status: 409,
      detail: 'd',
      instance: '/x',
      orderId: 1,
    });
  });

  it('HttpProblemError carries its problem and refuses non-error statuses', () => {
    const error = new HttpProblemError(422, undefined, { type: 'urn:x', extensions: { field: 'a' } });
    expect(isHttpProblemError(error)).toBe(true);
    expect(error.code).toBe('HTTP_PROBLEM');
    expect(error.toProblem({ instance: '/a' })).toEqual({
      type: 'urn:x',
      title: 'Unprocessable Entity',
      status: 422,
      instance: '/a',
      field: 'a',
    });
    expect(() => new HttpProblemError(200)).toThrow(/400 to 599/);
  });

  it('HttpProblemError refuses headers HTTP does not allow, naming the header, not its value', () => {
    const bad: Record<string, unknown>[] = [
      { location: '/orders/a\nb' },
      { location: 'a\r\nset-cookie: x=1' },
      { 'bad name': 'x' },
      { '': 'x' },
      { 'retry-after': 5 },
      { trailer: 'x-checksum' },
      { 'Transfer-Encoding': 'chunked' },
    ];
    for (const headers of bad) {
      const made = (() => {
        try {
          return new HttpProblemError(409, undefined, { headers: headers as Record<string, string> });
        } catch (error) {
          return error;
        }
      })();
      expect(made, JSON.stringify(headers)).toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(String(made)).not.toContain('/orders');
    }
    expect(() => new HttpProblemError(409, undefined, { headers: 'x' as never })).toThrow(/object/);
    expect(new HttpProblemError(503, undefined, { headers: { 'retry-after': '5' } }).headers).toEqual({
      'retry-after': '5',
    });
  });

  it('HttpProblemError keeps the headers it checked, whatever becomes of the object it was given', () => {
    const headers: Record<string, string> = { 'retry-after': '5' };
    let reads = 0;
    Object.defineProperty(headers, 'x-read', {
      enumerable: true,
      get: () => (++reads === 1 ? 'fine' : 'a\r\nset-cookie: x=1'),
    });
    const error = new HttpProblemError(503, undefined, { headers });
    headers.trailer = 'x-checksum';
    headers.location = '/orders/a\nb';
    expect(error.headers).toEqual({ 'retry-after': '5', 'x-read': 'fine' });
    expect(error.headers['x-read']).toBe('fine');
    expect(Object.isFrozen(error.headers)).toBe(true);
  });

  it('logs the cause of a 5xx HttpProblemError that mapError maps to, as of one thrown', () => {
    const logger = new RecordingLogger();
    const req = { method: 'GET', path: '/p', context: { correlationId: 'c1' } };
    const mapped = problemFromError(new Error('orders table locked'), req, {
      logger,
      mapError: (e) => new HttpProblemError(503, undefined, { cause: e, headers: { 'retry-after': '2' } }),
    });
    expect(mapped).toMatchObject({ status: 503, headers: { 'retry-after': '2' } });
    expect(logger.entries).toHaveLength(1);
    expect(String(logger.entries[0]?.fields?.error)).toContain('orders table locked');
  });

  it('maps errors without a framework, and lets mapError handle domain errors', () => {
    const logger = new RecordingLogger();
    const req = { method: 'GET', path: '/p', context: { correlationId: 'c1' } };
    expect(problemFromError(new Error('x'), req, { logger }).problem).toEqual({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      instance: '/p',
      correlationId: 'c1',
    });
    expect(logger.entries[0]?.fields).toMatchObject({ correlationId: 'c1', error: 'Error: x' });
    class Missing extends Error {}
    const mapped = problemFromError(new Missing(), req, {
      logger,
      mapError: (e) => (e instanceof Missing ? problem(404, 'Order not found') : undefined),
    });
    expect(mapped.status).toBe(404);
    expect(mapped.problem).toMatchObject({ title: 'Order not found', instance: '/p', correlationId: 'c1' });
    expect(logger.entries).toHaveLength(1);
  });

  it('answers 507 STORAGE_FULL for a write that failed for want of room, as the error or a cause of it, and logs it', () => {
    const req = { method: 'POST', path: '/orders', context: { correlationId: 'c9' } };
    const sqliteFull = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    const pgFull = Object.assign(new Error('could not extend file'), { code: '53100' });
    const noSpace = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    for (const error of [sqliteFull, noSpace, new Error('append failed', { cause: pgFull })]) {
      const logger = new RecordingLogger();
      const answer = problemFromError(error, req, { logger });
      expect(answer.status).toBe(507);
      expect(answer.problem).toEqual({
        type: 'about:blank',
        title: 'Insufficient Storage',
        status: 507,
        detail: 'The server has no room left to store what this request needs; try again later.',
        code: 'STORAGE_FULL',
        instance: '/orders',
        correlationId: 'c9',
      });
      expect(logger.entries.map((e) => e.message)).toEqual(['storage full while serving a request']);
      expect(String(logger.entries[0]?.fields?.error)).toMatch(/full|ENOSPC|append failed/);
    }
    // Other codes, and causes past a few levels, are not taken for it.
    const busy = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    expect(problemFromError(busy, req, { logger: new RecordingLogger() }).status).toBe(500);
    let deep: Error = sqliteFull;
    for (let i = 0; i < 5; i++) deep = new Error('wrapped', { cause: deep });
    expect(problemFromError(deep, req, { logger: new RecordingLogger() }).status).toBe(500);
  });

  it('logs the cause of a 5xx HttpProblemError, and nothing for one without a cause or a 4xx', () => {
    const logger = new RecordingLogger();
    const req = { method: 'POST', path: '/orders', context: { correlationId: 'c2' } };
    const cause = new Error('connect ECONNREFUSED 10.0.0.7:4100');
    const answer = problemFromError(
      new HttpProblemError(503, 'Dependency unavailable', { detail: 'users cannot be reached', cause }),
      req,
      { logger },
    );
    expect(answer.problem).toEqual({
      type: 'about:blank',
      title: 'Dependency unavailable',
      status: 503,
      detail: 'users cannot be reached',
      instance: '/orders',
      correlationId: 'c2',
    });
    expect(logger.entries).toEqual([
      {
        message: '503 Dependency unavailable while serving a request',
        fields: {
          correlationId: 'c2',
          method: 'POST',
          path: '/orders',
          error: 'Error: connect ECONNREFUSED 10.0.0.7:4100',
        },
      },
    ]);
    problemFromError(new HttpProblemError(503), req, { logger });
    problemFromError(new HttpProblemError(422, undefined, { cause }), req, { logger });
    expect(logger.entries).toHaveLength(1);
  });

  it('answers 500 and logs whatever was thrown, even a value that cannot be described plainly', () => {
    const logger = new RecordingLogger();
    const req = { method: 'GET', path: '/p', context: { correlationId: 'c1' } };
    const hostile = Object.defineProperty(new Error('hidden'), 'message', {
      get: () => {
        throw new Error('no message');
      },
    });
    expect(problemFromError(hostile, req, { logger }).status).toBe(500);
    expect(problemFromError(Object.create(null), req, { logger }).status).toBe(500);
    expect(logger.entries.map((entry) => typeof entry.fields?.error)).toEqual(['string', 'string']);
  });

  it('tells callers not to retry every answer to a failed dependency call, and no other answer', () => {
    const logger = new RecordingLogger();
    const req = { method: 'GET', path: '/p', context: { correlationId: 'c1' } };
    const dependencyFailures: [Error, number][] = [
      [new TimeoutError(2000, 'GET /x'), 504],
      [new CircuitOpenError('payments', Date.now() + 4500), 503],
      [new CircuitOpenError('payments'), 503],
      [new BulkheadFullError(10, 0), 503],
      [new RetryBudgetExhaustedError(3, new Error('503')), 503],
      [upstreamHttpError(503, 2000), 503],
      [upstreamHttpError(503), 503],
      [upstreamHttpError(504), 504],
      [upstreamHttpError(404), 502],
      [upstreamHttpError(500), 502],
      [new InvalidResponseBodyError('GET /x', 200, '<html>'), 502],
      [new FerryError('RESPONSE_TOO_LARGE', 'over 1 MiB'), 502],
      [new ConnectionError('GET /x', new Error('connect ECONNREFUSED'), 'ECONNREFUSED'), 502],
      // This service's own database or broker, down or behind.
      [new StoreUnavailableError('postgres', 'the database connection failed on each of 3 attempts'), 503],
      [new BrokerConnectionError('the broker could not be reached within 30 s'), 503],
      [new PublishBufferFullError(10_000), 503],
    ];
    for (const [error, status] of dependencyFailures) {
      const answer = problemFromError(error, req, { logger });
      expect(answer.status, error.message).toBe(status);
      expect(answer.headers['x-ferry-no-retry'], error.message).toBe('1');
    }
    // Retry-After stays where it was.
    expect(problemFromError(upstreamHttpError(503, 2000), req, { logger }).headers['retry-after']).toBe('2');
    expect(
      problemFromError(new CircuitOpenError('p'), req, { logger }).headers['retry-after'],
    ).toBeUndefined();

    const others: Error[] = [
      new HttpProblemError(503, undefined, { headers: { 'retry-after': '5' } }),
      new HttpProblemError(504),
      new RequestValidationError([{ path: 'a', message: 'required' }]),
      new Error('crash'),
      new FerryError('SOMETHING_INTERNAL', 'x'),
      // A refusal that waiting cannot fix, and a commit whose outcome is unknown (it may have been
      // kept: "try again later" would mislead).
      new BrokerConnectionError('ACCESS_REFUSED', {}, 'BROKER_ACCESS_REFUSED'),
      new FerryError('UNIT_OF_WORK_OUTCOME_UNKNOWN', 'the connection was lost during COMMIT'),
      new StoreUnavailableError('postgres', 'the connection failed while a unit of work committed', {
        outcomeUnknown: true,
      }),
    ];
    for (const error of others) {
      expect(
        problemFromError(error, req, { logger }).headers['x-ferry-no-retry'],
        error.message,
      ).toBeUndefined();
    }
    for (const error of others.slice(-4)) {
      expect(problemFromError(error, req, { logger }).status, error.message).toBe(500);
    }
    const late = { ...req, context: { correlationId: 'c1', deadline: Date.now() - 1 } };
    const ownDeadline = problemFromError(new Error('aborted'), late, { logger });
    expect(ownDeadline.status).toBe(504);
    expect(ownDeadline.headers['x-ferry-no-retry']).toBeUndefined();
  });

  it('validateRequest returns the output or throws RequestValidationError with paths', async () => {
    await expect(validateRequest(OrderInput, { sku: 'a', quantity: 2 })).resolves.toEqual({
      sku: 'a',
      quantity: 2,
    });
    const error = await validateRequest(OrderInput, { quantity: 0 }, 'body').catch((e: unknown) => e);
    expect(isRequestValidationError(error)).toBe(true);
    expect((error as { issues: unknown[] }).issues.map((i) => (i as { path: string }).path)).toEqual([
      'body.sku',
      'body.quantity',
    ]);
  });
});

describe.each(harnesses)('problems from $name', (harness) => {
  let logger: RecordingLogger;
  let url: string;

  async function start(): Promise<void> {
    logger = new RecordingLogger();
    url = await harness.start(logger);
  }

  it('renders HttpProblemError with its status, members and headers', async () => {
    await start();
    const res = await call(`${url}/conflict?x=1`, { headers: { 'x-correlation-id': 'corr-9' } });
    expect(res.status).toBe(409);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers['retry-after']).toBe('5');
    expect(res.body).toEqual({
      type: 'about:blank',
      title: 'Order already shipped',
      status: 409,
      detail: 'order 42 shipped yesterday',
      instance: '/conflict',
      correlationId: 'corr-9',
      orderId: 42,
    });
  });

  it('answers request validation errors with 400 and the failing fields', async () => {
    await start();
    const res = await call(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sku: '', quantity: 1.5 }),
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({
      status: 400,
      title: 'Bad Request',
      instance: '/orders',
      code: 'REQUEST_INVALID',
    });
    expect(res.body.errors.map((e: { path: string }) => e.path)).toEqual(['body.sku', 'body.quantity']);
    expect(res.body.errors[0].message).toEqual(expect.any(String));

    const schema = await call(`${url}/schema`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ quantity: 0 }),
    });
    expect(schema.status).toBe(400);
    expect(schema.body.errors.map((e: { path: string }) => e.path).sort()).toEqual(
      harness.name === 'fastify' ? ['body.sku'] : ['body.quantity', 'body.sku'],
    );
  });

  it('answers malformed JSON with 400', async () => {
    await start();
    const res = await call(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"sku": ',
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ title: 'Bad Request', detail: 'The request body is not valid JSON.' });
    expect(res.text).not.toContain('Unexpected');
  });

  it('answers a body over the limit with 413', async () => {
    await start();
    const res = await call(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sku: 'x'.repeat(5000), quantity: 1 }),
    });
    expect(res.status).toBe(413);
    expect(res.body).toMatchObject({ status: 413, instance: '/orders' });
  });

  it('answers an unsupported media type or encoding with 415', async () => {
    await start();
    const res =
      harness.name === 'fastify'
        ? await call(`${url}/orders`, {
            method: 'POST',
            headers: { 'content-type': 'text/xml' },
            body: '<order/>',
          })
        : await call(`${url}/orders`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'content-encoding': 'compress' },
            body: gzipSync('{}'),
          });
    expect(res.status).toBe(415);
    expect(res.body).toMatchObject({ status: 415, title: 'Unsupported Media Type' });
  });

  it('answers unknown routes with a 404 problem', async () => {
    await start();
    const res = await call(`${url}/nowhere`);
    expect(res.status).toBe(404);
    expect(res.body).toMatchObject({ status: 404, title: 'Not Found', instance: '/nowhere' });
  });

  it('answers 504 at once when the deadline already passed, without running the handler', async () => {
    await start();
    const res = await call(`${url}/crash`, { headers: { 'x-deadline-ms': '0', 'x-correlation-id': 'late' } });
    expect(res.status).toBe(504);
    expect(res.headers['x-correlation-id']).toBe('late');
    expect(res.body).toMatchObject({ title: 'Deadline exceeded', status: 504, correlationId: 'late' });
    expect(logger.entries).toHaveLength(0);
  });

  it('answers 504 when the deadline passes while the handler runs', async () => {
    await start();
    const res = await call(`${url}/slow`, { headers: { 'x-deadline-ms': '100' } });
    expect(res.status).toBe(504);
    expect(res.body).toMatchObject({ title: 'Deadline exceeded', code: 'DEADLINE_EXCEEDED' });
  });

  it('echoes the status of errors meant for the client, not of any error with a status', async () => {
    await start();
    const exposed = await call(`${url}/exposed`);
    expect(exposed.status).toBe(410);
    expect(exposed.body).toMatchObject({ title: 'Gone', detail: 'This order is gone for good' });
    const upstream = await call(`${url}/upstream`);
    expect(upstream.status).toBe(500);
    expect(upstream.text).not.toContain('inventory');
  });

  it('answers a failed call to another service with 504, 503 or 502, naming no service, and logs it', async () => {
    await start();
    const expected: [string, number, string, string | undefined][] = [
      ['/dep-timeout', 504, 'TIMEOUT', undefined],
      ['/dep-open', 503, 'CIRCUIT_OPEN', '5'],
      ['/dep-full', 503, 'BULKHEAD_FULL', undefined],
      ['/dep-503', 503, 'HTTP_ERROR', '2'],
      ['/dep-404', 502, 'HTTP_ERROR', undefined],
    ];
    for (const [path, status, code, retryAfter] of expected) {
      const res = await call(`${url}${path}`);
      expect(res.status, path).toBe(status);
      expect(res.headers['content-type']).toBe('application/problem+json');
      expect(res.body).toMatchObject({ status, code, instance: path });
      expect(res.headers['retry-after'], path).toBe(retryAfter);
      // The client in this service already retried: callers further up must not multiply it.
      expect(res.headers['x-ferry-no-retry'], path).toBe('1');
      expect(res.text).not.toContain('10.0.0.7');
      expect(res.text).not.toContain('hunter2');
    }
    expect(logger.entries.map((e) => e.fields?.path)).toEqual(expected.map(([path]) => path));
    expect(String(logger.entries[0]?.fields?.error)).toContain('10.0.0.7');
  });

  it("leaves a handler's own 503 retryable", async () => {
    await start();
    const res = await call(`${url}/own-503`);
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('3');
    expect(res.headers['x-ferry-no-retry']).toBeUndefined();
  });

  it('answers 500 without the message or stack, and logs them with the correlation id', async () => {
    await start();
    for (const path of ['/crash', '/crash-ferry']) {
      const res = await call(`${url}${path}`, { headers: { 'x-correlation-id': 'corr-500' } });
      expect(res.status).toBe(500);
      expect(res.body).toEqual({
        type: 'about:blank',
        title: 'Internal Server Error',
        status: 500,
        instance: path,
        correlationId: 'corr-500',
      });
      expect(res.text).not.toContain('hunter2');
      expect(res.text).not.toContain('.ts');
    }
    expect(logger.entries).toHaveLength(2);
    expect(logger.entries[0]?.fields).toMatchObject({
      correlationId: 'corr-500',
      method: 'GET',
      path: '/crash',
    });
    expect(String(logger.entries[0]?.fields?.error)).toContain('hunter2');
    expect(String(logger.entries[0]?.fields?.stack)).toContain('problem.test.ts');
  });

  it('answers 500 without internals, and logs both errors, when mapError throws or maps to what cannot be sent', async () => {
    await start();
    const paths = ['/map-throws', '/map-status', '/map-bigint', '/bigint-extension'];
    for (const path of [...paths, '/map-tojson', '/map-string', '/map-untitled']) {
      const res = await call(`${url}${path}`, { headers: { 'x-correlation-id': 'corr-map' } });
      expect(res.status, path).toBe(500);
      expect(res.headers['content-type'], path).toBe('application/problem+json');
      expect(res.body, path).toEqual({
        type: 'about:blank',
        title: 'Internal Server Error',
        status: 500,
        instance: path,
        correlationId: 'corr-map',
      });
      expect(res.text, path).not.toContain('hunter2');
    }
    expect(logger.entries).toHaveLength(7);
    expect(String(logger.entries[0]?.fields?.error)).toMatch(
      /mapError failed.*while answering.*map me: throws/,
    );
    expect(String(logger.entries[1]?.fields?.error)).toMatch(
      /status must be an integer from 400 to 599, got 1000/,
    );
    expect(String(logger.entries[3]?.fields?.error)).toMatch(/BigInt/);
    for (const entry of logger.entries.slice(4)) {
      expect(String(entry.fields?.error)).toMatch(
        /a problem must be an object with a string type and title|a problem's status must be/,
      );
    }
  });

  it('answers an error whose code getter throws, or whose every member throws, with a 500 problem, not the framework fallback', async () => {
    await start();
    for (const path of ['/hostile', '/hostile-proxy']) {
      const res = await call(`${url}${path}`);
      expect(res.status, path).toBe(500);
      expect(res.headers['content-type'], path).toBe('application/problem+json');
      expect(res.body, path).toMatchObject({ status: 500, title: 'Internal Server Error', instance: path });
      expect(res.text, path).not.toContain(SECRET);
    }
  });

  it('answers a problem built with a header HTTP does not allow with a 500 problem, and logs why', async () => {
    await start();
    const res = await call(`${url}/bad-header`, { headers: { 'x-correlation-id': 'corr-hdr' } });
    expect(res.status).toBe(500);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers.location).toBeUndefined();
    expect(res.body).toMatchObject({ status: 500, instance: '/bad-header', correlationId: 'corr-hdr' });
    expect(logger.entries).toHaveLength(1);
    expect(String(logger.entries[0]?.fields?.error)).toContain('"location"');
  });
});

describe('fastify specifics', () => {
  it('answers an empty JSON body with 400', async () => {
    const app = Fastify();
    ferryFastify(app, { logger: new RecordingLogger() });
    app.post('/orders', async () => ({ ok: true }));
    const url = await listenFastify(app, closers);
    async function* nothing(): AsyncGenerator<string> {}
    const res = await call(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: Readable.from(nothing()),
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ detail: 'The request body is not valid JSON.' });
  });

  it('works inside an encapsulated plugin, and only there', async () => {
    const app = Fastify();
    await app.register(async (child) => {
      ferryFastify(child, { logger: new RecordingLogger() });
      child.get('/inside', async (req) => ({
        id: req.ferry.correlationId,
        ambient: currentContext()?.correlationId,
      }));
    });
    app.get('/outside', async () => ({ ambient: currentContext()?.correlationId ?? null }));
    const url = await listenFastify(app, closers);
    const inside = await call(`${url}/inside`, { headers: { 'x-correlation-id': 'in' } });
    expect(inside.body).toEqual({ id: 'in', ambient: 'in' });
    expect(inside.headers['x-correlation-id']).toBe('in');
    const outside = await call(`${url}/outside`, { headers: { 'x-correlation-id': 'out' } });
    expect(outside.body).toEqual({ ambient: null });
  });
});

describe('express specifics', () => {
  it('logs an error raised after the answer began, and closes the connection rather than end a cut answer', async () => {
    const logger = new RecordingLogger();
    const app = express();
    app.use(ferryContext());
    app.get('/stream', async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
      await new Promise((resolve) => setTimeout(resolve, 20));
      throw new Error(SECRET);
    });
    app.use(ferryErrors({ logger }));
    const url = await listenNode(createServer(app), closers);
    const response = await request(`${url}/stream`, { headers: { 'x-correlation-id': 'corr-late' } });
    expect(response.statusCode).toBe(200);
    await expect(response.body.text()).rejects.toThrow();
    expect(logger.entries).toHaveLength(1);
    expect(logger.entries[0]?.message).toMatch(/after the response had begun/);
    expect(logger.entries[0]?.fields).toMatchObject({ correlationId: 'corr-late', path: '/stream' });
    expect(String(logger.entries[0]?.fields?.error)).toContain('hunter2');
  });
});
