/**
 * `npm run bench:shop` — POST /orders through the shop's gateway under load, embedded and
 * distributed, against the tutorial's mini-project (the toy) in the same run.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   toy               the tutorial's mini-project as it stands (express 4, orders in a Map): copied
 *                     from ../shared/seed/mini-project to a temporary folder (never into the
 *                     repository), `npm install` there once (cached in the OS temp dir, keyed by a
 *                     hash of its files), `node app.js` on its fixed port 3000; its orders answer 201
 *                     with what was sent and never end, so it has no time to terminal
 *   toy.durable       the same app.js with one change: createOrder also INSERTs the order into a
 *                     SQLite file (better-sqlite3, WAL, synchronous FULL: synced before the 201), the
 *                     naive way to keep each order durably; a second baseline, informational (the
 *                     shops' `ratio` and target stay against the toy; their `ratioToDurableToy` is
 *                     against this one). The file goes under --data-root, as the shops' do
 *   shop.embedded     `examples/shop/main.ts`: one process, SQLite files in a fresh FERRY_DATA_DIR
 *   shop.distributed  `examples/shop/distributed.ts`: supervised processes on a fresh PostgreSQL
 *                     database (CREATE DATABASE ferry_bench_…, dropped after) and a fresh RabbitMQ
 *                     vhost (deleted after)
 * Each shop starts from its sources (`--conditions=ferry-source --import tsx`) on a free port, with
 * a user and a product of stock 10,000,000 created through the gateway. A case: warm-up (`--warmup`
 * s, its orders left to end), then autocannon with 32 connections POSTing one order of one item for
 * `--duration` s (`--products N`: N such products, the orders naming each in turn). Reported:
 * orders/s (2xx answers per second), p50/p99 latency, the non-2xx answers (a 503 is the shop
 * shedding load) and connection errors; for the shops, every 201's order is then
 * read back (GET /orders/:id, 16 at a time, oldest first) until it is confirmed or cancelled, and
 * `terminalAfterMs` is the time from the end of the load until the last of them ended (the time of
 * its terminal event in its history), `null` when some were still pending at `--cap` s (counted in
 * `pendingAtCap`). Orders whose request was in flight when autocannon stopped have no id here and
 * are not followed.
 *
 * Every case runs once per run, the toy first, so that each run's shop is compared with the toy of
 * the same minutes (this machine's speed drifts); `ratio` is the median of the per-run ratios of
 * orders/s. Rates, latencies and times are medians over the runs; non2xx, errors, timeouts and
 * pendingAtCap are sums over the runs, so that no run's failure is hidden; `perRun` has each run.
 *
 * Options: --runs N (default 3), --duration S (default 10), --warmup S (default 2), --cap S (time
 * allowed for the orders to end, default 120), --only embedded|distributed|toy|toy.durable (a shop
 * case still runs both toys as its baselines, unless --no-baseline), --cpu-prof (profiles every shop process and
 * prints where the time goes during the load and after it; the profiles are kept in the OS temp
 * dir), --data-root DIR (where the shops' data dirs are made, default the OS temp dir; /dev/shm
 * shows the embedded shop without the disk's fsyncs). Environment: FERRY_BENCH_POSTGRES_URL (the
 * server where the database is created, default postgres://postgres@127.0.0.1:5432/postgres),
 * FERRY_TEST_AMQP_URL (the broker, default local guest), FERRY_BENCH_TOY_DIR (the mini-project,
 * default ../shared/seed/mini-project).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { type AddressInfo, createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { Pool } from 'undici';
import { createTestVhost } from '../src/testing/rabbitmq.js';
import {
  argValue,
  errorMessage,
  hasFlag,
  median,
  onCleanup,
  progress,
  report,
  round,
  runBenchmark,
} from './support.js';

const RUNS = argValue('runs', 3);
const DURATION_S = argValue('duration', 10);
const WARMUP_S = argValue('warmup', 2, 0);
const CAP_MS = argValue('cap', 120) * 1000;
const CPU_PROF = hasFlag('cpu-prof');
const PRODUCTS = Math.max(1, argValue('products', 1));
const NO_BASELINE = hasFlag('no-baseline');
const CONNECTIONS = 32;
const POLL_CONCURRENCY = 16;
const TOY_PORT = 3000;
const TARGET_RATIO = 1.0;
const TARGET_TERMINAL_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

const CASES = ['toy', 'toy.durable', 'embedded', 'distributed'] as const;
const isToy = (name: CaseName) => name === 'toy' || name === 'toy.durable';
type CaseName = (typeof CASES)[number];
const argString = (name: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : undefined;
const only = argString('only');
/** Where the shops' data dirs go: e.g. /dev/shm, to see what the shop costs without the disk's fsyncs. */
const DATA_ROOT = argString('data-root') ?? tmpdir();

