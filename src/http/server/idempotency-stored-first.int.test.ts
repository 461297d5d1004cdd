import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../logging/logger.js';
import { PostgresEventStoreBackend } from '../../postgres/postgres-backend.js';
import { SqliteEventStoreBackend } from '../../sqlite/sqlite-backend.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../../testing/postgres.js';
import { ferryContext, ferryErrors, ferryIdempotency } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import {
  type IdempotencyBeginResult,
  type IdempotencyStore,
  MemoryIdempotencyStore,
  type StoredResponse,
} from './idempotency.js';
import type { ProblemLogger } from './problem.js';

// The answer of a keyed request is stored (or its key released) before the client can have it: a
// retry sent the instant the client has the answer replays it (or, after a 5xx, runs again), on
// every store, however slow the store is to record it. An answer the store failed to keep never
// reaches the client as if it were kept.

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

const dir = mkdtempSync(join(tmpdir(), 'ferry-stored-first-'));
const schemas: string[] = [];
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas(schemas);
});

/** The stores the idempotency store contract covers, each on storage of its own. */
const backends: { name: string; open(): Promise<IdempotencyStore> }[] = [
  { name: 'memory', open: async () => new MemoryIdempotencyStore() },
  {
    name: 'sqlite',
    async open() {
      const backend = new SqliteEventStoreBackend({ path: join(dir, `${schemas.length}-${Date.now()}.db`) });
      await backend.open();
      closers.push(() => backend.close());
      return backend.idempotencyStore();
    },
  },
  {
    name: 'postgres',
    async open() {
      const schema = testSchemaName('stored_first');
      schemas.push(schema);
      const backend = new PostgresEventStoreBackend({
        url: postgresTestUrl(),
        schema,
        poolSize: 4,
        logger: silentLogger,
      });
      await backend.open();
      closers.push(() => backend.close());
      return backend.idempotencyStore();
    },
  },
];

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A store that takes `delayMs` more to record an answer or release a key, and fails when told to. */
class SlowStore implements IdempotencyStore {
  delayMs = 150;
  failComplete = false;
  completed = 0;

  constructor(private readonly inner: IdempotencyStore) {}

  begin(key: string, fingerprint: string): Promise<IdempotencyBeginResult> {
    return this.inner.begin(key, fingerprint);
  }

  async complete(key: string, response: StoredResponse, claim?: string): Promise<void> {
    await sleep(this.delayMs);
    if (this.failComplete) throw new Error('connection to the store lost');
    await this.inner.complete(key, response, claim);
    this.completed++;
  }

  async abandon(key: string, claim?: string): Promise<void> {
    await sleep(this.delayMs);
    await this.inner.abandon(key, claim);
  }
}

const silent: ProblemLogger = { error: () => {} };

interface Runs {
  [route: string]: number;
}

const count = (runs: Runs, route: string): number => {
  runs[route] = (runs[route] ?? 0) + 1;
  return runs[route];
};

/** A route, and whether its answer is streamed (part of it leaves before the end). */
interface Route {
  readonly path: string;
  readonly streamed: boolean;
}

async function startFastify(store: IdempotencyStore, runs: Runs, logger: ProblemLogger): Promise<string> {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store }, logger });
  app.post('/orders', async (_req, reply) => {
    reply.code(201).header('location', '/orders/1');
    return { order: count(runs, 'orders') };
  });
  app.post('/send', async (_req, reply) => {
    // Sent without returning the reply.
    reply.code(201).send({ order: count(runs, 'send') });
  });
  app.post('/hijack', (_req, reply) => {
    const run = count(runs, 'hijack');
    reply.hijack();
    reply.raw.writeHead(201, { 'content-type': 'text/plain' });
    reply.raw.end(`hijacked-${run}`);
  });
  app.post('/stream', async (_req, reply) => {
    const run = count(runs, 'stream');
    reply.code(201).type('text/plain');
    return Readable.from(['order-', String(run)]);
  });
  app.post('/fail', async () => {
    count(runs, 'fail');
    throw new Error('database down');
  });
  app.post('/fail-after', async (_req, reply) => {
    reply.code(201).send({ order: count(runs, 'fail-after') });
    await Promise.resolve();
    throw new Error('failed after answering');
  });
  return listenFastify(app, closers);
}

async function startExpress(store: IdempotencyStore, runs: Runs, logger: ProblemLogger): Promise<string> {
  const app = express();
  app.use(ferryContext());
  app.use(express.json());
  app.use(ferryIdempotency({ store, logger }));
  app.post('/orders', (_req, res) => {
    res
      .status(201)
      .location('/orders/1')
      .json({ order: count(runs, 'orders') });
  });
  app.post('/write-head', (_req, res) => {
    const run = count(runs, 'write-head');
    res.writeHead(201, { 'content-type': 'text/plain' });
    res.end(`written-${run}`);
  });
  app.post('/stream', (_req, res) => {
    const run = count(runs, 'stream');
    res.status(201).type('text/plain');
    Readable.from(['order-', String(run)]).pipe(res);
  });
  app.post('/fail', () => {
    count(runs, 'fail');
    throw new Error('database down');
  });
  app.post('/fail-after', async (_req, res) => {
    res.status(201).json({ order: count(runs, 'fail-after') });
    await Promise.resolve();
    throw new Error('failed after answering');
  });
  app.use(ferryErrors({ logger }));
  return listenNode(createServer(app), closers);
}

