import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isTimeoutError } from '../resilience/errors.js';
import { ServiceClient, type ServiceClientOptions } from './client.js';

// Each limit is checked against a server that answers late, one that trickles its body and one
// that stalls after the headers, at values below and above a second. A limit must hold within a
// few ms on an idle machine; the bound asserted here leaves room for a loaded CI machine (two
// cores, tests in parallel) and still fails with undici's coarse timers (~0.5–1 s late).
const SLACK_MS = 150;

interface SlowServer {
  readonly url: string;
  /** Requests received, by path, with when the server saw the client close before the answer. */
  readonly seen: { path: string; at: number; closedEarlyAt?: number }[];
  close(): Promise<void>;
}

type Behaviour = (req: IncomingMessage, res: ServerResponse) => void;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** Answers JSON after `ms`. */
const late =
  (ms: number): Behaviour =>
  (_req, res) => {
    const timer = setTimeout(
      () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"late":true}'),
      ms,
    );
    res.once('close', () => clearTimeout(timer));
  };

/** Sends headers at once, then one body byte every `everyMs` for `totalMs`. */
const trickle =
  (everyMs: number, totalMs: number): Behaviour =>
  (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.flushHeaders();
    const started = Date.now();
    const timer = setInterval(() => {
      if (Date.now() - started >= totalMs) {
        clearInterval(timer);
        res.end('.');
      } else res.write('.');
    }, everyMs);
    res.once('close', () => clearInterval(timer));
  };

/** Sends headers and part of the body, then nothing. */
const stall: Behaviour = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
  res.write('{"partial":');
};