const REPO = fileURLToPath(new URL('..', import.meta.url));
const TOY_SOURCE =
  process.env.FERRY_BENCH_TOY_DIR ||
  fileURLToPath(new URL('../../shared/seed/mini-project/', import.meta.url));
const PG_ADMIN_URL = process.env.FERRY_BENCH_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

// autocannon ships no types: the part of its programmatic API used here.
interface CannonRequest {
  readonly method: 'POST';
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly onResponse?: (status: number, body: string) => void;
  /** Called before each request: what it answers is sent. */
  readonly setupRequest?: (request: CannonRequest) => CannonRequest;
}
interface CannonResult {
  /** Seconds, as autocannon measured them. */
  readonly duration: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
  readonly '2xx': number;
  readonly statusCodeStats: Record<string, { count: number }>;
  readonly latency: { readonly p50: number; readonly p99: number };
}
const autocannon = createRequire(import.meta.url)('autocannon') as (options: {
  url: string;
  connections: number;
  duration: number;
  requests: CannonRequest[];
}) => Promise<CannonResult>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function tempDir(
  prefix: string,
  root = tmpdir(),
): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(root, prefix));
  return { path, remove: onCleanup(path, () => rm(path, { recursive: true, force: true })) };
}

// ── child processes ───────────────────────────────────────────────────────────────────────────────

interface Child {
  readonly name: string;
  /** The last lines of its output, for the error when it fails. */
  readonly lines: string[];
  /** How many warn / error log lines it wrote, and the first few. */
  warnings: number;
  readonly firstWarnings: string[];
  readonly exited: Promise<string>;
  isRunning(): boolean;
  /** SIGTERM, then SIGKILL after 15 s; resolves once it has exited. */
  stop(): Promise<void>;
}

/** `node <args>` in `cwd`, its output kept (the last 80 lines) rather than shown. */
function startNode(name: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Child {
  const proc: ChildProcess = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let running = true;
  const exited = new Promise<string>((resolve) => {
    proc.once('exit', (code, signal) => {
      running = false;
      resolve(signal ?? `code ${code}`);
    });
    proc.once('error', (error) => {
      running = false;
      resolve(error.message);
    });
  });
  const child: Child = {
    name,
    lines: [],
    warnings: 0,
    firstWarnings: [],
    exited,
    isRunning: () => running,
    stop: onCleanup(`${name} (pid ${proc.pid})`, async () => {
      if (!running) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        progress(`${name} still running ${STOP_TIMEOUT_MS / 1000} s after SIGTERM: SIGKILL`);
        proc.kill('SIGKILL');
      }, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }),
  };
  for (const stream of [proc.stdout, proc.stderr]) {
    let carry = '';
    stream?.on('data', (chunk: Buffer) => {
      const parts = (carry + chunk.toString('utf8')).split('\n');
      carry = parts.pop() ?? '';
      for (const line of parts) {
        if (/\b(warn|error)\b/i.test(line) && child.warnings++ < 5) child.firstWarnings.push(line);
        child.lines.push(line);
        if (child.lines.length > 80) child.lines.shift();
      }
    });
  }
  return child;
}

function failure(child: Child, what: string): Error {
  return new Error(`${child.name} ${what}; its last lines:\n${child.lines.slice(-30).join('\n')}`);
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** Fails clearly when something listens on `port` (the toy's is fixed in its app.js). */
async function ensurePortFree(port: number): Promise<void> {
  const server = createServer();
  try {
    server.listen(port);
    await once(server, 'listening');
  } catch (error) {
    throw new Error(
      `port ${port} is in use (${errorMessage(error)}): the toy listens on ${port}, fixed in its app.js; ` +
        `stop what listens there (ss -ltnp 'sport = :${port}') and run the benchmark again`,
    );
  }
  server.close();
  await once(server, 'close');
}

/** Resolves once GET `url` answers `status` (any status when unset); fails if the child exits or at the limit. */
async function waitFor(child: Child, url: string, limitMs: number, status?: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  for (;;) {
    if (!child.isRunning()) throw failure(child, `exited (${await child.exited}) before it was ready`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await response.arrayBuffer();
      if (status === undefined || response.status === status) return;
    } catch {
      // Not listening yet.
    }
    if (performance.now() > deadline) throw failure(child, `not ready after ${limitMs / 1000} s`);
    await sleep(250);
  }
}

// ── load ──────────────────────────────────────────────────────────────────────────────────────────

interface Load {
  readonly ordersPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly accepted: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly statusCodes: Record<string, number>;
  /** The ids of the orders answered 201, in the order of the answers. */
  readonly ids: string[];
  /** `Date.now()` when autocannon had stopped. */
  readonly endedAt: number;
}

const ID = /"id"\s*:\s*"([^"]+)"/;

