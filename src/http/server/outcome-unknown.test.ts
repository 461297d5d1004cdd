import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../../eventstore/errors.js';
import { BrokerConnectionError } from '../../messaging/errors.js';
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
  // An outcome unknown beside other faults its causes show (a disk full as the log was synced, an
  // outage around it): the request may still have been carried out.
  '/full-unknown': () =>
    new StoreUnavailableError('sqlite', 'the disk sync after COMMIT failed', {
      outcomeUnknown: true,
      cause: Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }),
    }),
  '/unit-full': () =>
    new UnitOfWorkOutcomeUnknownError(
      Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }),
    ),
  '/outage-around': () =>
    new BrokerConnectionError('the broker connection was lost', {
      cause: new UnitOfWorkOutcomeUnknownError(new Error('rolled back')),
    }),
  // Nothing was written: 503, and the key released for a retry.
  '/down': () => new StoreUnavailableError('postgres', 'connection refused'),
  '/bug': () => new TypeError('x is undefined'),
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Fails after 300 ms: past a short deadline, or after its client left. */
const SLOW = '/slow-commit';
const slowFailure = () =>
  new StoreUnavailableError('postgres', 'the connection broke during COMMIT', { outcomeUnknown: true });

async function startFastify(runs: Record<string, number>): Promise<string> {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, logger });
  for (const [path, failure] of Object.entries(failures)) {
    app.post(path, async () => {
      runs[path] = (runs[path] ?? 0) + 1;
      throw failure();
    });
  }
  app.post(SLOW, async () => {
    runs[SLOW] = (runs[SLOW] ?? 0) + 1;
    await sleep(300);
    throw slowFailure();
  });
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
  app.post(SLOW, (_req, _res, next) => {
    runs[SLOW] = (runs[SLOW] ?? 0) + 1;
    setTimeout(() => next(slowFailure()), 300);
  });
  app.use(ferryErrors({ logger }));
  return listenNode(createServer(app), closers);
}

async function post(
  origin: string,
  path: string,
  key?: string,
  more: { headers?: Record<string, string>; signal?: AbortSignal } = {},
) {
  const response = await request(`${origin}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key === undefined ? {} : { 'idempotency-key': key }),
      ...more.headers,
    },
    body: JSON.stringify({ amount: 100 }),
    ...(more.signal === undefined ? {} : { signal: more.signal }),
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
    for (const path of [
      '/unknown',
      '/unit-unknown',
      '/wrapped',
      '/full-unknown',
      '/unit-full',
      '/outage-around',
    ]) {
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

  it('keeps the answer when the deadline passed, or the client left, before the write failed so', async () => {
    const runs: Record<string, number> = {};
    const origin = await start(runs);
    // The caller's deadline (100 ms) passes while the commit is under way.
    const first = await post(origin, SLOW, 'deadline', { headers: { 'x-deadline-ms': '100' } });
    expect(first.body.code).toBe('OUTCOME_UNKNOWN');
    const again = await post(origin, SLOW, 'deadline');
    expect(again).toMatchObject({ status: 500, replayed: 'true', body: { code: 'OUTCOME_UNKNOWN' } });
    expect(runs[SLOW]).toBe(1);
    // The client gives up after 50 ms and hangs up; once the handler ended, its retry gets the answer.
    await expect(post(origin, SLOW, 'left', { signal: AbortSignal.timeout(50) })).rejects.toThrow();
    await sleep(500);
    const retry = await post(origin, SLOW, 'left');
    expect(retry).toMatchObject({ status: 500, replayed: 'true', body: { code: 'OUTCOME_UNKNOWN' } });
    expect(runs[SLOW]).toBe(2);
  });

  it('answers OUTCOME_UNKNOWN without a key too', async () => {
    const runs: Record<string, number> = {};
    const origin = await start(runs);
    expect(await post(origin, '/unknown')).toMatchObject({ status: 500, body: { code: 'OUTCOME_UNKNOWN' } });
  });
});
