import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runWithContext } from '../context/context.js';
import { isTimeoutError, TimeoutError } from '../resilience/errors.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import type { ServiceClient, ServiceClientOptions } from './client.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { server, client } = clientKit({ retry: { maxAttempts: 3, backoff: () => 10 } });

/** A client whose events are written, in order, into the returned list. */
function observed(url: string, options: ServiceClientOptions = {}): { c: ServiceClient; seen: string[] } {
  const c = client(url, options);
  const seen: string[] = [];
  c.on('attempt', (e) => seen.push(`attempt ${e.path} #${e.attempt}`));
  c.on('response', (e) => seen.push(`response ${e.path} ${e.status}`));
  c.on('retry', (e) => seen.push(`retry ${e.path} #${e.attempt}`));
  c.on('rejection', (e) =>
    seen.push(
      `rejection ${e.method} ${e.path} ${e.reason} ${isTimeoutError(e.error) ? 'TIMEOUT' : String(e.error)}`,
    ),
  );
  return { c, seen };
}

// A call that ends because its deadline passed before an attempt could be sent is a call the client
// gave up without an answer: a `rejection` (reason `deadline`, the TIMEOUT as `error`), whichever
// wait the deadline passed in, and no `attempt` for what was never sent.
describe('ServiceClient events of a call ended by its deadline', () => {
  it('before the call', async () => {
    const s = await server();
    const { c, seen } = observed(`${s.url}/api`);
    const error = await rejection(
      runWithContext({ correlationId: 'c', deadline: Date.now() - 1 }, () =>
        c.get('/orders', { query: { page: 2 } }),
      ),
    );
    expect(isTimeoutError(error)).toBe(true);
    expect(seen).toEqual(['rejection GET /api/orders?page=2 deadline TIMEOUT']);
  });

  it('in the bulkhead queue', async () => {
    const s = await server();
    s.route('GET', '/slow', { status: 200, delayMs: 300, body: {} });
    const { c, seen } = observed(s.url, { bulkhead: { maxConcurrent: 1, maxQueue: 1 } });
    const running = c.get('/slow');
    expect(isTimeoutError(await rejection(c.get('/queued', { deadline: 100 })))).toBe(true);
    await running;
    expect(seen).toEqual([
      'attempt /slow #1',
      'rejection GET /queued deadline TIMEOUT',
      'response /slow 200',
    ]);
  });

  it('between attempts', async () => {
    const s = await server();
    s.setDefault({ status: 503 });
    const { c, seen } = observed(s.url);
    // The process is busy while the call waits to retry (a long GC pause, CPU-bound work) until
    // the deadline has passed.
    c.on('retry', () => {
      const until = Date.now() + 250;
      while (Date.now() < until) {}
    });
    expect(isTimeoutError(await rejection(c.get('/flaky', { deadline: 200 })))).toBe(true);
    expect(seen).toEqual([
      'attempt /flaky #1',
      'response /flaky 503',
      'retry /flaky #1',
      'rejection GET /flaky deadline TIMEOUT',
    ]);
    expect(s.requests).toHaveLength(1);
  });

  it('when a retry is not made because its wait would end past the deadline', async () => {
    const s = await server();
    s.setDefault({ status: 503 });
    const { c, seen } = observed(s.url, { retry: { maxAttempts: 3, backoff: () => 400 } });
    // The call ends with the attempt's own answer (not a TIMEOUT: the deadline has not passed), and
    // the rejection says why there was no retry.
    const error = await rejection(c.get('/flaky', { deadline: 300 }));
    expect((error as { status?: number }).status).toBe(503);
    expect(seen).toEqual([
      'attempt /flaky #1',
      'response /flaky 503',
      `rejection GET /flaky deadline ${String(error)}`,
    ]);
    expect(s.requests).toHaveLength(1);
    // request() hands the answer back, and says the same.
    seen.length = 0;
    const answer = await c.request({ method: 'GET', path: '/again', deadline: 300 });
    expect(answer.status).toBe(503);
    expect(seen.at(-1)).toMatch(/^rejection GET \/again deadline /);
  });

  it('not for a timeout of an attempt in flight, nor for a caller aborting with a TimeoutError of its own', async () => {
    const s = await server();
    s.setDefault({ hang: true });
    const { c, seen } = observed(s.url, { retry: false });
    expect(isTimeoutError(await rejection(c.get('/slow', { timeout: 50 })))).toBe(true);
    expect(isTimeoutError(await rejection(c.get('/cut', { deadline: 50 })))).toBe(true);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new TimeoutError(50, "the caller's own work")), 50);
    expect(isTimeoutError(await rejection(c.get('/aborted', { signal: controller.signal })))).toBe(true);
    expect(seen).toEqual(['attempt /slow #1', 'attempt /cut #1', 'attempt /aborted #1']);
  });
});

