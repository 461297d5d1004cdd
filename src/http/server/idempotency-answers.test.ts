import { createServer, request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ferryContext, ferryErrors, ferryIdempotency } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import { IdempotencyGuard, MemoryIdempotencyStore } from './idempotency.js';
import type { ProblemLogger } from './problem.js';

// Every way a handler can send its answer is stored and replayed, and the handler runs once per key.

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

const silent: ProblemLogger = { error: () => {} };
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Bounds answers to 1000 bytes: `/big` (1800 bytes) is over it. */
const MAX_STORED = 1000;

interface Runs {
  [route: string]: number;
}

const count = (runs: Runs, route: string): number => {
  runs[route] = (runs[route] ?? 0) + 1;
  return runs[route];
};

/** Three chunks of 600 bytes, streamed. */
const bigStream = () => Readable.from([Buffer.alloc(600, 1), Buffer.alloc(600, 2), Buffer.alloc(600, 3)]);

async function startFastify(runs: Runs, configure?: (app: FastifyInstance) => void): Promise<string> {
  const app = Fastify();
  ferryFastify(app, {
    idempotency: { store: new MemoryIdempotencyStore(), maxStoredBodyBytes: MAX_STORED },
    logger: silent,
  });
  configure?.(app);
  app.post('/stream', async (_req, reply) => {
    const run = count(runs, 'stream');
    reply.code(201).type('text/plain');
    return Readable.from(['order-', String(run)]);
  });
  app.post('/buffer', async (_req, reply) => {
    const run = count(runs, 'buffer');
    return reply
      .code(201)
      .type('application/octet-stream')
      .send(Buffer.from([0, 255, run]));
  });
  app.post('/big', async (_req, reply) => {
    count(runs, 'big');
    reply.code(201).type('application/octet-stream');
    return bigStream();
  });
  app.post('/fail-stream', async (_req, reply) => {
    const run = count(runs, 'fail-stream');
    reply.code(503).type('text/plain');
    return Readable.from([`down-${run}`]);
  });
  app.post('/hijack', (_req, reply) => {
    const run = count(runs, 'hijack');
    reply.hijack();
    reply.raw.writeHead(201, { 'Content-Type': 'text/plain' });
    reply.raw.write('hijacked-');
    reply.raw.end(String(run));
  });
  app.post('/hijack-async', async (_req, reply) => {
    const run = count(runs, 'hijack-async');
    reply.hijack();
    await sleep(10);
    reply.raw.writeHead(201, ['Content-Type', 'text/plain']);
    reply.raw.end(`hijacked-${run}`);
  });
  return listenFastify(app, closers);
}

async function startExpress(runs: Runs): Promise<string> {
  const app = express();
  app.use(ferryContext());
  app.use(express.json());
  app.use(
    ferryIdempotency({ store: new MemoryIdempotencyStore(), maxStoredBodyBytes: MAX_STORED, logger: silent }),
  );
  app.post('/stream', (_req, res) => {
    const run = count(runs, 'stream');
    res.status(201).type('text/plain');
    Readable.from(['order-', String(run)]).pipe(res);
  });
  app.post('/buffer', (_req, res) => {
    const run = count(runs, 'buffer');
    res
      .status(201)
      .type('application/octet-stream')
      .send(Buffer.from([0, 255, run]));
  });
  app.post('/big', (_req, res) => {
    count(runs, 'big');
    res.status(201).type('application/octet-stream');
    bigStream().pipe(res);
  });
  app.post('/fail-stream', (_req, res) => {
    const run = count(runs, 'fail-stream');
    res.status(503).type('text/plain');
    Readable.from([`down-${run}`]).pipe(res);
  });
  app.use(ferryErrors({ logger: silent }));
  return listenNode(createServer(app), closers);
}

async function post(url: string, key: string | undefined) {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
    body: '{"o":1}',
  });
  return {
    status: response.statusCode,
    replayed: response.headers['idempotent-replayed'],
    type: response.headers['content-type'],
    body: Buffer.from(await response.body.arrayBuffer()),
  };
}

/** Three POSTs with one key: the first runs the handler, the next two replay its answer byte for byte. */
async function expectRunOnceThenReplay(url: string, runs: Runs, route: string) {
  const first = await post(`${url}/${route}`, `${route}-1`);
  const replays = [await post(`${url}/${route}`, `${route}-1`), await post(`${url}/${route}`, `${route}-1`)];
  expect(runs[route]).toBe(1);
  expect(first.replayed).toBeUndefined();
  for (const replay of replays) {
    expect(replay.status).toBe(first.status);
    expect(replay.replayed).toBe('true');
    expect(replay.type).toBe(first.type);
    expect(replay.body.equals(first.body)).toBe(true);
  }
  return first;
}

