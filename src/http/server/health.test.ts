import { createServer } from 'node:http';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ferryContext, ferryHealth } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import { createHealth, type HealthRouteOptions } from './health.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const close of closers.splice(0)) await close();
});

/** A check that counts its runs and settles when the test says so. */
function controlledCheck() {
  const runs: { signal: AbortSignal; settle: (error?: Error) => void }[] = [];
  const check = (signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      runs.push({ signal, settle: (error) => (error ? reject(error) : resolve()) });
    });
  return { runs, check };
}

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

  it('runs each check once for concurrent probes, and gives them all its result', async () => {
    const { runs, check } = controlledCheck();
    let fast = 0;
    const health = createHealth({
      checks: {
        db: check,
        cache: () => {
          fast++;
        },
      },
    });
    const probes = Array.from({ length: 20 }, () => health.ready());
    await vi.waitFor(() => expect(runs).toHaveLength(1));
    runs[0]?.settle();
    const reports = await Promise.all(probes);
    expect(runs).toHaveLength(1);
    expect(fast).toBe(1);
    for (const report of reports) expect(report).toEqual(reports[0]);
    expect(reports[0]?.status).toBe('ok');
  });

  it('reuses a result, failed or not, for cacheMs (1000 ms by default), then runs the check again', async () => {
    vi.useFakeTimers();
    let calls = 0;
    let failing = true;
    const health = createHealth({
      checks: {
        db: () => {
          calls++;
          if (failing) throw new Error('down');
        },
      },
    });
    expect((await health.ready()).status).toBe('fail');
    failing = false;
    expect((await health.ready()).checks.db).toMatchObject({ status: 'fail', error: 'down' });
    vi.advanceTimersByTime(999);
    expect((await health.ready()).status).toBe('fail');
    expect(calls).toBe(1);
    vi.advanceTimersByTime(1);
    expect((await health.ready()).status).toBe('ok');
    expect(calls).toBe(2);

    const short = createHealth({ cacheMs: 50, checks: { db: () => void calls++ } });
    await short.ready();
    await short.ready();
    expect(calls).toBe(3);
    vi.advanceTimersByTime(50);
    await short.ready();
    expect(calls).toBe(4);
  });

  it('with cacheMs 0 runs a check for every probe, still sharing concurrent ones', async () => {
    const { runs, check } = controlledCheck();
    const health = createHealth({ cacheMs: 0, checks: { db: check } });
    const first = [health.ready(), health.ready(), health.ready()];
    await vi.waitFor(() => expect(runs).toHaveLength(1));
    runs[0]?.settle();
    await Promise.all(first);
    const second = health.ready();
    await vi.waitFor(() => expect(runs).toHaveLength(2));
    runs[1]?.settle(new Error('down'));
    expect((await second).status).toBe('fail');
    expect(runs).toHaveLength(2);
  });

  it('aborts a check that times out, and starts no other run while it still runs', async () => {
    const { runs, check } = controlledCheck();
    const health = createHealth({ timeoutMs: 50, cacheMs: 0, checks: { db: check } });
    const first = await health.ready();
    expect(first.checks.db).toMatchObject({ status: 'fail', error: 'timed out after 50 ms' });
    expect(runs[0]?.signal.aborted).toBe(true);

    // The check ignores its signal and still runs: probes share that run's (timed-out) result.
    const during = await Promise.all(Array.from({ length: 20 }, () => health.ready()));
    expect(runs).toHaveLength(1);
    for (const report of during) expect(report.checks.db).toMatchObject({ error: 'timed out after 50 ms' });

    // Once it settles, the next probe runs the check again.
    runs[0]?.settle();
    await new Promise((resolve) => setImmediate(resolve));
    const next = health.ready();
    await new Promise((resolve) => setImmediate(resolve));
    expect(runs).toHaveLength(2);
    runs[1]?.settle();
    expect((await next).status).toBe('ok');
  });

  it('refuses a timeout or cache duration that cannot work', () => {
    expect(() => createHealth({ timeoutMs: 0 })).toThrow(/timeoutMs/);
    expect(() => createHealth({ cacheMs: -1 })).toThrow(/cacheMs/);
  });

  it('refuses a check that is not a function and breakers that are not a function, when set up', () => {
    // Readiness failed for ever, or every probe got a 500.
    for (const [options, message] of [
      [{ checks: { db: 'SELECT 1' } }, /health check "db" must be a function .*not "SELECT 1"/],
      [{ checks: [() => 1] }, /health checks must be an object of named check functions/],
      [{ breakers: [] }, /health breakers must be a function giving breakers/],
    ] as const) {
      for (const setUp of [
        () => createHealth(options as never),
        () => ferryHealth(options as never),
        () => ferryFastify(Fastify(), { health: options as never }),
      ]) {
        expect(setUp).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS', message: expect.stringMatching(message) }),
        );
      }
    }
  });

  it('refuses a path the adapters cannot route, when set up', () => {
    // Express never matched these (the readiness route silently absent); Fastify threw its own assertion.
    const bad = [
      5,
      '',
      'x',
      'health',
      '/',
      '/health/',
      '/a//b',
      '/a b',
      '/a?x=1',
      '/a#f',
      '/%61',
      '/:id',
      '/*',
      '/./a',
      '/..',
      null,
    ];
    for (const path of bad) {
      for (const setUp of [
        () => ferryHealth({ path } as never),
        () => ferryFastify(Fastify(), { health: { path } as never }),
      ]) {
        expect(setUp).toThrow(
          expect.objectContaining({
            code: 'INVALID_OPTIONS',
            message: expect.stringMatching(/health path must be/),
          }),
        );
      }
    }
    for (const path of ['/_', '/health', '/_internal/health', '/v1.2/health-probes', '/...']) {
      expect(() => ferryHealth({ path })).not.toThrow();
      expect(() => ferryFastify(Fastify(), { health: { path } })).not.toThrow();
    }
  });

  it('refuses health or idempotency options that are not an object, instead of taking true for {}', () => {
    for (const value of [true, 5, 'yes', null]) {
      for (const options of [{ health: value }, { idempotency: value }]) {
        expect(() => ferryFastify(Fastify(), options as never), JSON.stringify(options)).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS' }),
        );
      }
    }
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

  it('answers under a path of several segments', async () => {
    const url = await start({ path: '/_internal/health-v1.2' });
    expect((await get(`${url}/_internal/health-v1.2/live`)).status).toBe(200);
    expect((await get(`${url}/_internal/health-v1.2/ready`)).status).toBe(200);
  });

  it('runs a check once for 20 concurrent probes', async () => {
    let runs = 0;
    const url = await start({
      checks: {
        db: async () => {
          runs++;
          await new Promise((resolve) => setTimeout(resolve, 100));
        },
      },
    });
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(`${url}/health/ready`)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(runs).toBe(1);
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