/** autocannon, `CONNECTIONS` connections for `seconds`, POST /orders with each of `bodies` in turn. */
async function load(
  origin: string,
  bodies: readonly string[],
  seconds: number,
  collectIds: boolean,
): Promise<Load> {
  const ids: string[] = [];
  let next = 0;
  const request: CannonRequest = {
    method: 'POST',
    path: '/orders',
    headers: { 'content-type': 'application/json' },
    body: bodies[0]!,
    ...(bodies.length > 1
      ? { setupRequest: (r: CannonRequest) => ({ ...r, body: bodies[next++ % bodies.length]! }) }
      : {}),
    ...(collectIds
      ? {
          onResponse: (status: number, answer: string) => {
            if (status !== 201) return;
            const id = ID.exec(answer)?.[1] ?? (JSON.parse(answer) as { id?: string }).id;
            if (id !== undefined) ids.push(id);
          },
        }
      : {}),
  };
  const result = await autocannon({
    url: origin,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [request],
  });
  const endedAt = Date.now();
  const accepted = result['2xx'];
  if (collectIds && ids.length !== accepted) {
    progress(`${accepted} answers 2xx but ${ids.length} order ids read from the 201s`);
  }
  return {
    ordersPerSec: accepted / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    accepted,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: Object.fromEntries(
      Object.entries(result.statusCodeStats).map(([code, { count }]) => [code, count]),
    ),
    ids,
    endedAt,
  };
}

interface Drain {
  /** From the end of the load until the last order's terminal event; null if some were pending at the cap. */
  readonly terminalAfterMs: number | null;
  readonly pendingAtCap: number;
  readonly confirmed: number;
  readonly cancelled: number;
  readonly reasons: Record<string, number>;
  /** GET /orders/:id answered neither 200 nor reached the shop. */
  readonly pollFailures: number;
}

interface OrderAnswer {
  readonly status: 'pending' | 'confirmed' | 'cancelled';
  readonly reason?: string;
  readonly history?: readonly { readonly event: string; readonly at: string }[];
}

/**
 * Reads the orders back, oldest first, `POLL_CONCURRENCY` at a time, until each is confirmed or
 * cancelled: an order still pending is asked again (after 50 ms) before newer ones are, so the
 * polling follows the shop rather than loading it. The time an order ended is its terminal event's.
 */
async function drain(pool: Pool, ids: readonly string[], endedAt: number): Promise<Drain> {
  const deadline = endedAt + CAP_MS;
  const reasons: Record<string, number> = {};
  let confirmed = 0;
  let cancelled = 0;
  let pollFailures = 0;
  let lastEnd = endedAt;
  let carried: string[] = [];
  let cursor = 0;
  while ((carried.length > 0 || cursor < ids.length) && Date.now() < deadline) {
    const fresh = ids.slice(cursor, cursor + POLL_CONCURRENCY - carried.length);
    cursor += fresh.length;
    const batch = [...carried, ...fresh];
    const answers = await Promise.all(
      batch.map(async (id) => {
        try {
          const response = await pool.request({ method: 'GET', path: `/orders/${id}` });
          if (response.statusCode !== 200) {
            await response.body.dump();
            pollFailures++;
            return undefined;
          }
          return (await response.body.json()) as OrderAnswer;
        } catch {
          pollFailures++;
          return undefined;
        }
      }),
    );
    carried = [];
    answers.forEach((order, i) => {
      if (order === undefined || order.status === 'pending') {
        carried.push(batch[i]!);
        return;
      }
      if (order.status === 'confirmed') confirmed++;
      else {
        cancelled++;
        const reason = order.reason ?? 'unknown';
        reasons[reason] = (reasons[reason] ?? 0) + 1;
      }
      const end = order.history?.findLast((h) => h.event === order.status)?.at;
      lastEnd = Math.max(lastEnd, end === undefined ? Date.now() : Date.parse(end));
    });
    if (carried.length > 0) await sleep(50);
  }
  const pendingAtCap = carried.length + ids.length - cursor;
  return {
    terminalAfterMs: pendingAtCap === 0 ? lastEnd - endedAt : null,
    pendingAtCap,
    confirmed,
    cancelled,
    reasons,
    pollFailures,
  };
}

