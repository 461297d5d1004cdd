import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { currentContext, type FerryContext } from '../../context/context.js';
import { ferryContext, ferryErrors } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import {
  childTraceparent,
  isClientDisconnectedError,
  isDeadlineExceededError,
  isValidCorrelationId,
  newTraceparent,
  openRequestScope,
  parseRequestHeaders,
  parseTraceparent,
  type RequestScope,
} from './request-context.js';

const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const INCOMING = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

async function listen(server: Server): Promise<string> {
  return listenNode(server, closers);
}

async function startFastify(setup: (app: FastifyInstance) => void): Promise<string> {
  const app = Fastify();
  setup(app);
  return listenFastify(app, closers);
}

/** A body that arrives in pieces, well after the headers, as a slow client sends it. */
async function* slowBody(): AsyncGenerator<string> {
  yield '{"items":[';
  for (let i = 0; i < 20; i++) {
    await sleep(5);
    yield `${i === 0 ? '' : ','}"${'x'.repeat(2000)}"`;
  }
  yield ']}';
}

describe('parseRequestHeaders', () => {
  it('takes the correlation id, child traceparent and deadline from the headers', () => {
    const parsed = parseRequestHeaders(
      { 'x-correlation-id': 'order-42', traceparent: INCOMING, 'x-deadline-ms': '1500' },
      {},
      1_000_000,
    );
    expect(parsed.correlationId).toBe('order-42');
    expect(parsed.deadline).toBe(1_001_500);
    const trace = parseTraceparent(parsed.traceparent);
    expect(trace?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(trace?.parentId).not.toBe('00f067aa0ba902b7');
    expect(trace?.flags).toBe('01');
  });

  it('generates what is missing or malformed', () => {
    for (const headers of [{}, { 'x-correlation-id': '', traceparent: 'nope', 'x-deadline-ms': '-5' }]) {
      const parsed = parseRequestHeaders(headers);
      expect(parsed.correlationId).toMatch(UUIDV7);
      expect(parsed.traceparent).toMatch(TRACEPARENT);
      expect(parsed.deadline).toBeUndefined();
    }
  });

  it('accepts 1 to 200 visible ASCII characters as a correlation id', () => {
    expect(isValidCorrelationId('a')).toBe(true);
    expect(isValidCorrelationId('x'.repeat(200))).toBe(true);
    expect(isValidCorrelationId('x'.repeat(201))).toBe(false);
    expect(isValidCorrelationId('has space')).toBe(false);
    expect(isValidCorrelationId('tab\there')).toBe(false);
    expect(isValidCorrelationId('é')).toBe(false);
    expect(parseRequestHeaders({ 'x-correlation-id': 'x'.repeat(201) }).correlationId).toMatch(UUIDV7);
  });

  it('caps the deadline and ignores malformed ones', () => {
    expect(parseRequestHeaders({ 'x-deadline-ms': '99999999999' }, {}, 0).deadline).toBe(3_600_000);
    expect(parseRequestHeaders({ 'x-deadline-ms': '5000' }, { maxDeadlineMs: 1000 }, 0).deadline).toBe(1000);
    expect(parseRequestHeaders({ 'x-deadline-ms': '0' }, {}, 10).deadline).toBe(10);
    for (const bad of ['1.5', '1e3', 'soon', '', ' 10']) {
      expect(parseRequestHeaders({ 'x-deadline-ms': bad }).deadline).toBeUndefined();
    }
  });
});

describe('traceparent', () => {
  it('validates the W3C format', () => {
    expect(parseTraceparent(INCOMING)).toEqual({
      version: '00',
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      parentId: '00f067aa0ba902b7',
      flags: '01',
    });
    const invalid = [
      '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // unknown version
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // zero trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // zero parent id
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', // upper case
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01', // short trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1',
      `${INCOMING}-extra`,
    ];
    for (const value of invalid) expect(parseTraceparent(value), value).toBeUndefined();
  });

  it('creates a child with the same trace id and flags and a new parent id', () => {
    const child = childTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00');
    const parsed = parseTraceparent(child);
    expect(parsed?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(parsed?.parentId).not.toBe('00f067aa0ba902b7');
    expect(parsed?.flags).toBe('00');
    expect(childTraceparent(child)).not.toBe(child);
  });

  it('starts a new trace when there is none to continue', () => {
    const a = newTraceparent();
    const b = childTraceparent('garbage');
    expect(a).toMatch(TRACEPARENT);
    expect(b).toMatch(TRACEPARENT);
    expect(parseTraceparent(a)?.traceId).not.toBe(parseTraceparent(b)?.traceId);
  });
});

describe('openRequestScope', () => {
  async function serve(onScope: (scope: RequestScope) => Promise<void> | void): Promise<string> {
    return listen(
      createServer((req, res) => {
        const scope = openRequestScope(req, res);
        void Promise.resolve(onScope(scope)).then(() => {
          if (!res.destroyed) res.end('done');
        });
      }),
    );
  }

  it('aborts the signal with DeadlineExceededError when the deadline passes', async () => {
    let reason: unknown;
    const url = await serve(async ({ context }) => {
      await once(context.signal, 'abort');
      reason = context.signal.reason;
    });
    const started = Date.now();
    const response = await request(url, { headers: { 'x-deadline-ms': '100' } });
    await response.body.text();
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(isDeadlineExceededError(reason)).toBe(true);
  });

  it('marks a request whose deadline already passed as expired', async () => {
    let seen: RequestScope | undefined;
    const url = await serve((scope) => {
      seen = scope;
    });
    await (await request(url, { headers: { 'x-deadline-ms': '0' } })).body.text();
    expect(seen?.expired).toBe(true);
    expect(seen?.context.signal.aborted).toBe(true);
  });

  it('aborts the signal when the client disconnects, not when the response completes', async () => {
    const reasons: unknown[] = [];
    let finished: RequestScope | undefined;
    const url = await serve(async (scope) => {
      if (scope.context.correlationId === 'leaves') {
        await once(scope.context.signal, 'abort');
        reasons.push(scope.context.signal.reason);
      } else finished = scope;
    });
    await (
      await request(url, { headers: { 'x-correlation-id': 'stays', 'x-deadline-ms': '50' } })
    ).body.text();
    await sleep(100);
    expect(finished?.context.signal.aborted).toBe(false); // deadline timer cleared with the response

    const controller = new AbortController();
    const pending = request(url, { headers: { 'x-correlation-id': 'leaves' }, signal: controller.signal });
    await sleep(50);
    controller.abort();
    await expect(pending).rejects.toThrow();
    await expect.poll(() => reasons.length).toBe(1);
    expect(isClientDisconnectedError(reasons[0])).toBe(true);
  });
});

describe('context inside the frameworks', () => {
  async function assertContext(url: string): Promise<void> {
    const response = await request(`${url}/ctx`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-correlation-id': 'corr-1',
        traceparent: INCOMING,
        'x-deadline-ms': '10000',
      },
      body: Readable.from(slowBody()),
    });
    const body = (await response.body.json()) as Record<string, unknown>;
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-correlation-id']).toBe('corr-1');
    expect(response.headers.traceparent).toBe(body.traceparent);
    expect(body).toMatchObject({ handler: 'corr-1', afterAwait: 'corr-1', items: 20, signal: false });
    expect(parseTraceparent(body.traceparent)?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(body.deadline).toBeGreaterThan(Date.now());

    const generated = await request(`${url}/ctx`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"items":[]}',
    });
    const seen = (await generated.body.json()) as Record<string, unknown>;
    expect(seen.handler).toMatch(UUIDV7);
    expect(generated.headers['x-correlation-id']).toBe(seen.handler);
    expect(generated.headers.traceparent).toMatch(TRACEPARENT);
  }

  async function handle(body: { items: unknown[] }): Promise<Record<string, unknown>> {
    const handler = currentContext();
    await sleep(5);
    const later = await new Promise<FerryContext | undefined>((resolve) =>
      setImmediate(() => resolve(currentContext())),
    );
    return {
      handler: handler?.correlationId,
      afterAwait: later?.correlationId,
      traceparent: handler?.traceparent,
      deadline: handler?.deadline,
      signal: handler?.signal?.aborted,
      items: body.items.length,
    };
  }

  it('is current in a Fastify handler and what it awaits, even for a body that arrives late', async () => {
    const url = await startFastify((app) => {
      ferryFastify(app);
      app.post('/ctx', async (req) => {
        expect(req.ferry.correlationId).toBe(currentContext()?.correlationId);
        return handle(req.body as { items: unknown[] });
      });
    });
    await assertContext(url);
  });

  it('is current in an Express handler and what it awaits, even for a body that arrives late', async () => {
    const app = express();
    app.use(ferryContext());
    app.use(express.json({ limit: '1mb' }));
    app.post('/ctx', async (req, res) => {
      res.json(await handle(req.body));
    });
    app.use(ferryErrors());
    await assertContext(await listen(createServer(app)));
  });

  it('survives an Express body parser that resumes from raw stream events', async () => {
    const app = express();
    app.use(ferryContext());
    // Unlike body-parser, this reader does not bind its callbacks to the async context.
    app.use((req, _res, next) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        req.body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
        next();
      });
    });
    app.post('/ctx', async (req, res) => {
      res.json(await handle(req.body));
    });
    app.use(ferryErrors());
    await assertContext(await listen(createServer(app)));
  });
});