async function slowServer(routes: Record<string, Behaviour>): Promise<SlowServer> {
  const seen: SlowServer['seen'] = [];
  const server: Server = createServer((req, res) => {
    const entry: SlowServer['seen'][number] = { path: req.url ?? '', at: Date.now() };
    seen.push(entry);
    res.once('close', () => {
      if (!res.writableFinished) entry.closedEarlyAt = Date.now();
    });
    const route = routes[(req.url ?? '').split('?')[0]!];
    if (route) route(req, res);
    else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const handle = {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  cleanups.push(() => handle.close());
  return handle;
}

function client(url: string, options: ServiceClientOptions = {}): ServiceClient {
  const c = new ServiceClient(url, { breaker: false, ...options });
  cleanups.push(() => c.close());
  return c;
}

/**
 * How long the call `start` makes took to settle, and with what. Timed from before the call: the
 * client arms its timer inside it, and a slow synchronous part (a loaded machine) made the time
 * measured from after the call look shorter than the limit.
 */
async function timed(
  start: () => Promise<unknown>,
): Promise<{ ms: number; error?: unknown; value?: unknown }> {
  const started = performance.now();
  try {
    const value = await start();
    return { ms: performance.now() - started, value };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

function expectWithin(ms: number, limit: number): void {
  expect(ms).toBeGreaterThanOrEqual(limit - 2);
  expect(ms).toBeLessThan(limit + SLACK_MS);
}

describe('ServiceClient per-attempt timeout', () => {
  it.each([50, 200, 300, 1500])('times out at %i ms against a server that answers later', async (limit) => {
    const s = await slowServer({ '/slow': late(limit + 900) });
    const c = client(s.url, { timeout: limit, retry: false });
    // Warm the connection so that the measured attempt is not the first one (which loads undici).
    await c.get('/warm', { timeout: 5000 });
    const result = await timed(() => c.get('/slow'));
    expect(isTimeoutError(result.error)).toBe(true);
    expectWithin(result.ms, limit);
    // The attempt was aborted: the server saw the connection close before it answered.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const slow = s.seen.find((r) => r.path === '/slow')!;
    expect(slow.closedEarlyAt).toBeDefined();
    expect(slow.closedEarlyAt! - slow.at).toBeLessThan(limit + SLACK_MS);
  });

  it('takes a per-call timeout over the client one', async () => {
    const s = await slowServer({ '/slow': late(800) });
    const c = client(s.url, { timeout: 5000, retry: false });
    await c.get('/warm', { timeout: 5000 });
    const result = await timed(() => c.get('/slow', { timeout: 200 }));
    expect(isTimeoutError(result.error)).toBe(true);
    expectWithin(result.ms, 200);
  });

  it('bounds each retried attempt, and the first call (which loads undici) too', async () => {
    const s = await slowServer({ '/slow': late(800) });
    const c = client(s.url, { timeout: 300, retry: { maxAttempts: 3, backoff: () => 10 } });
    const attempts: number[] = [];
    c.on('attempt', () => attempts.push(performance.now()));
    const result = await timed(() => c.get('/slow'));
    expect(isTimeoutError(result.error)).toBe(true);
    expect(attempts).toHaveLength(3);
    // Three attempts of 300 ms and two waits of 10 ms.
    expectWithin(result.ms, 920);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(s.seen.filter((r) => r.path === '/slow' && r.closedEarlyAt !== undefined)).toHaveLength(3);
  });

  it.each([
    [250, 100],
    [1000, 100],
  ])('bounds the body too: times out at %i ms while the body trickles every %i ms', async (limit, every) => {
    const s = await slowServer({ '/trickle': trickle(every, 3000) });
    const c = client(s.url, { timeout: limit, retry: false });
    await c.get('/warm', { timeout: 5000 });
    const result = await timed(() => c.get('/trickle'));
    expect(isTimeoutError(result.error)).toBe(true);
    expectWithin(result.ms, limit);
  });

  it.each([120, 1100])('times out at %i ms when the body stalls after the headers', async (limit) => {
    const s = await slowServer({ '/stall': stall });
    const c = client(s.url, { timeout: limit, retry: false });
    await c.get('/warm', { timeout: 5000 });
    const result = await timed(() => c.get('/stall'));
    expect(isTimeoutError(result.error)).toBe(true);
    expectWithin(result.ms, limit);
  });
});

describe('ServiceClient deadline', () => {
  it.each([300, 1200])(
    'rejects by a %i ms deadline against a slower server, retries included',
    async (deadline) => {
      const s = await slowServer({ '/slow': late(deadline + 500) });
      const c = client(s.url, { retry: { maxAttempts: 3, backoff: () => 10 } });
      await c.get('/warm', { timeout: 5000 });
      const result = await timed(() => c.get('/slow', { deadline }));
      expect(isTimeoutError(result.error)).toBe(true);
      expectWithin(result.ms, deadline);
    },
  );

  it('counts the wait in the bulkhead: a call queued behind a long one rejects at its deadline, unsent', async () => {
    const s = await slowServer({ '/long': late(3000) });
    const c = client(s.url, { retry: false, bulkhead: { maxConcurrent: 1, maxQueue: 10 } });
    await c.get('/warm', { timeout: 5000 });
    const long = c.get('/long').catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const result = await timed(() => c.get('/x', { deadline: 200 }));
    expect(isTimeoutError(result.error)).toBe(true);
    expectWithin(result.ms, 200);
    expect(c.bulkheadStats()).toEqual({ running: 1, queued: 0 });
    expect(s.seen.map((r) => r.path)).not.toContain('/x');
    await c.close();
    await long;
  });

  it('counts the wait in the pool queue: timeout and abort act at once, and the request is never sent', async () => {
    const s = await slowServer({ '/long': late(2500) });
    const c = client(s.url, { retry: false, connections: 1 });
    await c.get('/warm', { timeout: 5000 });
    const long = c.get('/long');
    await new Promise((resolve) => setTimeout(resolve, 20));
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    setTimeout(() => controller.abort(reason), 100);
    const [timedOut, aborted] = await Promise.all([
      timed(() => c.get('/queued-timeout', { timeout: 200 })),
      timed(() => c.get('/queued-abort', { signal: controller.signal })),
    ]);
    expect(isTimeoutError(timedOut.error)).toBe(true);
    expectWithin(timedOut.ms, 200);
    expect(aborted.error).toBe(reason);
    expectWithin(aborted.ms, 100);
    expect(await long).toEqual({ late: true });
    // The queued requests were dropped, not sent once the connection was free; the pool still works.
    expect(await c.get('/after')).toEqual({ ok: true });
    expect(s.seen.map((r) => r.path)).toEqual(['/warm', '/long', '/after']);
  });
});

describe('ServiceClient caller signal', () => {
  it('rejects with the reason at once and aborts the request in flight', async () => {
    const s = await slowServer({ '/slow': late(2000) });
    const c = client(s.url, { retry: false });
    await c.get('/warm', { timeout: 5000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stop')), 100);
    const result = await timed(() => c.get('/slow', { signal: controller.signal }));
    expect((result.error as Error).message).toBe('stop');
    expectWithin(result.ms, 100);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(s.seen.find((r) => r.path === '/slow')!.closedEarlyAt).toBeDefined();
  });

  it('rejects at once for a signal already aborted, sending nothing', async () => {
    const s = await slowServer({});
    const c = client(s.url, { retry: false });
    const result = await timed(() => c.get('/x', { signal: AbortSignal.abort(new Error('already')) }));
    expect((result.error as Error).message).toBe('already');
    expect(s.seen).toHaveLength(0);
  });
});
