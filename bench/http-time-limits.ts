/**
 * `npm run bench:http-time-limits` — how close to its limit a ServiceClient call ends, against a
 * server that answers late, one that trickles its body (a byte every 100 ms) and one that stalls
 * after the headers, for limits from 50 ms to 30 s; and the same with a deadline over retried
 * attempts. Baseline in the same run: raw undici `Pool.request` with `headersTimeout` and
 * `bodyTimeout` set to the limit (the mechanism ServiceClient used before).
 *
 * One JSON line per case on stdout (progress on stderr): the median time to the rejection over the
 * runs, how late that is (`lateMs`, median and worst), and the same for the baseline. A case passes
 * when every Ferry call rejected with its TimeoutError (`TIMEOUT`), none before its limit, none more
 * than 20 ms after it, and, for the deadline over retried attempts, after a second attempt. All cases of a run go at once (they are timers, not
 * load), so a run lasts as long as its longest limit. Options: --runs N (default 3), --max-ms N
 * (skip limits above it, default 30000).
 */
import { createServer } from 'node:http';
import { isTimeoutError, ServiceClient } from 'ferry';
import { Pool } from 'undici';
import { argValue, forkServer, median, progress, report, round, runBenchmark } from './support.js';

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
  /** The path a deadline case's retries go to: they must number one per run at least. */
  readonly retriedPath?: string;
}

interface Outcome {
  /** Milliseconds until the call settled. */
  readonly ms: number;
  /** Whether it rejected as the limit requires: any rejection for the baseline, a TimeoutError for Ferry. */
  readonly held: boolean;
}

async function elapsed(
  call: () => Promise<unknown>,
  expected: (error: unknown) => boolean,
): Promise<Outcome> {
  const started = performance.now();
  try {
    await call();
    return { ms: performance.now() - started, held: false };
  } catch (error) {
    return { ms: performance.now() - started, held: expected(error) };
  }
}

/** A timer ends at or after its time; a call measured from just before it may show a fraction less. */
const EARLY_SLACK_MS = 1;

async function main(): Promise<void> {
  const { origin, stop } = await forkServer(import.meta.url);
  const ferry = new ServiceClient(origin, { breaker: false, bulkhead: false, retryBudget: false });
  /** Retries made per path: the deadline cases must have made a second attempt. */
  const retries = new Map<string, number>();
  ferry.on('retry', ({ path }) => retries.set(path, (retries.get(path) ?? 0) + 1));
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
    const lateRetried = `/late?ms=${ms + 1000}&retried=${ms}`;
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
        retriedPath: lateRetried,
        ferry: () =>
          ferry.get(lateRetried, {
            deadline: ms,
            timeout: Math.round(ms * 0.6),
            retry: { maxAttempts: 5, backoff: () => 10 },
          }),
        baseline: rawCall(late, ms),
      },
    );
  }

  const results = new Map<string, { ferry: Outcome[]; baseline: Outcome[] }>(
    cases.map((c) => [c.name, { ferry: [], baseline: [] }]),
  );
  for (let run = 1; run <= RUNS; run++) {
    progress(`run ${run}/${RUNS}: ${cases.length} cases at once, up to ${Math.max(...LIMITS) / 1000} s`);
    await Promise.all(
      cases.flatMap((c) => [
        elapsed(c.ferry, isTimeoutError).then((o) => results.get(c.name)!.ferry.push(o)),
        elapsed(c.baseline, () => true).then((o) => results.get(c.name)!.baseline.push(o)),
      ]),
    );
  }
  for (const c of cases) {
    const { ferry: f, baseline: b } = results.get(c.name)!;
    const late = f.map((o) => o.ms - c.limitMs);
    const baselineLate = b.map((o) => o.ms - c.limitMs);
    const ferryHeld = f.every((o) => o.held);
    const retried = c.retriedPath === undefined ? undefined : (retries.get(c.retriedPath) ?? 0);
    report({
      case: c.name,
      limitMs: c.limitMs,
      ferryMs: round(median(f.map((o) => o.ms)), 1),
      ferryHeld,
      ferryLateMs: round(median(late), 1),
      ferryWorstLateMs: round(Math.max(...late), 1),
      ferryEarliestMs: round(Math.min(...late), 1),
      ...(retried === undefined ? {} : { ferryRetries: retried }),
      baseline: 'raw undici Pool.request, headersTimeout/bodyTimeout = limit',
      baselineMs: round(median(b.map((o) => o.ms)), 1),
      baselineHeld: b.every((o) => o.held),
      baselineLateMs: round(median(baselineLate), 1),
      target: `a TimeoutError, not before the limit and within ${TOLERANCE_MS} ms after it${retried === undefined ? '' : ', after a retry'}`,
      pass:
        ferryHeld &&
        late.every((ms) => ms >= -EARLY_SLACK_MS && ms <= TOLERANCE_MS) &&
        (retried === undefined || retried >= RUNS),
      runs: RUNS,
    });
  }
  await ferry.close();
  await undici.destroy();
  await stop();
}

if (process.argv.includes('--serve')) serve();
else await runBenchmark('bench:http-time-limits', main);