// ── the toy ───────────────────────────────────────────────────────────────────────────────────────

let toyDir: string | undefined;

/** The mini-project installed in the OS temp dir (reused while its package.json and app.js are the same). */
async function installToy(): Promise<string> {
  if (toyDir !== undefined) return toyDir;
  let pkg: Buffer;
  let app: Buffer;
  try {
    [pkg, app] = await Promise.all([
      readFile(join(TOY_SOURCE, 'package.json')),
      readFile(join(TOY_SOURCE, 'app.js')),
    ]);
  } catch (error) {
    throw new Error(
      `the mini-project is not at ${TOY_SOURCE} (set FERRY_BENCH_TOY_DIR): ${errorMessage(error)}`,
    );
  }
  const key = createHash('sha256').update(pkg).update(app).digest('hex').slice(0, 12);
  const dir = join(tmpdir(), `ferry-bench-toy-${key}`);
  const installed = await access(join(dir, 'node_modules', 'express', 'package.json')).then(
    () => true,
    () => false,
  );
  if (!installed) {
    const staging = await tempDir('ferry-bench-toy-install-');
    progress(`toy: npm install in ${staging.path}`);
    await cp(TOY_SOURCE, staging.path, {
      recursive: true,
      filter: (source) => !source.includes('node_modules'),
    });
    await promisify(execFile)('npm', ['install', '--no-audit', '--no-fund'], {
      cwd: staging.path,
      timeout: 300_000,
    });
    await rm(dir, { recursive: true, force: true });
    await rename(staging.path, dir);
    await staging.remove();
  }
  toyDir = dir;
  return dir;
}

/**
 * The toy's app.js, changed to keep each order: `createOrder` INSERTs it into a SQLite file before it
 * returns (WAL, synchronous FULL: the commit is synced), with the better-sqlite3 this repository uses.
 */
async function writeDurableToy(dir: string): Promise<string> {
  const app = await readFile(join(dir, 'app.js'), 'utf8');
  const anchor = 'this.orders.set(order.id, order);';
  if (app.split(anchor).length !== 2) {
    throw new Error(
      `the mini-project's app.js no longer has one "${anchor}": toy.durable cannot be made from it`,
    );
  }
  const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
  const header = [
    `const __Database = require(${JSON.stringify(sqlite)});`,
    'const __db = new __Database(process.env.TOY_DB);',
    "__db.pragma('journal_mode = WAL');",
    "__db.pragma('synchronous = FULL');",
    "__db.exec('CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, body TEXT NOT NULL)');",
    "const __insertOrder = __db.prepare('INSERT INTO orders (id, body) VALUES (?, ?)');",
    '',
  ].join('\n');
  const durable =
    header + app.replace(anchor, `${anchor} __insertOrder.run(order.id, JSON.stringify(order));`);
  const file = join(dir, 'app-durable.js');
  await writeFile(file, durable);
  return 'app-durable.js';
}

async function toyRun(durable: boolean): Promise<Load> {
  const dir = await installToy();
  await ensurePortFree(TOY_PORT);
  let env = process.env;
  let script = 'app.js';
  if (durable) {
    const data = await tempDir('ferry-bench-toy-durable-', DATA_ROOT);
    env = { ...process.env, TOY_DB: join(data.path, 'orders.db') };
    script = await writeDurableToy(dir);
  }
  const toy = startNode(durable ? 'toy.durable' : 'toy', [script], dir, env);
  let result: Load;
  let warmedUp = 0;
  try {
    const origin = `http://127.0.0.1:${TOY_PORT}`;
    await waitFor(toy, origin, 15_000);
    const body = JSON.stringify({ userId: 'bench-user', items: [{ productId: 'green-tea', quantity: 1 }] });
    if (WARMUP_S > 0) warmedUp = (await load(origin, [body], WARMUP_S, false)).accepted;
    result = await load(origin, [body], DURATION_S, false);
  } finally {
    await toy.stop();
  }
  if (durable) {
    // Every 201 of the durable toy is a row of its file: else it would be measured doing less.
    const db = new Database(env.TOY_DB as string, { readonly: true });
    const rows = db.prepare<[], number>('SELECT count(*) FROM orders').pluck().get() ?? 0;
    db.close();
    if (rows < warmedUp + result.accepted) {
      throw new Error(
        `toy.durable answered ${warmedUp + result.accepted} orders 201 but its file holds ${rows}`,
      );
    }
  }
  return result;
}

