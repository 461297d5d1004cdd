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
  isClientDisconnectedError,
  isDeadlineExceededError,
  isValidCorrelationId,
  openRequestScope,
  parseRequestHeaders,
  parseTraceparent,
  type RequestContextOptions,
  type RequestScope,
  requestContextOptionsOf,
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

describe('deadline trust', () => {
  it('raises a deadline shorter than minDeadlineMs to it, an expired one included', () => {
    const options = { minDeadlineMs: 2000 };
    expect(parseRequestHeaders({ 'x-deadline-ms': '150' }, options, 0).deadline).toBe(2000);
    expect(parseRequestHeaders({ 'x-deadline-ms': '0' }, options, 0).deadline).toBe(2000);
    expect(parseRequestHeaders({ 'x-deadline-ms': '5000' }, options, 0).deadline).toBe(5000);
    expect(parseRequestHeaders({ 'x-deadline-ms': 'soon' }, options, 0).deadline).toBeUndefined();
    expect(parseRequestHeaders({}, options, 0).deadline).toBeUndefined();
    // Without a minimum, the caller's deadline stands as today.
    expect(parseRequestHeaders({ 'x-deadline-ms': '150' }, {}, 0).deadline).toBe(150);
  });

  it('ignores x-deadline-ms from a caller that is not trusted', () => {
    expect(
      parseRequestHeaders({ 'x-deadline-ms': '150' }, { trustDeadline: false }, 0).deadline,
    ).toBeUndefined();
    expect(parseRequestHeaders({ 'x-deadline-ms': '150' }, { trustDeadline: true }, 0).deadline).toBe(150);
  });

  it('refuses bounds that cannot work', () => {
    expect(() => requestContextOptionsOf({ minDeadlineMs: 5000, maxDeadlineMs: 1000 })).toThrow(
      /minDeadlineMs/,
    );
    expect(() => requestContextOptionsOf({ minDeadlineMs: 4_000_000 })).toThrow(/maxDeadlineMs/);
    expect(() => requestContextOptionsOf({ minDeadlineMs: -1 })).toThrow(
      /minDeadlineMs must be an integer from 0/,
    );
    expect(() => requestContextOptionsOf({ maxDeadlineMs: 1.5 })).toThrow(
      /maxDeadlineMs must be an integer from 0/,
    );
    // Past a Node timer's longest: the request's deadline timer fired at once, aborting it at its start.
    expect(() => requestContextOptionsOf({ maxDeadlineMs: 2 ** 31 })).toThrow(
      'maxDeadlineMs must be an integer from 0 to 2147483647, got 2147483648',
    );
    expect(() => ferryFastify(Fastify(), { maxDeadlineMs: 4_000_000_000 })).toThrow(/maxDeadlineMs/);
    expect(() => ferryContext({ maxDeadlineMs: 4_000_000_000 })).toThrow(/maxDeadlineMs/);
    expect(requestContextOptionsOf({ maxDeadlineMs: 2 ** 31 - 1 })).toEqual({ maxDeadlineMs: 2 ** 31 - 1 });
    expect(() => requestContextOptionsOf({ trustDeadline: 'yes' as never })).toThrow(/trustDeadline/);
    expect(() => ferryFastify(Fastify(), { minDeadlineMs: 10, maxDeadlineMs: 5 })).toThrow(/minDeadlineMs/);
    expect(() => ferryContext({ minDeadlineMs: 10, maxDeadlineMs: 5 })).toThrow(/minDeadlineMs/);
    expect(requestContextOptionsOf({ minDeadlineMs: 100, logger: console } as RequestContextOptions)).toEqual(
      {
        minDeadlineMs: 100,
      },
    );
  });
});

describe('openRequestScope', () => {
  async function serve(
    onScope: (scope: RequestScope) => Promise<void> | void,
    options: RequestContextOptions = {},
  ): Promise<string> {
    return listen(
      createServer((req, res) => {
        const scope = openRequestScope(req, res, options);
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

  it('asks trustDeadline about each request, and applies the minimum to trusted ones', async () => {
    const seen: (number | undefined)[] = [];
    const url = await serve(
      ({ context }) => {
        seen.push(context.deadline === undefined ? undefined : context.deadline - Date.now());
      },
      { trustDeadline: (req) => req.headers['x-caller'] === 'inside', minDeadlineMs: 1000 },
    );
    await (await request(url, { headers: { 'x-deadline-ms': '0', 'x-caller': 'inside' } })).body.text();
    await (await request(url, { headers: { 'x-deadline-ms': '0', 'x-caller': 'outside' } })).body.text();
    await (await request(url, { headers: { 'x-deadline-ms': '0' } })).body.text();
    expect(seen[0]).toBeGreaterThan(900);
    expect(seen[0]).toBeLessThanOrEqual(1000);
    expect(seen.slice(1)).toEqual([undefined, undefined]);
  });

  it('gives a signal that any number of calls may listen to without a leak warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const url = await serve(
        async ({ context }) => {
          // What a handler does when it passes its signal to many concurrent calls.
          await Promise.all(
            Array.from({ length: 50 }, () => Promise.race([once(context.signal, 'abort'), sleep(5)])),
          );
        },
        { maxDeadlineMs: 10_000 },
      );
      await (await request(url, { headers: { 'x-deadline-ms': '5000' } })).body.text();
      await sleep(10); // warnings are emitted on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
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