// A call whose attempt was sent and failed was made: it ends with that failure, told by `attempt`
// (and `response`, when there was an answer) events, never by a `rejection`, which says the client
// refused the call or gave it up.
describe('ServiceClient events of a call whose attempt failed', () => {
  /** A client whose events are listed, a rejection as its reason and the code of its error. */
  function listed(url: string, options: ServiceClientOptions = {}): { c: ServiceClient; seen: string[] } {
    const c = client(url, options);
    const seen: string[] = [];
    c.on('attempt', (e) => seen.push(`attempt ${e.path} #${e.attempt}`));
    c.on('response', (e) => seen.push(`response ${e.path} ${e.status}`));
    c.on('rejection', (e) =>
      seen.push(`rejection ${e.path} ${e.reason} ${(e.error as { code?: string } | undefined)?.code}`),
    );
    return { c, seen };
  }

  it('with a 2xx body that is not the JSON it claims', async () => {
    const s = await server();
    s.enqueue({ status: 200, body: '{not json', headers: { 'content-type': 'application/json' } });
    const { c, seen } = listed(s.url, { retry: false });
    expect(await rejection(c.get('/x'))).toMatchObject({ code: 'INVALID_RESPONSE_BODY', status: 200 });
    expect(seen).toEqual(['attempt /x #1', 'response /x 200']);
  });

  it('with a 2xx body larger than maxResponseBytes, or a connection error', async () => {
    const s = await server();
    s.enqueue({ status: 200, body: 'x'.repeat(100) }, { reset: true });
    const { c, seen } = listed(s.url, { retry: false, maxResponseBytes: 10 });
    expect(await rejection(c.get('/big'))).toMatchObject({ code: 'RESPONSE_TOO_LARGE' });
    expect(await rejection(c.get('/reset'))).toMatchObject({ code: 'CONNECTION_ERROR' });
    expect(seen).toEqual(['attempt /big #1', 'attempt /reset #1']);
  });

  it('once only, with the refusal as reason, when its retry is refused', async () => {
    const s = await server();
    s.enqueue({ reset: true });
    const { c, seen } = listed(s.url, { retryBudget: { ratio: 0, minRetriesPerSecond: 0 } });
    expect(await rejection(c.get('/reset'))).toMatchObject({ code: 'CONNECTION_ERROR' });
    expect(seen).toEqual(['attempt /reset #1', 'rejection /reset RETRY_BUDGET_EXHAUSTED CONNECTION_ERROR']);
  });
});

describe('a ServiceClient listener that throws', () => {
  it('changes nothing of the call, and its error is not hidden: thrown again on its own, an uncaught exception', async () => {
    // A child process, whose uncaught exceptions it prints: `response` and `breaker` listeners
    // throw on every event, calls answered 503 (the breaker opens) then 200 (it closes again).
    // Before, the client dropped the error without a word.
    const child = spawnFixture(
      fileURLToPath(new URL('./fixtures/throwing-listener.ts', import.meta.url)),
      {},
    );
    const lines: unknown[] = [];
    onLines(child, (line) => void lines.push(JSON.parse(line)));
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(lines).toEqual([
      { uncaught: 'response listener bug (503)' },
      { uncaught: 'breaker listener bug (open)' },
      { status: 503 },
      { uncaught: 'breaker listener bug (half-open)' },
      { uncaught: 'response listener bug (200)' },
      { uncaught: 'breaker listener bug (closed)' },
      { status: 200 },
      { done: true },
    ]);
  }, 20_000);
});
