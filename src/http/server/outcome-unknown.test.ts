import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../../eventstore/errors.js';
import { UnitOfWorkOutcomeUnknownError } from '../../outbox/errors.js';
import { ferryContext, ferryErrors, ferryIdempotency } from './express.js';
import { ferryFastify } from './fastify.js';
import { type Closers, listenFastify, listenNode } from './fixtures/listen.js';
import { MemoryIdempotencyStore } from './idempotency.js';
import type { ProblemLogger } from './problem.js';

/*
 * A request whose write may have been kept (the database failed as it committed) is answered 500
 * `OUTCOME_UNKNOWN`; under an Idempotency-Key that answer is kept and replayed, so that a retry with
 * the key never runs the request a second time (a charge taken twice). Other 5xx still release it.
 */

const closers: Closers = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

const logged: string[] = [];
const logger: ProblemLogger = { error: (message) => logged.push(message) };

/** What each route throws; `runs` counts the handler's runs by route. */
const failures: Record<string, () => Error> = {
  '/unknown': () =>
    new StoreUnavailableError('postgres', 'the connection broke during COMMIT', { outcomeUnknown: true }),
  '/unit-unknown': () => new UnitOfWorkOutcomeUnknownError(new Error('SQLite rolled the batch back')),
  // Wrapped by the application: the cause still says the outcome is unknown.
  '/wrapped': () =>
    new Error('placing the order failed', {
      cause: new StoreUnavailableError('sqlite', 'disk sync failed after COMMIT', { outcomeUnknown: true }),
    }),
  // Nothing was written: 503, and the key released for a retry.
  '/down': () => new StoreUnavailableError('postgres', 'connection refused'),
  '/bug': () => new TypeError('x is undefined'),
};

async function startFastify(runs: Record<string, number>): Promise<string> {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger });
  for (const [path, failure] of Object.entries(failures)) {
    app.post(path, async () => {
      runs[path] = (runs[path] ?? 0) + 1;
      throw failure();
    });
  }
  return listenFastify(app, closers);
}

async function startExpress(runs: Record<string, number>): Promise<string> {
  const app = express();
  app.use(ferryContext());
  app.use(express.json());
  app.use(ferryIdempotency({ store: new MemoryIdempotencyStore(), logger }));
  for (const [path, failure] of Object.entries(failures)) {
    app.post(path, (_req, _res, next) => {
      runs[path] = (runs[path] ?? 0) + 1;
      next(failure());
    });
  }
  app.use(ferryErrors({ logger }));
  return listenNode(createServer(app), closers);
}

async function post(origin: string, path: string, key?: string) {
  const response = await request(`${origin}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
    body: JSON.stringify({ amount: 100 }),
  });
  const text = await response.body.text();
  return {
    status: response.statusCode,
    replayed: response.headers['idempotent-replayed'],
    type: response.headers['content-type'],
    body: JSON.parse(text) as { code?: string; detail?: string; title?: string },
  };
}

describe.each([
  ['Fastify', startFastify],
  ['Express', startExpress],
])('a write whose outcome is unknown (%s)', (_name, start) => {
  it('answers 500 OUTCOME_UNKNOWN, and replays it for the same key without running the handler again', async () => {
    const runs: Record<string, number> = {};
    const origin = await start(runs);
    for (const path of ['/unknown', '/unit-unknown', '/wrapped']) {
      const first = await post(origin, path, `key${path}`);
      expect(first, path).toMatchObject({ status: 500, body: { code: 'OUTCOME_UNKNOWN' } });
      expect(first.type).toBe('application/problem+json');
      expect(first.body.detail).toMatch(/may have been carried out/);
      const again = await post(origin, path, `key${path}`);
      expect(again, path).toMatchObject({ status: 500, replayed: 'true', body: { code: 'OUTCOME_UNKNOWN' } });
      expect(runs[path], path).toBe(1);
      // Another key is another request: it runs.
      expect((await post(origin, path, `other${path}`)).status).toBe(500);
      expect(runs[path], path).toBe(2);
    }
    expect(logged.some((line) => /outcome is unknown/.test(line))).toBe(true);
  });

  it('still releases the key after a 5xx that wrote nothing, or an unexpected error', async () => {
    const runs: Record<string, number> = {};
    const origin = await start(runs);
    for (const [path, status] of [
      ['/down', 503],
      ['/bug', 500],
    ] as const) {
      const first = await post(origin, path, `key${path}`);
      expect(first.status, path).toBe(status);
      expect(first.body.code, path).not.toBe('OUTCOME_UNKNOWN');
      const again = await post(origin, path, `key${path}`);
      expect(again.replayed, path).toBeUndefined();
      expect(runs[path], path).toBe(2);
    }
  });

  it('answers OUTCOME_UNKNOWN without a key too', async () => {
    const runs: Record<string, number> = {};
    const origin = await start(runs);
    expect(await post(origin, '/unknown')).toMatchObject({ status: 500, body: { code: 'OUTCOME_UNKNOWN' } });
  });
});
