/**
 * `npm run bench:http-time-limits` — how close to its limit a ServiceClient call ends, against a
 * server that answers late, one that trickles its body (a byte every 100 ms) and one that stalls
 * after the headers, for limits from 50 ms to 30 s; and the same with a deadline over retried
 * attempts. Baseline in the same run: raw undici `Pool.request` with `headersTimeout` and
 * `bodyTimeout` set to the limit (the mechanism ServiceClient used before).
 *
 * One JSON line per case on stdout (progress on stderr): the median time to the rejection over the
 * runs, how late that is (`lateMs`, median and worst), and the same for the baseline. A case passes
 * when Ferry's worst lateness is within 20 ms. All cases of a run go at once (they are timers, not
 * load), so a run lasts as long as its longest limit. Options: --runs N (default 3), --max-ms N
 * (skip limits above it, default 30000).
 */
import { createServer } from 'node:http';
import { ServiceClient } from 'ferry';
import { Pool } from 'undici';
import { argValue, forkServer, median, progress, report, round } from './support.js';

const RUNS = argValue('runs', 3);
const MAX_MS = argValue('max-ms', 30_000);
const LIMITS = [50, 300, 1000, 3000, 30_000].filter((ms) => ms <= MAX_MS);
const TOLERANCE_MS = 20;

/** The server process: `/late?ms=N` answers after N ms, `/trickle` sends a byte every 100 ms, `/stall` stops. */
function serve(): void {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const timers: NodeJS.Timeout[] = [];
    res.once('close', () => {
      for (const timer of timers) clearTimeout(timer);
    });
    if (url.pathname === '/late') {
      timers.push(setTimeout(() => res.end('{"late":true}'), Number(url.searchParams.get('ms'))));
    } else if (url.pathname === '/trickle') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.flushHeaders();
      const started = Date.now();
      const total = Number(url.searchParams.get('ms'));
      const timer = setInterval(() => {
        if (Date.now() - started < total) res.write('.');
        else res.end('.');
      }, 100);
      timers.push(timer);
    } else if (url.pathname === '/stall') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"partial":');
    } else res.end('{}');
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
  });
}

interface Case {
  readonly name: string;
  readonly limitMs: number;
  readonly ferry: () => Promise<unknown>;
  readonly baseline: () => Promise<unknown>;
}

/** Milliseconds until `call` settles; negative when it resolved (the limit did not hold). */
async function elapsed(call: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  try {
    await call();
    return -(performance.now() - started);
  } catch {
    return performance.now() - started;
  }
}

async function main(): Promise<void> {
  const { child, origin } = await forkServer(import.meta.url);
  const ferry = new ServiceClient(origin, { breaker: false, bulkhead: false, retryBudget: false });
  const undici = new Pool(origin, { connections: 64 });
  await ferry.get('/warm');
  await undici.request({ method: 'GET', path: '/warm' }).then((r) => r.body.text());

  const rawCall = (path: string, ms: number) => () =>
    undici
      .request({ method: 'GET', path, headersTimeout: ms, bodyTimeout: ms })
      .then((response) => response.body.text());
  const cases: Case[] = [];
  for (const ms of LIMITS) {
    const late = `/late?ms=${ms + 1000}`;
    cases.push(
      {
        name: `timeout-late-${ms}`,
        limitMs: ms,
        ferry: () => ferry.get(late, { timeout: ms, retry: false }),
        baseline: rawCall(late, ms),
      },
      {
        name: `timeout-trickle-${ms}`,
        limitMs: ms,
        ferry: () => ferry.get(`/trickle?ms=${ms + 1000}`, { timeout: ms, retry: false }),
        baseline: rawCall(`/trickle?ms=${ms + 1000}`, ms),
      },
      {
        name: `timeout-stall-${ms}`,
        limitMs: ms,
        ferry: () => ferry.get('/stall', { timeout: ms, retry: false }),
        baseline: rawCall('/stall', ms),
      },
      {
        // The first attempt times out at 60% of the deadline; after a 10 ms wait the second one is cut
        // short by the deadline, which ends the call.
        name: `deadline-retried-${ms}`,
        limitMs: ms,
        ferry: () =>
          ferry.get(late, {
            deadline: ms,
            timeout: Math.round(ms * 0.6),
            retry: { maxAttempts: 5, backoff: () => 10 },
          }),
        baseline: rawCall(late, ms),
      },
    );
  }

  const results = new Map<string, { ferry: number[]; baseline: number[] }>(
    cases.map((c) => [c.name, { ferry: [], baseline: [] }]),
  );
  for (let run = 1; run <= RUNS; run++) {
    progress(`run ${run}/${RUNS}: ${cases.length} cases at once, up to ${Math.max(...LIMITS) / 1000} s`);
    await Promise.all(
      cases.flatMap((c) => [
        elapsed(c.ferry).then((ms) => results.get(c.name)!.ferry.push(ms)),
        elapsed(c.baseline).then((ms) => results.get(c.name)!.baseline.push(ms)),
      ]),
    );
  }
  for (const c of cases) {
    const { ferry: f, baseline: b } = results.get(c.name)!;
    const late = f.map((ms) => Math.abs(ms) - c.limitMs);
    const baselineLate = b.map((ms) => Math.abs(ms) - c.limitMs);
    report({
      case: c.name,
      limitMs: c.limitMs,
      ferryMs: round(median(f.map(Math.abs)), 1),
      ferryHeld: f.every((ms) => ms >= 0),
      ferryLateMs: round(median(late), 1),
      ferryWorstLateMs: round(Math.max(...late.map(Math.abs)), 1),
      baseline: 'raw undici Pool.request, headersTimeout/bodyTimeout = limit',
      baselineMs: round(median(b.map(Math.abs)), 1),
      baselineHeld: b.every((ms) => ms >= 0),
      baselineLateMs: round(median(baselineLate), 1),
      target: `within ${TOLERANCE_MS} ms of the limit`,
      pass: f.every((ms) => ms >= 0) && late.every((ms) => Math.abs(ms) <= TOLERANCE_MS),
      runs: RUNS,
    });
  }
  await ferry.close();
  await undici.destroy();
  child.kill();
}

if (process.argv.includes('--serve')) serve();
else await main();