describe.each([
  { name: 'fastify', start: startFastify },
  { name: 'express', start: startExpress },
])('Idempotency-Key with $name, answers of every shape', ({ start }) => {
  it('stores a streamed answer and replays it', async () => {
    const runs: Runs = {};
    const url = await start(runs);
    const first = await expectRunOnceThenReplay(url, runs, 'stream');
    expect(first.status).toBe(201);
    expect(first.body.toString()).toBe('order-1');
  });

  it('stores a Buffer and replays it byte for byte', async () => {
    const runs: Runs = {};
    const url = await start(runs);
    const first = await expectRunOnceThenReplay(url, runs, 'buffer');
    expect([...first.body]).toEqual([0, 255, 1]);
  });

  it('holds the key of an answer over maxStoredBodyBytes: 409, and the handler does not run again', async () => {
    const runs: Runs = {};
    const url = await start(runs);
    const first = await post(`${url}/big`, 'big-1');
    expect(first.status).toBe(201);
    expect(first.body.length).toBe(1800);
    for (let i = 0; i < 2; i++) expect((await post(`${url}/big`, 'big-1')).status).toBe(409);
    expect(runs.big).toBe(1);
  });

  it('releases the key of a streamed 5xx, so that a retry runs', async () => {
    const runs: Runs = {};
    const url = await start(runs);
    expect(await post(`${url}/fail-stream`, 'fail-1')).toMatchObject({ status: 503, replayed: undefined });
    const retried = await post(`${url}/fail-stream`, 'fail-1');
    expect(retried).toMatchObject({ status: 503, replayed: undefined });
    expect(retried.body.toString()).toBe('down-2');
    expect(runs['fail-stream']).toBe(2);
  });
});

describe('Idempotency-Key with fastify, hijacked replies', () => {
  it.each(['hijack', 'hijack-async'])('stores what %s wrote to reply.raw and replays it', async (route) => {
    const runs: Runs = {};
    const url = await startFastify(runs);
    const first = await expectRunOnceThenReplay(url, runs, route);
    expect(first).toMatchObject({ status: 201, type: 'text/plain' });
    expect(first.body.toString()).toBe('hijacked-1');
  });
});

describe('Idempotency-Key with fastify, a streamed answer its client left', () => {
  it('holds the key: 409, and the handler does not run again', async () => {
    let runs = 0;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    closers.push(async () => open());
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.post('/slow', async (_req, reply) => {
      runs++;
      reply.code(201).type('text/plain');
      return Readable.from(
        (async function* () {
          yield 'first part;';
          await gate;
          yield 'second part';
        })(),
      );
    });
    const url = await listenFastify(app, closers);
    const left = httpRequest(`${url}/slow`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'slow-1' },
    });
    left.on('error', () => {});
    left.end('{"o":1}');
    const response = await new Promise<import('node:http').IncomingMessage>((resolve) =>
      left.on('response', resolve),
    );
    await new Promise((resolve) => response.once('data', resolve));
    left.destroy();
    await sleep(100);
    open();
    await sleep(50);
    for (let i = 0; i < 2; i++) expect((await post(`${url}/slow`, 'slow-1')).status).toBe(409);
    expect(runs).toBe(1);
  });
});