// ── the shops ─────────────────────────────────────────────────────────────────────────────────────

interface ShopRun extends Load, Drain {
  readonly warnings: number;
}

/** Loaded first by every shop process under --cpu-prof: profiles it, and writes the profile on exit. */
const PROFILER = `
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
const dir = process.env.FERRY_BENCH_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
  const label = process.env.SHOP_SERVICE ?? basename(process.argv[1] ?? 'node').replace(/\\.ts$/, '');
  process.on('exit', () => {
    session.post('Profiler.stop', (error, result) => {
      if (!error) writeFileSync(join(dir, label + '-' + process.pid + '.cpuprofile'), JSON.stringify(result.profile));
    });
  });
}
`;

/** Where the profiles of this invocation go (kept after it, for a closer look). */
let profileDir: string | undefined;

async function createDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `ferry_bench_${randomBytes(5).toString('hex')}`;
  const sql = async (statement: string) => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    try {
      await client.query(statement);
    } finally {
      await client.end();
    }
  };
  await sql(`CREATE DATABASE ${name}`);
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: onCleanup(`database ${name}`, () => sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)),
  };
}

async function expect201(origin: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${origin}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 201) throw new Error(`POST ${path}: ${response.status} ${text}`);
  return JSON.parse(text) as { id: string };
}

async function shopRun(mode: 'embedded' | 'distributed', label: string): Promise<ShopRun> {
  const dir = await tempDir(`ferry-bench-shop-${mode}-`, DATA_ROOT);
  const port = await freePort();
  const adminToken = randomBytes(18).toString('base64url');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    FERRY_DATA_DIR: join(dir.path, 'data'),
    FERRY_ADMIN_TOKEN: adminToken,
    LOG_LEVEL: 'warn',
  };
  delete env.FERRY_BUS_URL;
  delete env.FERRY_DB_URL;
  let database: Awaited<ReturnType<typeof createDatabase>> | undefined;
  let removeVhost: (() => Promise<void>) | undefined;
  let shop: Child | undefined;
  let pool: Pool | undefined;
  const profiles = CPU_PROF ? join(dir.path, 'profiles') : undefined;
  try {
    if (mode === 'distributed') {
      database = await createDatabase();
      const vhost = await createTestVhost('ferry-bench-shop');
      removeVhost = onCleanup(`vhost ${vhost.name}`, () => vhost.dispose());
      env.FERRY_DB_URL = database.url;
      env.FERRY_BUS_URL = vhost.url;
    }
    if (profiles !== undefined) {
      await mkdir(profiles);
      const preload = join(dir.path, 'profiler.mjs');
      await writeFile(preload, PROFILER);
      env.FERRY_BENCH_PROFILE_DIR = profiles;
      env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --import=${pathToFileURL(preload).href}`.trim();
    }
    const entry = mode === 'embedded' ? 'examples/shop/main.ts' : 'examples/shop/distributed.ts';
    const started = performance.now();
    shop = startNode(`shop.${mode}`, ['--conditions=ferry-source', '--import', 'tsx', entry], REPO, env);
    const origin = `http://127.0.0.1:${port}`;
    await waitFor(shop, `${origin}/health`, 180_000, 200);
    progress(`${label}: ready in ${round((performance.now() - started) / 1000, 1)} s`);

    const user = await expect201(origin, '/users', {
      name: 'Bench',
      email: `bench-${Date.now()}@example.com`,
    });
    const bodies: string[] = [];
    for (let i = 0; i < PRODUCTS; i++) {
      const product = await expect201(
        origin,
        '/products',
        { name: `Bench tea ${i + 1}`, price: 450, stock: 10_000_000 },
        { authorization: `Bearer ${adminToken}` },
      );
      bodies.push(JSON.stringify({ userId: user.id, items: [{ productId: product.id, quantity: 1 }] }));
    }
    pool = new Pool(origin, { connections: POLL_CONCURRENCY });
    if (WARMUP_S > 0) {
      const warm = await load(origin, bodies, WARMUP_S, true);
      const settled = await drain(pool, warm.ids, warm.endedAt);
      progress(
        `${label}: warm-up ${warm.accepted} orders, ${round(warm.ordersPerSec)}/s, ended ${settled.terminalAfterMs ?? `— ${settled.pendingAtCap} pending at the cap`} ms after`,
      );
    }
    const loadStartUs = hrUs();
    const measured = await load(origin, bodies, DURATION_S, true);
    const loadEndUs = hrUs();
    const settled = await drain(pool, measured.ids, measured.endedAt);
    const drainEndUs = hrUs();
    await pool.close();
    pool = undefined;
    await shop.stop();
    if (shop.warnings > 0) {
      progress(
        `${label}: the shop logged ${shop.warnings} warnings or errors, first:\n${shop.firstWarnings.join('\n')}`,
      );
    }
    if (profiles !== undefined) {
      await summarizeProfiles(profiles, label, [
        ['load', loadStartUs, loadEndUs],
        ['after the load', loadEndUs, drainEndUs],
      ]);
    }
    return { ...measured, ...settled, warnings: shop.warnings };
  } finally {
    await pool?.close();
    await shop?.stop();
    await removeVhost?.();
    await database?.drop();
    await dir.remove();
  }
}

