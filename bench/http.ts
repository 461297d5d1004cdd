/**
 * `npm run bench:http` — the synchronous half against its baselines, in one run.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   http-get-32       ServiceClient GET (retry, breaker, timeout, bulkhead on) vs raw undici Pool.request and
 *                     vs axios + opossum (the tutorial's stack), 32 concurrent requests against one local server
 *   breaker-overhead  ns per call of a circuit breaker around an already-resolved async function, above a
 *                     bare call: Ferry vs opossum vs cockatiel
 *
 * Ferry is measured as shipped (dist/, built by the npm script), not through the TypeScript loader,
 * whose keep-names helper wraps every closure. The server runs in a child process (the other core). Options: --runs N (default 5), --requests N
 * (per side and run, default 20000), --calls N (breaker case, default 2000000), --only <case>.
 */
import { createServer, Agent as HttpAgent } from 'node:http';
import axios from 'axios';
import { ConsecutiveBreaker, circuitBreaker as cockatielBreaker, handleAll } from 'cockatiel';
import { CircuitBreaker, ServiceClient } from 'ferry';
import CircuitBreakerOpossum from 'opossum';
import { Pool } from 'undici';
import {
  argValue,
  forkServer,
  median,
  onlyCase,
  progress,
  pump,
  report,
  round,
  runBenchmark,
  secondsSince,
} from './support.js';

const RUNS = argValue('runs', 5);
const REQUESTS = argValue('requests', 20_000);
const CALLS = argValue('calls', 2_000_000);
const CONCURRENCY = 32;
const only = onlyCase(['http-get-32', 'breaker-overhead']);

/** The server process: a small JSON answer, keep-alive. */
function serve(): void {
  const body = JSON.stringify({ id: 42, name: 'Ada Lovelace', email: 'ada@example.com', roles: ['admin'] });
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
  });
}

/** The three clients, created once and reused by every run, as long-lived clients are in services. */
interface Clients {
  readonly pool: Pool;
  readonly ferry: ServiceClient;
  readonly axiosGet: (path: string) => Promise<unknown>;
  close(): Promise<void>;
}

function clients(origin: string): Clients {
  const pool = new Pool(origin, { connections: CONCURRENCY });
  const ferry = new ServiceClient(origin, { name: 'users', timeout: 2000, connections: CONCURRENCY });
  // The tutorial's ServiceClient: axios behind an opossum breaker with a timeout.
  const agent = new HttpAgent({ keepAlive: true, maxSockets: CONCURRENCY });
  const http = axios.create({ baseURL: origin, timeout: 2000, httpAgent: agent });
  const breaker = new CircuitBreakerOpossum((path: string) => http.get(path), {
    timeout: 2000,
    errorThresholdPercentage: 50,
    resetTimeout: 30_000,
  });
  return {
    pool,
    ferry,
    axiosGet: (path) => breaker.fire(path),
    async close() {
      breaker.shutdown();
      agent.destroy();
      await Promise.all([pool.close(), ferry.close()]);
    },
  };
}

async function rawUndici({ pool }: Clients, requests: number): Promise<number> {
  const start = performance.now();
  await pump(requests, CONCURRENCY, (_i, done) => {
    pool.request({ method: 'GET', path: '/users/42' }).then(async (res) => {
      await res.body.json();
      done();
    }, done);
  });
  return secondsSince(start);
}

async function ferry({ ferry: client }: Clients, requests: number): Promise<number> {
  const start = performance.now();
  await pump(requests, CONCURRENCY, (_i, done) => {
    client.get('/users/42').then(() => done(), done);
  });
  return secondsSince(start);
}

async function axiosOpossum({ axiosGet }: Clients, requests: number): Promise<number> {
  const start = performance.now();
  await pump(requests, CONCURRENCY, (_i, done) => {
    axiosGet('/users/42').then(() => done(), done);
  });
  return secondsSince(start);
}

/** ns per call of `call` over `n` sequential awaited calls. */
async function nsPerCall(n: number, call: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await call();
  return Number(process.hrtime.bigint() - start) / n;
}

