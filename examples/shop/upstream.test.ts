import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestInit } from 'ferry';
import { afterEach, describe, expect, it } from 'vitest';
import { nothingWasSent, PROBE_PATH, Upstream, type UpstreamOptions } from './upstream.js';

const servers: Server[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** An instance in a process of its own, to be frozen (SIGSTOP) and killed (SIGKILL) as a service is. */
async function processInstance(): Promise<{ url: string; child: ChildProcess }> {
  const server = `const s = require('node:http').createServer((q, r) => { q.resume(); q.on('end', () => r.end('{}')); });
    s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
  const child = spawn(process.execPath, ['-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const port = await new Promise<string>((resolve) =>
    child.stdout?.once('data', (data: Buffer) => resolve(data.toString().trim())),
  );
  return { url: `http://127.0.0.1:${port}`, child };
}

/**
 * A local instance that counts the requests it gets (probes aside); `answers` false: it never
 * answers (a frozen process).
 */
async function instance(answers: boolean): Promise<{ url: string; received: () => number }> {
  let received = 0;
  const server = createServer((request, response) => {
    if (request.url !== PROBE_PATH) received++;
    if (answers) setTimeout(() => response.end('{}'), 20);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received: () => received };
}

/**
 * A local instance that can be paused (a SIGSTOPped process: requests are taken and held) and
 * resumed (held requests are answered); answers after `delayMs`; records the path of every request.
 */
async function pausable(
  delayMs = 5,
): Promise<{ url: string; paths: () => string[]; probes: () => number[]; pause(): void; resume(): void }> {
  const paths: string[] = [];
  const probes: number[] = [];
  let held: (() => void)[] | undefined;
  const server = createServer((request, response) => {
    paths.push(request.url ?? '');
    if (request.url === PROBE_PATH) probes.push(performance.now());
    const answer = () => response.end('{}');
    if (held === undefined) setTimeout(answer, delayMs);
    else held.push(answer);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    paths: () => [...paths],
    probes: () => [...probes],
    pause() {
      held ??= [];
    },
    resume() {
      for (const answer of held ?? []) answer();
      held = undefined;
    },
  };
}

/** A request Upstream never sends twice. */
const UNHEDGED = { method: 'POST', path: '/orders' } as const;

/**
 * A paused instance (first) beside one that answers, and an upstream over both whose first request,
 * a POST, the paused one left unanswered: it is passed over from then on. The caller closes it.
 */
async function oneSilent(options: UpstreamOptions) {
  const silent = await pausable();
  const healthy = await instance(true);
  const upstream = new Upstream('orders', [silent.url, healthy.url], options);
  silent.pause();
  await expect(upstream.request(UNHEDGED)).rejects.toThrow();
  return { silent, upstream };
}

/**
 * Sends `init` through `upstream` while `doomed` (its first instance, which takes it) is frozen, and
 * SIGKILLs that process `afterMs` later: the call's outcome, an answer or the error it failed with.
 */
async function sentToDying(
  upstream: Upstream,
  doomed: { child: ChildProcess },
  init: RequestInit,
  afterMs: number,
): Promise<unknown> {
  doomed.child.kill('SIGSTOP');
  const call = upstream.request(init).catch((e: unknown) => e);
  await new Promise((resolve) => setTimeout(resolve, afterMs));
  doomed.child.kill('SIGKILL');
  return await call;
}

describe('Upstream', () => {
  it('names its instances as the supervisor names their processes: orders#0, orders#1; one alone by its service', async () => {
    const two = new Upstream('orders', ['http://127.0.0.1:1', 'http://127.0.0.1:2']);
    const one = new Upstream('users', ['http://127.0.0.1:3']);
    try {
      expect(two.clients.map((c) => c.name)).toEqual(['orders#0', 'orders#1']);
      expect(one.clients.map((c) => c.name)).toEqual(['users']);
    } finally {
      await Promise.all([two.close(), one.close()]);
    }
  });

  /** `count` GET requests to `upstream`, one every 10 ms; resolves their statuses (0: failed) once all have settled. */
  async function burst(upstream: Upstream, count: number): Promise<number[]> {
    const calls: Promise<number>[] = [];
    for (let i = 0; i < count; i++) {
      calls.push(
        upstream.request({ method: 'GET', path: '/orders/1' }).then(
          (response) => response.status,
          () => 0,
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return await Promise.all(calls);
  }

  it('passes over an instance that stopped answering, while its requests wait, for the fewest-busy one that answers', async () => {
    // Before, requests went to each instance in turn: every second one waited for its time limit
    // behind the frozen instance until that instance's breaker opened.
    const frozen = await instance(false);
    const healthy = await instance(true);
    const upstream = new Upstream('orders', [frozen.url, healthy.url], { timeoutMs: 1500, stallMs: 300 });
    try {
      const first = burst(upstream, 20);
      // (Waited for, not timed: on a loaded machine the request may reach the server late.)
      for (let waited = 0; frozen.received() === 0 && waited < 2000; waited += 10) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      // The frozen instance has had requests under way for less than stallMs: it takes one now and
      // then, while it has fewer under way than the other.
      const early = frozen.received();
      expect(early).toBeGreaterThanOrEqual(1);
      expect(early).toBeLessThanOrEqual(4);
      await new Promise((resolve) => setTimeout(resolve, 400));
      // Past stallMs without an answer: nothing more goes to it.
      const before = frozen.received();
      await burst(upstream, 30);
      expect(frozen.received()).toBe(before);
      // The few it took were sent again to the other once it had answered nothing for stallMs.
      expect(await first).toEqual(Array(20).fill(200));
      expect(healthy.received()).toBe(50);
    } finally {
      await upstream.close();
    }
  });

  it("passes over an instance whose request got no answer until it answers a probe, sending it no caller's request meanwhile", async () => {
    // Before, it was passed over for coolDownMs and then tried again with callers' requests: with a
    // frozen process, one or more of them waited for their time limit every coolDownMs.
    // The first request went to the first instance, and timed out (a POST: not sent twice).
    const { silent: flaky, upstream } = await oneSilent({ timeoutMs: 300, stallMs: 200, coolDownMs: 300 });
    try {
      expect(flaky.paths()).toEqual(['/orders']);
      // 1.5 s of requests: five cool-downs. It is asked GET /health/live, never a caller's request.
      await burst(upstream, 100);
      const probes = flaky.paths().slice(1);
      expect(probes.length).toBeGreaterThanOrEqual(2);
      expect(new Set(probes)).toEqual(new Set([PROBE_PATH]));
      // Back: the next probe is answered and it takes requests again.
      flaky.resume();
      await burst(upstream, 60);
      expect(flaky.paths().filter((path) => path === '/orders/1').length).toBeGreaterThan(10);
    } finally {
      await upstream.close();
    }
  });

  it('probes a passed-over instance while no calls come in: back, it takes calls at once', async () => {
    // Before, probes went out only as calls were routed: after a quiet spell an instance that had
    // come back was still passed over, and the first calls all went to the other (a frozen one).
    const { silent: flaky, upstream } = await oneSilent({ timeoutMs: 300, stallMs: 200, coolDownMs: 300 });
    try {
      flaky.resume();
      // No calls for a while.
      await new Promise((resolve) => setTimeout(resolve, 900));
      expect(flaky.probes().length).toBeGreaterThanOrEqual(1);
      await Promise.all([
        upstream.request({ method: 'GET', path: '/orders/1' }),
        upstream.request({ method: 'GET', path: '/orders/2' }),
      ]);
      expect(flaky.paths().filter((path) => path.startsWith('/orders/'))).toHaveLength(1);
    } finally {
      await upstream.close();
    }
  });

  it('sends no probe while the instance answers, nor after close; close does not wait for a probe', async () => {
    const flaky = await pausable();
    const healthy = await instance(true);
    const upstream = new Upstream('orders', [flaky.url, healthy.url], {
      timeoutMs: 300,
      stallMs: 5000,
      coolDownMs: 0,
    });
    await burst(upstream, 10);
    expect(flaky.paths()).not.toContain(PROBE_PATH);
    flaky.pause();
    await expect(upstream.request(UNHEDGED)).rejects.toThrow();
    // The next request routed starts a probe that cannot be answered (stallMs 5 s).
    await upstream.request({ method: 'GET', path: '/orders/1' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(flaky.paths().filter((path) => path === PROBE_PATH)).toHaveLength(1);
    const started = performance.now();
    await upstream.close();
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('sends a GET again to another instance when its own has answered nothing for stallMs, and takes that answer', async () => {
    // Before, the GET waited for its time limit (3 s here) and failed: the orders service's lookup
    // of a user at a frozen users instance made the order a 504.
    const frozen = await pausable();
    const healthy = await instance(true);
    const upstream = new Upstream('users', [frozen.url, healthy.url], { timeoutMs: 3000, stallMs: 300 });
    try {
      frozen.pause();
      const started = performance.now();
      const response = await upstream.request({ method: 'GET', path: '/users/1' });
      const took = performance.now() - started;
      expect(response.status).toBe(200);
      expect(frozen.paths().filter((path) => path !== PROBE_PATH)).toEqual(['/users/1']);
      expect(healthy.received()).toBe(1);
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(1500);
      // The frozen instance is passed over now: the next GET goes straight to the other.
      const next = performance.now();
      await upstream.request({ method: 'GET', path: '/users/2' });
      expect(performance.now() - next).toBeLessThan(250);
      expect(frozen.paths().filter((path) => path !== PROBE_PATH)).toEqual(['/users/1']);
    } finally {
      await upstream.close();
    }
  });

  it('sends a POST with an Idempotency-Key again, with its key, to another instance when its own has answered nothing for stallMs', async () => {
    // Before, a POST /orders caught by a frozen orders instance waited for its time limit (10 s in
    // the shop) and the client got a 504, though the key lets the other instance take it safely.
    const frozen = await pausable();
    const keys: (string | undefined)[] = [];
    const healthy = createServer((request, response) => {
      keys.push(request.headers['idempotency-key'] as string | undefined);
      request.resume();
      request.on('end', () =>
        response.writeHead(201, { 'content-type': 'application/json' }).end('{"id":"o1"}'),
      );
    });
    servers.push(healthy);
    await new Promise<void>((resolve) => healthy.listen(0, '127.0.0.1', resolve));
    const healthyUrl = `http://127.0.0.1:${(healthy.address() as AddressInfo).port}`;
    const upstream = new Upstream('orders', [frozen.url, healthyUrl], { timeoutMs: 3000, stallMs: 300 });
    try {
      frozen.pause();
      const started = performance.now();
      const response = await upstream.request({
        method: 'POST',
        path: '/orders',
        body: '{}',
        headers: { 'content-type': 'application/json' },
        idempotencyKey: 'k-1',
      });
      const took = performance.now() - started;
      expect(response.status).toBe(201);
      expect(response.body).toEqual({ id: 'o1' });
      expect(frozen.paths().filter((path) => path !== PROBE_PATH)).toEqual(['/orders']);
      expect(keys).toEqual(['k-1']);
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(1500);
      // The frozen instance answering later changes nothing: the call is settled.
      frozen.resume();
    } finally {
      await upstream.close();
    }
  });

  it('never sends a POST twice, and the GET sent again keeps to what is left of its time limit', async () => {
    const frozen = await pausable();
    const slow = await pausable(2000);
    frozen.pause();
    const posts = new Upstream('orders', [frozen.url, slow.url], { timeoutMs: 1000, stallMs: 300 });
    const gets = new Upstream('users', [frozen.url, slow.url], { timeoutMs: 1000, stallMs: 300 });
    try {
      await expect(posts.request(UNHEDGED)).rejects.toThrow();
      expect(slow.paths()).toEqual([]);
      // Sent again at ~300 ms to the other instance, which answers after 2 s: the call fails at its
      // limit (1 s), not a full limit after the second send.
      const started = performance.now();
      await expect(gets.request({ method: 'GET', path: '/users/1' })).rejects.toThrow();
      expect(performance.now() - started).toBeLessThan(1250);
      expect(slow.paths()).toEqual(['/users/1']);
    } finally {
      await Promise.all([posts.close(), gets.close()]);
    }
  });

  it('probes a silent instance every coolDownMs from the start of the last probe', async () => {
    // Before, the wait began when the probe gave up: every stallMs + coolDownMs (900 ms here).
    const { silent: frozen, upstream } = await oneSilent({ timeoutMs: 300, stallMs: 400, coolDownMs: 500 });
    try {
      await burst(upstream, 220);
      const probes = frozen.probes();
      expect(probes.length).toBeGreaterThanOrEqual(3);
      const gaps = probes.slice(1).map((at, i) => at - (probes[i] as number));
      const median = [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)] as number;
      expect(median).toBeGreaterThanOrEqual(480);
      expect(median).toBeLessThan(700);
    } finally {
      await upstream.close();
    }
  });

  it('never sends a POST without a key to another instance, nor again, when the instance that took it dies unanswering', async () => {
    // Before, the client retried it (with a key of its own the services ignore) on the reset
    // connection, then on the refused one, and the refusal sent it on to the other instance: a
    // product or user registered twice.
    const doomed = await processInstance();
    const healthy = await instance(true);
    const upstream = new Upstream('users', [doomed.url, healthy.url], { timeoutMs: 5000 });
    try {
      const error = await sentToDying(upstream, doomed, { method: 'POST', path: '/users', body: {} }, 500);
      expect(error).toBeInstanceOf(Error);
      // What the gateway turns into 504 "may have been carried out", not 503 "try again".
      expect(nothingWasSent(error)).toBe(false);
      expect(healthy.received()).toBe(0);
    } finally {
      await upstream.close();
    }
  });

  it("fails a keyed POST that reached an instance which died with that instance's error, not a later refusal", async () => {
    // Before, it was retried on the refused connection and moved on to the other instance, refused
    // too (restarting): the call ended ECONNREFUSED, which the gateway answered 503 "try again"
    // although the order may have been placed, and a client trying again without the key placed two.
    const doomed = await processInstance();
    const restarting = 'http://127.0.0.1:1';
    const upstream = new Upstream('orders', [doomed.url, restarting], { timeoutMs: 5000 });
    try {
      const init = { method: 'POST', path: '/orders', idempotencyKey: 'k-2', body: {} };
      const error = await sentToDying(upstream, doomed, init, 500);
      expect(error).toBeInstanceOf(Error);
      expect(nothingWasSent(error)).toBe(false);
    } finally {
      await upstream.close();
    }
  });

  it('keeps a request moved on to another instance within what is left of its time limit', async () => {
    // Before, the next instance had a whole limit of its own: 0.8 s spent, then 1.5 s more.
    const doomed = await processInstance();
    const frozen = await pausable();
    frozen.pause();
    const upstream = new Upstream('orders', [doomed.url, frozen.url], { timeoutMs: 1500 });
    try {
      const started = performance.now();
      const init = { method: 'POST', path: '/orders', idempotencyKey: 'k-1', body: {} };
      expect(await sentToDying(upstream, doomed, init, 800)).toBeInstanceOf(Error);
      expect(performance.now() - started).toBeLessThan(1900);
    } finally {
      await upstream.close();
    }
  });

  it('takes instances in turn while they answer alike', async () => {
    const one = await instance(true);
    const two = await instance(true);
    const upstream = new Upstream('orders', [one.url, two.url]);
    try {
      for (let i = 0; i < 10; i++) await upstream.request({ method: 'GET', path: '/orders/1' });
      expect([one.received(), two.received()]).toEqual([5, 5]);
    } finally {
      await upstream.close();
    }
  });

  it('spreads calls evenly over the instances still answering when one of three is passed over', async () => {
    // Before, the turn of the passed-over instance went to the instance after it: 2:1.
    const frozen = await instance(false);
    const one = await instance(true);
    const two = await instance(true);
    const upstream = new Upstream('orders', [frozen.url, one.url, two.url], {
      timeoutMs: 300,
      coolDownMs: 10_000,
    });
    try {
      await expect(upstream.request(UNHEDGED)).rejects.toThrow();
      expect(frozen.received()).toBe(1);
      for (let i = 0; i < 20; i++) await upstream.request({ method: 'GET', path: '/orders/1' });
      expect([frozen.received(), one.received(), two.received()]).toEqual([1, 10, 10]);
    } finally {
      await upstream.close();
    }
  });

  it('does not count a refusal of work while behind (503 ORDERS_BACKED_UP) against the instance: its breaker stays closed', async () => {
    // Counted, 20 such answers opened the route's breaker, and the gateway answered every order
    // (a replay, a malformed one) with a 503 of its own without asking orders.
    const answer = { code: 'ORDERS_BACKED_UP' as string | undefined };
    const server = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        response.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' });
        response.end(JSON.stringify({ status: 503, title: 'Orders are backed up', code: answer.code }));
      });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const orders = new Upstream('orders', [`http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
    const post = { method: 'POST', path: '/orders', body: '{}', retry: false, route: '/orders' } as const;
    try {
      for (let i = 0; i < 30; i++) expect((await orders.request(post)).status).toBe(503);
      expect(orders.breakers().map((b) => b.state)).toEqual(['closed']);
      // Any other 503 is a failure of the service, as before.
      answer.code = undefined;
      for (let i = 0; i < 30; i++) await orders.request(post).catch(() => undefined);
      expect(orders.breakers().map((b) => b.state)).toEqual(['open']);
    } finally {
      await orders.close();
    }
  });
});