// ── profiles ──────────────────────────────────────────────────────────────────────────────────────

const hrUs = () => Number(process.hrtime.bigint() / 1000n);

interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
    readonly children?: readonly number[];
  }[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Where a function comes from: a package, a folder of Ferry or of the shop, Node's internals, or V8's own. */
function area(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const pkg = /.*node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
  if (pkg !== undefined) return pkg;
  const local = /\/(src|examples\/shop)\/([^/]+)/.exec(url);
  if (local !== null) return `${local[1] === 'src' ? 'ferry' : 'shop'} ${local[2]}`;
  return url;
}

const AWAITED = ' (after an await)';

/**
 * Who a sample works for: the outermost shop folder on its stack, or the outbox relay (inclusive
 * time). Code resumed after an `await` has no caller on its stack: without a shop folder or the
 * relay on it, it counts by its outermost frame of Ferry or of a package.
 */
function owners(profile: CpuProfile): Map<number, string> {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const labels = new Map<number, string>();
  const root = profile.nodes[0];
  if (root === undefined) return labels;
  const stack: [number, string | undefined][] = [[root.id, undefined]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [id, inherited] = next;
    const node = nodes.get(id)!;
    const { url, functionName } = node.callFrame;
    const shop = /examples\/shop\/([^/]+)\//.exec(url)?.[1];
    const own = url.includes('/src/outbox/relay') ? 'ferry outbox relay' : shop && `shop ${shop}`;
    // A shop folder or the relay deeper down says more than a frame of Ferry's resumed after an await.
    const label =
      inherited !== undefined && !(own && inherited.endsWith(AWAITED))
        ? inherited
        : (own ??
          (url !== '' && !url.startsWith('node:') ? `${area(url, functionName)}${AWAITED}` : undefined));
    labels.set(id, label ?? area(url, functionName));
    for (const child of node.children ?? []) stack.push([child, label]);
  }
  return labels;
}

function shortUrl(url: string): string {
  return url
    .replace(/^file:\/\//, '')
    .replace(`${REPO}`, '')
    .replace(/.*node_modules\//, '');
}

/** Self time by function and by area within each window, for every profile of the run (one per process). */
async function summarizeProfiles(
  dir: string,
  label: string,
  windows: readonly (readonly [string, number, number])[],
): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) {
    progress(`${label}: no CPU profile was written (did the shop exit by itself?)`);
    return;
  }
  profileDir ??= await mkdtemp(join(tmpdir(), 'ferry-bench-shop-profiles-'));
  for (const file of files.sort()) {
    const kept = join(profileDir, `${label.replaceAll(/\W+/g, '-')}-${file}`);
    await cp(join(dir, file), kept);
    const profile = JSON.parse(await readFile(kept, 'utf8')) as CpuProfile;
    const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
    const ownerOf = owners(profile);
    for (const [name, from, to] of windows) {
      const byFunction = new Map<string, number>();
      const byArea = new Map<string, number>();
      const byOwner = new Map<string, number>();
      let total = 0;
      let idle = 0;
      let t = profile.startTime;
      for (let i = 0; i < profile.samples.length; i++) {
        t += profile.timeDeltas[i]!;
        if (t < from || t > to) continue;
        const us = Math.min(profile.timeDeltas[i + 1] ?? 0, 100_000);
        const frame = frames.get(profile.samples[i]!);
        if (frame === undefined) continue;
        total += us;
        if (frame.functionName === '(idle)') {
          idle += us;
          continue;
        }
        const where = area(frame.url, frame.functionName);
        byArea.set(where, (byArea.get(where) ?? 0) + us);
        const owner = ownerOf.get(profile.samples[i]!) ?? '(unknown)';
        byOwner.set(owner, (byOwner.get(owner) ?? 0) + us);
        const fn = `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
        byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
      }
      if (total === 0) continue;
      const busy = total - idle;
      const top = (map: Map<string, number>, n: number) =>
        [...map.entries()]
          .sort((a, b) => b[1] - a[1])
          .slice(0, n)
          .map(([k, us]) => `      ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${k}`)
          .join('\n');
      process.stderr.write(
        `  … ${label} ${file.replace(/-\d+\.cpuprofile$/, '')} during ${name}: busy ${round(busy / 1000)} ms of ${round(total / 1000)} ms (${round((100 * busy) / total)}% of one core)\n` +
          `    by owner (inclusive):\n${top(byOwner, 12)}\n` +
          `    by area (self time):\n${top(byArea, 15)}\n    top functions (self time):\n${top(byFunction, 25)}\n`,
      );
    }
  }
  progress(`${label}: profiles kept in ${profileDir}`);
}

// ── main ──────────────────────────────────────────────────────────────────────────────────────────

/** One run of a case as reported: the load's figures (without its ids and end time), then the shop's. */
interface RunLine extends Omit<Load, 'ids' | 'endedAt'> {
  readonly terminalAfterMs?: number | null;
  readonly pendingAtCap?: number;
  readonly confirmed?: number;
  readonly cancelled?: number;
  readonly reasons?: Record<string, number>;
  readonly pollFailures?: number;
  readonly shopWarnings?: number;
  readonly ratio: number | null;
  /** Shops, when toy.durable ran in the same run: orders/s over its orders/s. */
  readonly ratioToDurableToy?: number;
  readonly load1: number;
}

function runLine(
  result: Load | ShopRun,
  toy: Load | undefined,
  durableToy: Load | undefined,
  load1: number,
): RunLine {
  const common = {
    ordersPerSec: round(result.ordersPerSec),
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    accepted: result.accepted,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: result.statusCodes,
    ratio:
      toy === undefined || toy.ordersPerSec === 0 ? null : round(result.ordersPerSec / toy.ordersPerSec, 3),
    ...(durableToy === undefined || durableToy.ordersPerSec === 0
      ? {}
      : { ratioToDurableToy: round(result.ordersPerSec / durableToy.ordersPerSec, 3) }),
    load1: round(load1, 2),
  };
  if (!('pendingAtCap' in result)) return common;
  return {
    ...common,
    terminalAfterMs: result.terminalAfterMs,
    pendingAtCap: result.pendingAtCap,
    confirmed: result.confirmed,
    cancelled: result.cancelled,
    reasons: result.reasons,
    pollFailures: result.pollFailures,
    shopWarnings: result.warnings,
  };
}

function describeRun(name: string, run: number, line: RunLine): string {
  const end =
    line.pendingAtCap === undefined
      ? ''
      : line.terminalAfterMs === null
        ? `, ${line.pendingAtCap} orders still pending ${CAP_MS / 1000} s after the load`
        : `, every order ended ${line.terminalAfterMs} ms after the load (${line.confirmed} confirmed, ${line.cancelled} cancelled)`;
  return (
    `${name} run ${run}/${RUNS}: ${line.ordersPerSec} orders/s, p50 ${line.p50Ms} ms, p99 ${line.p99Ms} ms, ` +
    `${line.accepted} accepted, ${line.non2xx} non-2xx, ${line.errors} errors` +
    `${line.ratio === null ? '' : `, ${line.ratio}x the toy`}` +
    `${line.ratioToDurableToy === undefined ? '' : `, ${line.ratioToDurableToy}x the durable toy`}${end} (load ${line.load1})`
  );
}

function summarize(name: CaseName, lines: readonly RunLine[]): Record<string, unknown> {
  const med = (pick: (l: RunLine) => number) => median(lines.map(pick));
  const sum = (pick: (l: RunLine) => number) => lines.reduce((n, l) => n + pick(l), 0);
  const statusCodes: Record<string, number> = {};
  for (const line of lines) {
    for (const [code, count] of Object.entries(line.statusCodes)) {
      statusCodes[code] = (statusCodes[code] ?? 0) + count;
    }
  }
  /** The median of a per-run ratio, when every run has one. */
  const medianRatio = (pick: (l: RunLine) => number | null | undefined) => {
    const ratios = lines.map(pick).filter((r): r is number => r !== null && r !== undefined);
    return ratios.length === lines.length && ratios.length > 0 ? round(median(ratios), 3) : null;
  };
  const ratio = medianRatio((l) => l.ratio);
  const ratioToDurableToy = medianRatio((l) => l.ratioToDurableToy);
  const base = {
    case: isToy(name) ? name : `shop.${name}`,
    unit: 'orders/s',
    ordersPerSec: round(med((l) => l.ordersPerSec)),
    p50Ms: round(
      med((l) => l.p50Ms),
      1,
    ),
    p99Ms: round(
      med((l) => l.p99Ms),
      1,
    ),
    accepted: round(med((l) => l.accepted)),
    non2xx: sum((l) => l.non2xx),
    errors: sum((l) => l.errors),
    timeouts: sum((l) => l.timeouts),
    statusCodes,
  };
  const settings = {
    connections: CONNECTIONS,
    durationS: DURATION_S,
    ...(isToy(name) || PRODUCTS === 1 ? {} : { products: PRODUCTS }),
    runs: lines.length,
    load1: lines.map((l) => l.load1),
    ...(CPU_PROF ? { profiled: true } : {}),
    perRun: lines,
  };
  if (isToy(name)) {
    return {
      ...base,
      terminalAfterMs: null,
      pendingAtCap: null,
      ratio: name === 'toy' ? null : ratio,
      note:
        name === 'toy'
          ? 'the toy answers 201 with what was sent; its orders never end'
          : 'the toy with each order INSERTed into SQLite (synchronous FULL) before its 201; ratio: against the toy',
      ...settings,
    };
  }
  const times = lines.map((l) => l.terminalAfterMs ?? null);
  const allEnded = times.every((t) => t !== null);
  const worst = allEnded ? Math.max(...(times as number[])) : null;
  // Every request answered 201 (a 503 is load shed, an error or timeout a lost request), every
  // order followed to its end.
  const clean = lines.every(
    (l) => l.non2xx === 0 && l.errors === 0 && l.timeouts === 0 && l.pollFailures === 0,
  );
  const pass =
    name === 'embedded'
      ? clean && ratio !== null && ratio >= TARGET_RATIO && worst !== null && worst <= TARGET_TERMINAL_MS
      : null;
  return {
    ...base,
    terminalAfterMs: allEnded ? round(median(times as number[])) : null,
    terminalAfterMsMax: worst,
    pendingAtCap: sum((l) => l.pendingAtCap ?? 0),
    confirmed: round(med((l) => l.confirmed ?? 0)),
    cancelled: round(med((l) => l.cancelled ?? 0)),
    reasons: lines.map((l) => l.reasons ?? {}),
    ratio,
    ratioToDurableToy,
    baseline: 'the toy (tutorial mini-project), same run',
    target:
      name === 'embedded'
        ? `>= ${TARGET_RATIO}x the toy's orders/s, every accepted order ended <= ${TARGET_TERMINAL_MS / 1000} s after the load`
        : 'none (reported)',
    pass,
    ...settings,
  };
}

async function main(): Promise<void> {
  if (only !== undefined && !(CASES as readonly string[]).includes(only)) {
    throw new Error(`--only takes ${CASES.join(', ')}, not ${only}`);
  }
  const cases = CASES.filter(
    (c) => only === undefined || c === only || (isToy(c) && only !== undefined && !NO_BASELINE),
  ).filter((c) => !(isToy(c) && NO_BASELINE && c !== only));
  const [load1, load5] = loadavg();
  process.stderr.write(
    `ferry bench:shop — ${cases.join(', ')}; ${RUNS} runs of ${DURATION_S} s at ${CONNECTIONS} connections, medians reported; load average ${round(load1!, 2)} (5 min ${round(load5!, 2)})\n`,
  );
  if (load1! >= 2)
    progress(`the machine is busy (load ${round(load1!, 2)} on 2 cores): figures will be low and noisy`);
  const lines: Record<CaseName, RunLine[]> = { toy: [], 'toy.durable': [], embedded: [], distributed: [] };
  for (let run = 1; run <= RUNS; run++) {
    let toy: Load | undefined;
    let durableToy: Load | undefined;
    for (const name of cases) {
      const load1AtStart = loadavg()[0]!;
      const result = isToy(name)
        ? await toyRun(name === 'toy.durable')
        : await shopRun(name, `shop.${name} run ${run}`);
      if (name === 'toy') toy = result;
      if (name === 'toy.durable') durableToy = result;
      const line = runLine(
        result,
        name === 'toy' ? undefined : toy,
        isToy(name) ? undefined : durableToy,
        load1AtStart,
      );
      lines[name].push(line);
      progress(describeRun(isToy(name) ? name : `shop.${name}`, run, line));
    }
  }
  for (const name of cases) report(summarize(name, lines[name]));
}

await runBenchmark('bench:shop', main);