describe('Idempotency-Key with fastify, an async handler calling reply.send without returning it', () => {
  /** Runs `body` and returns every uncaught exception and unhandled rejection it caused. */
  async function uncaughtDuring(body: () => Promise<void>): Promise<unknown[]> {
    const errors: unknown[] = [];
    const onError = (error: unknown) => {
      errors.push(error);
    };
    process.on('uncaughtException', onError);
    process.on('unhandledRejection', onError);
    try {
      await body();
      await sleep(100);
    } finally {
      process.off('uncaughtException', onError);
      process.off('unhandledRejection', onError);
    }
    return errors;
  }

  it.each([200, 201, 204])('answers %i once, stores it and survives', async (status) => {
    let runs = 0;
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.post('/x', async (_req, reply) => {
      runs++;
      reply.code(status).send(status === 204 ? undefined : { run: runs });
    });
    const url = await listenFastify(app, closers);
    const answers: Awaited<ReturnType<typeof post>>[] = [];
    const errors = await uncaughtDuring(async () => {
      answers.push(await post(`${url}/x`, 'k1'));
      await sleep(50);
      answers.push(await post(`${url}/x`, 'k1'));
    });
    expect(errors).toEqual([]);
    const [first, second] = answers;
    expect(first).toMatchObject({ status, replayed: undefined });
    expect(first?.body.toString()).toBe(status === 204 ? '' : '{"run":1}');
    expect(second).toMatchObject({ status, replayed: 'true' });
    expect(second?.body.equals(first?.body ?? Buffer.alloc(0))).toBe(true);
    expect(runs).toBe(1);
  });

  it('waits for an async onSend hook of the application instead of sending twice', async () => {
    let runs = 0;
    let signed = 0;
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.addHook('onSend', async (_req, reply, payload) => {
      signed++;
      await sleep(20);
      reply.header('x-signed', 'yes');
      return payload;
    });
    app.post('/x', async (_req, reply) => {
      runs++;
      reply.code(201).send({ run: runs });
    });
    const url = await listenFastify(app, closers);
    const answers: Awaited<ReturnType<typeof post>>[] = [];
    const errors = await uncaughtDuring(async () => {
      answers.push(await post(`${url}/x`, 'k1'));
      answers.push(await post(`${url}/x`, 'k1'));
    });
    expect(errors).toEqual([]);
    expect(answers.map((a) => [a.status, a.replayed, a.body.toString()])).toEqual([
      [201, undefined, '{"run":1}'],
      [201, 'true', '{"run":1}'],
    ]);
    expect(runs).toBe(1);
    // Once: Fastify did not send the first answer again, and the replay is the stored bytes as the
    // hook left them, not run through it a second time.
    expect(signed).toBe(1);
  });
});

describe('Idempotency-Key with fastify, replays as the answer left', () => {
  it('does not run the application onSend hooks again on a replay (an envelope wraps once)', async () => {
    const runs: Runs = {};
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.addHook('onSend', async (_req, _reply, payload) => {
      const text = Buffer.isBuffer(payload) ? payload.toString() : payload;
      return typeof text === 'string' ? `{"data":${text}}` : payload;
    });
    app.post('/x', async () => ({ order: count(runs, 'x') }));
    const url = await listenFastify(app, closers);
    await expectRunOnceThenReplay(url, runs, 'x');
    const replay = await post(`${url}/x`, 'x-1');
    expect(replay.body.toString()).toBe('{"data":{"order":1}}');
  });

  it('replays a redirect without adding a content-type', async () => {
    const runs: Runs = {};
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.post('/x', async (_req, reply) => {
      count(runs, 'x');
      return reply.redirect('/orders/1', 303);
    });
    const url = await listenFastify(app, closers);
    const first = await post(`${url}/x`, 'r-1');
    const replay = await post(`${url}/x`, 'r-1');
    expect(runs.x).toBe(1);
    expect([first.status, first.type]).toEqual([303, undefined]);
    expect([replay.status, replay.type, replay.replayed]).toEqual([303, undefined, 'true']);
  });
});

describe('Idempotency-Key with fastify, requests without a key', () => {
  it('leaves their response alone', async () => {
    const patched: boolean[] = [];
    const app = Fastify();
    ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger: silent });
    app.post('/x', async (_req, reply) => {
      patched.push(Object.hasOwn(reply.raw, 'end') || Object.hasOwn(reply.raw, 'write'));
      return { ok: true };
    });
    const url = await listenFastify(app, closers);
    await post(`${url}/x`, undefined);
    await post(`${url}/x`, 'with-key');
    expect(patched).toEqual([false, true]);
  });
});

describe('IdempotencyGuard options', () => {
  it('refuses a nonsensical maxStoredBodyBytes', () => {
    expect(
      () => new IdempotencyGuard({ store: new MemoryIdempotencyStore(), maxStoredBodyBytes: -1 }),
    ).toThrow(/maxStoredBodyBytes/);
  });

  // Each was taken at setup, then answered every request carrying a key with a 500 (or threw a TypeError).
  it.each([
    ['no store', { store: undefined }, /idempotency.store must be an IdempotencyStore .*not undefined/],
    ['store: {}', { store: {} }, /idempotency.store must be an IdempotencyStore .*not an object/],
    ['scope: a string', { scope: 'tenant' }, /idempotency.scope must be a function .*not "tenant"/],
    ['methods: a string', { methods: 'POST' }, /idempotency.methods must be an array of strings, not "POST"/],
    ['replayHeaders: [1]', { replayHeaders: [1] }, /idempotency.replayHeaders must be an array of strings/],
  ])('refuses %s when set up, in ferryFastify and ferryIdempotency', (_name, given, message) => {
    const options = { store: new MemoryIdempotencyStore(), ...given } as never;
    for (const setUp of [
      () => ferryFastify(Fastify(), { idempotency: options }),
      () => ferryIdempotency(options),
    ]) {
      expect(setUp).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS', message: expect.stringMatching(message) }),
      );
    }
  });
});