async function breakerCase(): Promise<void> {
  const fn = async () => 1;
  const ferryBreaker = new CircuitBreaker({ name: 'bench' });
  const opossum = new CircuitBreakerOpossum(fn, {
    errorThresholdPercentage: 50,
    resetTimeout: 30_000,
    timeout: false,
  });
  const cockatiel = cockatielBreaker(handleAll, {
    halfOpenAfter: 30_000,
    breaker: new ConsecutiveBreaker(5),
  });
  const sides: Record<string, () => Promise<unknown>> = {
    bare: fn,
    ferry: () => ferryBreaker.execute(fn),
    opossum: () => opossum.fire(),
    cockatiel: () => cockatiel.execute(fn),
  };
  const results: Record<string, number[]> = { bare: [], ferry: [], opossum: [], cockatiel: [] };
  for (const call of Object.values(sides)) await nsPerCall(200_000, call); // warm-up
  for (let run = 1; run <= RUNS; run++) {
    for (const [name, call] of Object.entries(sides)) results[name]!.push(await nsPerCall(CALLS, call));
    progress(
      `breaker-overhead run ${run}/${RUNS}: bare ${round(results.bare!.at(-1)!)} ns, ferry ${round(results.ferry!.at(-1)!)} ns, opossum ${round(results.opossum!.at(-1)!)} ns, cockatiel ${round(results.cockatiel!.at(-1)!)} ns`,
    );
  }
  opossum.shutdown();
  const bare = median(results.bare!);
  const above = (name: string) => round(median(results[name]!.map((v, i) => v - results.bare![i]!)), 1);
  report({
    case: 'breaker-overhead',
    unit: 'ns per call above a bare await',
    calls: CALLS,
    bareNs: round(bare, 1),
    ferry: above('ferry'),
    opossum: above('opossum'),
    cockatiel: above('cockatiel'),
    target: '<= 200 ns',
    pass: above('ferry') <= 200,
    runs: RUNS,
  });
}

async function httpCase(): Promise<void> {
  const { origin, stop } = await forkServer(import.meta.url);
  const all = clients(origin);
  try {
    const sides: [string, (clients: Clients, requests: number) => Promise<number>][] = [
      ['ferry', ferry],
      ['undici', rawUndici],
      ['axiosOpossum', axiosOpossum],
    ];
    const results: Record<string, number[]> = { ferry: [], undici: [], axiosOpossum: [] };
    for (const [, side] of sides) await side(all, 2000); // warm-up: connections, JIT
    // Each run interleaves the sides in short slices and compares neighbouring slices: this machine's
    // speed drifts by a factor of two within seconds (a shared VM), and a slow phase then falls on all
    // sides alike. The ratios are the medians of the per-slice ratios. axios gets smaller slices.
    const SLICES = 10;
    const sliceRatios: { undici: number[]; axios: number[] } = { undici: [], axios: [] };
    for (let run = 1; run <= RUNS; run++) {
      const seconds: Record<string, number> = { ferry: 0, undici: 0, axiosOpossum: 0 };
      const counts: Record<string, number> = { ferry: 0, undici: 0, axiosOpossum: 0 };
      for (let slice = 0; slice < SLICES; slice++) {
        const rates: Record<string, number> = {};
        for (let k = 0; k < sides.length; k++) {
          const [name, side] = sides[(k + slice) % sides.length]!;
          const requests = Math.ceil((name === 'axiosOpossum' ? REQUESTS / 5 : REQUESTS) / SLICES);
          const took = await side(all, requests);
          seconds[name]! += took;
          counts[name]! += requests;
          rates[name] = requests / took;
        }
        sliceRatios.undici.push(rates.ferry! / rates.undici!);
        sliceRatios.axios.push(rates.ferry! / rates.axiosOpossum!);
      }
      for (const [name] of sides) results[name]!.push(counts[name]! / seconds[name]!);
      progress(
        `http-get-32 run ${run}/${RUNS}: ferry ${round(results.ferry!.at(-1)!)} req/s, undici ${round(results.undici!.at(-1)!)}, axios+opossum ${round(results.axiosOpossum!.at(-1)!)}`,
      );
    }
    const vsUndici = median(sliceRatios.undici);
    const vsAxios = median(sliceRatios.axios);
    report({
      case: 'http-get-32',
      unit: 'req/s',
      requests: REQUESTS,
      axiosOpossumRequests: REQUESTS / 5,
      concurrency: CONCURRENCY,
      slices: RUNS * 10,
      ferry: round(median(results.ferry!)),
      baseline: 'raw undici Pool.request',
      baselineValue: round(median(results.undici!)),
      ratio: round(vsUndici, 3),
      target: '>= 0.85x undici, >= 4x axios+opossum',
      axiosOpossum: round(median(results.axiosOpossum!)),
      ratioVsAxiosOpossum: round(vsAxios, 2),
      pass: vsUndici >= 0.85 && vsAxios >= 4,
      runs: RUNS,
    });
  } finally {
    await all.close();
    await stop();
  }
}

if (process.argv.includes('--serve')) serve();
else {
  await runBenchmark('bench:http', async () => {
    process.stderr.write(`ferry bench:http — ${RUNS} runs per case, medians reported\n`);
    if (!only || only === 'http-get-32') await httpCase();
    if (!only || only === 'breaker-overhead') await breakerCase();
  });
}