const frameworks = [
  {
    name: 'fastify',
    start: startFastify,
    routes: [
      { path: 'orders', streamed: false },
      { path: 'send', streamed: false },
      { path: 'hijack', streamed: false },
      { path: 'stream', streamed: true },
    ] satisfies Route[],
  },
  {
    name: 'express',
    start: startExpress,
    routes: [
      { path: 'orders', streamed: false },
      { path: 'write-head', streamed: false },
      { path: 'stream', streamed: true },
    ] satisfies Route[],
  },
];

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

async function post(url: string, key: string): Promise<Answer> {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: '{"sku":"A"}',
  });
  return { status: response.statusCode, headers: response.headers, body: await response.body.text() };
}

/**
 * Sends a keyed POST and, the instant the client has the answer (its headers, or for a streamed
 * answer its last byte), the same request again. Resolves both answers.
 */
function postThenRetryAtOnce(url: string, key: string, streamed: boolean): Promise<[Answer, Answer]> {
  return new Promise((resolve, reject) => {
    const first = httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
    });
    first.on('error', reject);
    first.on('response', (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let retry: Promise<Answer> | undefined = streamed ? undefined : post(url, key);
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', reject);
      response.on('end', () => {
        retry ??= post(url, key);
        const answer: Answer = {
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString(),
        };
        retry.then((again) => resolve([answer, again]), reject);
      });
    });
    first.end('{"sku":"A"}');
  });
}

describe.each(backends)('Idempotency-Key on the $name store: stored before it is sent', (backend) => {
  describe.each(frameworks)('with $name', ({ name, start, routes }) => {
    async function setup(logger: ProblemLogger = silent) {
      const store = new SlowStore(await backend.open());
      const runs: Runs = {};
      const url = await start(store, runs, logger);
      return { store, runs, url };
    }

    it('replays the answer to a retry sent the instant the client has it', async () => {
      const { store, runs, url } = await setup();
      for (const { path, streamed } of routes) {
        for (const round of [1, 2]) {
          const key = `${path}-${round}`;
          const [first, retry] = await postThenRetryAtOnce(`${url}/${path}`, key, streamed);
          expect(first.status, `${path}: the first answer`).toBe(201);
          expect(first.headers['idempotent-replayed']).toBeUndefined();
          expect(
            [retry.status, retry.headers['idempotent-replayed'], retry.body],
            `${path}, round ${round}: the retry`,
          ).toEqual([201, 'true', first.body]);
          expect(retry.headers['content-type']).toBe(first.headers['content-type']);
        }
        expect(runs[path], path).toBe(2);
      }
      expect(store.completed).toBe(routes.length * 2);
    });

    it('runs again a retry sent the instant the client has a 5xx: its key was released first', async () => {
      const { runs, url } = await setup();
      const [first, retry] = await postThenRetryAtOnce(`${url}/fail`, 'fail-1', false);
      expect(first.status).toBe(500);
      expect(retry.status).toBe(500);
      expect(runs.fail).toBe(2);
    });

    it('sends the answer of a handler that failed after answering, and replays it', async () => {
      const logged: unknown[] = [];
      const { runs, url } = await setup({ error: (_message, fields) => logged.push(fields) });
      const first = await post(`${url}/fail-after`, 'after-1');
      expect([first.status, first.body]).toEqual([201, '{"order":1}']);
      const retry = await post(`${url}/fail-after`, 'after-1');
      expect([retry.status, retry.headers['idempotent-replayed'], retry.body]).toEqual([
        201,
        'true',
        '{"order":1}',
      ]);
      expect(runs['fail-after']).toBe(1);
      // Fastify logs it with its own logger.
      if (name === 'express') {
        expect(logged).toContainEqual(expect.objectContaining({ error: 'failed after answering' }));
      }
    });

    it('answers 500 instead of an answer the store failed to keep, and holds the key', async () => {
      const logged: unknown[] = [];
      const { store, runs, url } = await setup({ error: (_message, fields) => logged.push(fields) });
      store.failComplete = true;
      for (const { path } of routes.filter((r) => !r.streamed)) {
        const first = await post(`${url}/${path}`, `lost-${path}`);
        expect(first.status, path).toBe(500);
        expect(first.headers['content-type']).toBe('application/problem+json');
        expect(first.headers.location).toBeUndefined();
        expect(first.headers['x-correlation-id']).toEqual(expect.any(String));
        expect(JSON.parse(first.body)).toMatchObject({
          status: 500,
          code: 'IDEMPOTENCY_STORE_FAILED',
          instance: `/${path}`,
        });
        expect(JSON.stringify(JSON.parse(first.body))).not.toContain('connection to the store lost');
        // The handler ran: its key stays held rather than letting a retry run it at once.
        const retry = await post(`${url}/${path}`, `lost-${path}`);
        expect(retry.status, path).toBe(409);
        expect(runs[path]).toBe(1);
      }
      expect(logged).toContainEqual(expect.objectContaining({ error: 'connection to the store lost' }));
    });

    it('cuts a streamed answer the store failed to keep short, so that the client sees no complete answer', async () => {
      const { store, runs, url } = await setup();
      store.failComplete = true;
      await expect(post(`${url}/stream`, 'lost-stream')).rejects.toThrow();
      expect((await post(`${url}/stream`, 'lost-stream')).status).toBe(409);
      expect(runs.stream).toBe(1);
    });
  });
});
