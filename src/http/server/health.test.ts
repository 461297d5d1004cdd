import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ferryContext, ferryHealth } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import { createHealth, type HealthRouteOptions } from './health.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

describe('createHealth', () => {
  it('is always live', async () => {
    const health = createHealth({ checks: { db: () => Promise.reject(new Error('down')) } });
    expect(await health.live()).toEqual({ status: 'ok', checks: {} });
  });

  it('is ready when every check passes and no breaker is open', async () => {
    const health = createHealth({
      checks: { db: async () => {}, cache: () => {} },
      breakers: () => [
        { name: 'users', state: 'closed' },
        { name: 'orders', state: 'half-open' },
      ],
    });
    const report = await health.ready();
    expect(report.status).toBe('ok');
    expect(Object.keys(report.checks).sort()).toEqual(['breaker:orders', 'breaker:users', 'cache', 'db']);
    expect(report.checks.db).toEqual({ status: 'ok', durationMs: expect.any(Number) });
  });

  it('is not ready when a check throws, rejects or times out', async () => {
    let aborted = false;
    const health = createHealth({
      timeoutMs: 50,
      checks: {
        sync: () => {
          throw new Error('no config');
        },
        db: () => Promise.reject(new Error('connection refused')),
        slow: (signal) =>
          new Promise<void>((resolve) =>
            signal.addEventListener('abort', () => {
              aborted = true;
              setTimeout(resolve, 100);
            }),
          ),
        fine: () => {},
      },
    });
    const started = Date.now();
    const report = await health.ready();
    expect(Date.now() - started).toBeLessThan(500);
    expect(report.status).toBe('fail');
    expect(report.checks.sync).toMatchObject({ status: 'fail', error: 'no config' });
    expect(report.checks.db).toMatchObject({ status: 'fail', error: 'connection refused' });
    expect(report.checks.slow).toMatchObject({ status: 'fail', error: 'timed out after 50 ms' });
    expect(report.checks.slow?.durationMs).toBeGreaterThanOrEqual(45);
    expect(report.checks.fine?.status).toBe('ok');
    expect(aborted).toBe(true);
  });

  it('is not ready while a breaker is open or isolated', async () => {
    for (const state of ['open', 'isolated']) {
      const report = await createHealth({ breakers: () => [{ name: 'users', state }] }).ready();
      expect(report.status).toBe('fail');
      expect(report.checks['breaker:users']).toEqual({
        status: 'fail',
        error: `circuit ${state}`,
        durationMs: 0,
      });
    }
  });
});

async function startFastify(options: HealthRouteOptions): Promise<string> {
  const app = Fastify();
  ferryFastify(app, { health: options });
  return listenFastify(app, closers);
}

async function startExpress(options: HealthRouteOptions): Promise<string> {
  const app = express();
  app.use(ferryContext());
  app.use(ferryHealth(options));
  const server = createServer(app);
  return listenNode(server, closers);
}

describe.each([
  { name: 'fastify', start: startFastify },
  { name: 'express', start: startExpress },
])('health endpoints with $name', ({ start }) => {
  async function get(url: string) {
    const response = await request(url);
    return {
      status: response.statusCode,
      headers: response.headers,
      body: (await response.body.json()) as never,
    };
  }

  it('answers live with 200 and ready with 200 when all is well', async () => {
    const url = await start({
      checks: { db: () => {} },
      breakers: () => [{ name: 'users', state: 'closed' }],
    });
    const live = await get(`${url}/health/live`);
    expect(live.status).toBe(200);
    expect(live.body).toEqual({ status: 'ok', checks: {} });
    expect(live.headers['cache-control']).toBe('no-store');
    const ready = await get(`${url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({
      status: 'ok',
      checks: { db: { status: 'ok' }, 'breaker:users': { status: 'ok' } },
    });
  });

  it('answers ready with 503 when a check fails, live still 200', async () => {
    const url = await start({ path: '/_', checks: { db: () => Promise.reject(new Error('down')) } });
    expect((await get(`${url}/_/live`)).status).toBe(200);
    const ready = await get(`${url}/_/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ status: 'fail', checks: { db: { status: 'fail', error: 'down' } } });
  });

  it('answers ready with 503 while a breaker is open', async () => {
    let state = 'open';
    const url = await start({ breakers: () => [{ name: 'users', state }] });
    const ready = await get(`${url}/health/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({
      checks: { 'breaker:users': { status: 'fail', error: 'circuit open' } },
    });
    state = 'closed';
    expect((await get(`${url}/health/ready`)).status).toBe(200);
  });
});
