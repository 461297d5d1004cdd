/**
 * `npm run bench:sqlite-units` — units of work on a SQLite file (WAL, synced off the event loop) against the
 * same transaction done by hand with better-sqlite3, in one process run.
 *
 * One unit of work = append one event to a stream (its expected version checked) + one outbox message:
 *   ferry      `outbox.unitOfWork(w => { w.append(…); w.publish(…) })` on `createEventStore('sqlite:…')`:
 *              units called while one runs share its transaction, one commit for the batch (group commit)
 *   unbatched  the same with `unitOfWorkBatch: { maxUnits: 1 }`: one commit per unit, as before group
 *              commit (reported beside, for the gain)
 *   baseline   better-sqlite3 by hand on Ferry's tables: BEGIN IMMEDIATE, the same two INSERTs, COMMIT,
 *              per unit (synchronous: callers cannot interleave, so concurrency changes nothing)
 * The outbox runs no relay (`relay: false`), so that only the units write to the file.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   sqlite-units-1, sqlite-units-16, sqlite-units-64   C concurrent callers, each doing its share of
 *              `--units` units of work on a stream of its own; units/s from the first to the last
 *   sqlite-append-latency-under-units   64 callers doing units of work back to back while 8 others
 *              `store.append` back to back on the same file: the appends' latency p50/p99 and both
 *              rates, ferry against unbatched (no baseline: by hand there is no second connection)
 *
 * Options: --runs N (default 3, medians reported), --units N (per arm and run, default 3000),
 * --seconds N (the latency case's length, default 2), --only <case>.
 *
 * Ferry comes from the built package (`npm run bench:sqlite-units` builds it first), as in the other benches.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  type Bus,
  createBus,
  createEventStore,
  createOutbox,
  EventStore,
  type Outbox,
  silentLogger,
} from 'ferry';
import { SqliteEventStoreBackend } from 'ferry/sqlite';
import {
  argValue,
  median,
  onCleanup,
  onlyCase,
  progress,
  report,
  round,
  runBenchmark,
  secondsSince,
} from './support.js';

const RUNS = argValue('runs', 3);
const UNITS = argValue('units', 3000);
const SECONDS = argValue('seconds', 2);
const CONCURRENCIES = [1, 16, 64];
const LATENCY_UNIT_CALLERS = 64;
const LATENCY_APPENDERS = 8;
const only = onlyCase([
  ...CONCURRENCIES.map((c) => `sqlite-units-${c}`),
  'sqlite-append-latency-under-units',
]);
const wanted = (name: string) => !only || only === name;
const TYPE = 'bench.order.placed';
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};

type Arm = 'ferry' | 'unbatched';

interface Env {
  readonly store: EventStore;
  readonly outbox: Outbox;
  readonly bus: Bus;
}

async function openFerry(path: string, arm: Arm): Promise<Env> {
  let store: EventStore;
  if (arm === 'ferry') {
    store = await createEventStore({ url: `sqlite:${path}`, logger: silentLogger });
  } else {
    const backend = new SqliteEventStoreBackend({ path, unitOfWorkBatch: { maxUnits: 1 } });
    await backend.open();
    store = new EventStore(backend);
  }
  const bus = await createBus({
    url: `memory://bench-units-${randomUUID()}`,
    service: 'bench',
    logger: silentLogger,
  });
  const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: false });
  // Opens the units' connection before the clock starts: the baseline's is open too. (Its opening
  // needs the event loop, which appenders awaiting only uncontended appends would never yield.)
  await outbox.unitOfWork((work) => work.append('warm', [{ type: 'Warm', data: {} }]));
  return { store, outbox, bus };
}

async function closeFerry(env: Env): Promise<void> {
  await env.outbox.close();
  await env.bus.close();
  await env.store.close();
}

/** `callers` loops, each doing `perCaller` units on a stream of its own; `unit(c, i)` does unit i of caller c. */
async function concurrently(
  callers: number,
  perCaller: number,
  unit: (caller: number, i: number) => Promise<void>,
): Promise<void> {
  await Promise.all(
    Array.from({ length: callers }, async (_, c) => {
      for (let i = 0; i < perCaller; i++) await unit(c, i);
    }),
  );
}

function ferryUnit(env: Env, stream: string, i: number): Promise<void> {
  return env.outbox.unitOfWork(async (work) => {
    await work.append(stream, [{ type: 'OrderPlaced', data: payload }], {
      expectedVersion: i === 0 ? 'no_stream' : i - 1,
    });
    await work.publish(TYPE, payload, { key: stream });
  });
}

async function ferryRate(dir: string, arm: Arm, callers: number): Promise<number> {
  const perCaller = Math.ceil(UNITS / callers);
  const env = await openFerry(join(dir, `${arm}-${callers}.db`), arm);
  try {
    const start = performance.now();
    await concurrently(callers, perCaller, (c, i) => ferryUnit(env, `order-${c}`, i));
    return (perCaller * callers) / secondsSince(start);
  } finally {
    await closeFerry(env);
  }
}

/** The same transaction by hand: Ferry's tables (a store created them), the same two rows per unit. */
async function baselineRate(dir: string, callers: number): Promise<number> {
  const perCaller = Math.ceil(UNITS / callers);
  const path = join(dir, `baseline-${callers}.db`);
  await (await createEventStore({ url: `sqlite:${path}`, logger: silentLogger })).close();
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    const insertEvent = db.prepare(
      `INSERT INTO ferry_events (stream_id, version, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertMessage = db.prepare(
      'INSERT INTO ferry_outbox (id, key, envelope, created_at, due_at) VALUES (?, ?, ?, ?, ?)',
    );
    const start = performance.now();
    await concurrently(callers, perCaller, async (c, i) => {
      const stream = `order-${c}`;
      const now = Date.now();
      const id = randomUUID();
      db.exec('BEGIN IMMEDIATE');
      insertEvent.run(
        stream,
        i,
        randomUUID(),
        'OrderPlaced',
        JSON.stringify(payload),
        '{}',
        new Date(now).toISOString(),
      );
      insertMessage.run(id, stream, JSON.stringify({ id, type: TYPE, data: payload }), now, now);
      db.exec('COMMIT');
      // The same turn of the event loop as an awaited unit of work, so both sides pay for a promise.
      await Promise.resolve();
    });
    return (perCaller * callers) / secondsSince(start);
  } finally {
    db.close();
  }
}

interface UnderUnits {
  readonly unitsPerSecond: number;
  readonly appendsPerSecond: number;
  readonly p50: number;
  readonly p99: number;
}

/** Units of work back to back from 64 callers while 8 others append back to back, for `SECONDS`. */
async function appendsUnderUnits(dir: string, arm: Arm): Promise<UnderUnits> {
  const env = await openFerry(join(dir, `latency-${arm}.db`), arm);
  try {
    const until = performance.now() + SECONDS * 1000;
    let units = 0;
    const latencies: number[] = [];
    const start = performance.now();
    await Promise.all([
      ...Array.from({ length: LATENCY_UNIT_CALLERS }, async (_, c) => {
        for (let i = 0; performance.now() < until; i++) {
          await ferryUnit(env, `order-${c}`, i);
          units++;
        }
      }),
      ...Array.from({ length: LATENCY_APPENDERS }, async (_, a) => {
        for (let i = 0; performance.now() < until; i++) {
          const at = performance.now();
          await env.store.append(`append-${a}`, [{ type: 'Tick', data: { i } }], {
            expectedVersion: i === 0 ? 'no_stream' : i - 1,
          });
          latencies.push(performance.now() - at);
        }
      }),
    ]);
    const seconds = secondsSince(start);
    latencies.sort((x, y) => x - y);
    const at = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
    return {
      unitsPerSecond: units / seconds,
      appendsPerSecond: latencies.length / seconds,
      p50: at(50),
      p99: at(99),
    };
  } finally {
    await closeFerry(env);
  }
}

async function main(): Promise<void> {
  process.stderr.write(`ferry bench:sqlite-units — ${RUNS} runs, medians reported, ${UNITS} units per arm\n`);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-units-'));
  const removeDir = onCleanup(dir, () => rmSync(dir, { recursive: true, force: true }));
  try {
    // Warm-up, not counted: the driver, the JIT and the file system's caches start cold.
    await ferryRate(dir, 'ferry', 16);
    await ferryRate(dir, 'unbatched', 16);
    await baselineRate(dir, 16);
    for (const callers of CONCURRENCIES) {
      const name = `sqlite-units-${callers}`;
      if (!wanted(name)) continue;
      const got: Record<Arm | 'baseline', number[]> = { ferry: [], unbatched: [], baseline: [] };
      for (let run = 1; run <= RUNS; run++) {
        const runDir = mkdtempSync(join(dir, 'run-'));
        // Rotated, so that none always meets a warmer disk.
        const order = ['ferry', 'unbatched', 'baseline'] as const;
        for (let k = 0; k < order.length; k++) {
          const arm = order[(k + run) % order.length]!;
          got[arm].push(
            arm === 'baseline' ? await baselineRate(runDir, callers) : await ferryRate(runDir, arm, callers),
          );
        }
        rmSync(runDir, { recursive: true, force: true });
        progress(
          `${name} run ${run}/${RUNS}: ferry ${round(got.ferry.at(-1)!)} units/s, unbatched ${round(got.unbatched.at(-1)!)}, by hand ${round(got.baseline.at(-1)!)}`,
        );
      }
      const ratios = got.ferry.map((f, i) => f / got.baseline[i]!);
      const unbatchedRatios = got.unbatched.map((u, i) => u / got.baseline[i]!);
      report({
        case: name,
        unit: 'units/s',
        callers,
        units: Math.ceil(UNITS / callers) * callers,
        measured:
          'outbox.unitOfWork(w => { w.append(stream, [event], { expectedVersion }); w.publish(…) }), no relay',
        ferry: round(median(got.ferry)),
        baseline:
          'better-sqlite3 by hand: BEGIN IMMEDIATE, the same event and outbox INSERTs, COMMIT, per unit',
        baselineValue: round(median(got.baseline)),
        ratio: round(median(ratios), 3),
        unbatched: round(median(got.unbatched)),
        unbatchedRatio: round(median(unbatchedRatios), 3),
        runs: RUNS,
      });
    }
    if (wanted('sqlite-append-latency-under-units')) {
      const got: Record<Arm, UnderUnits[]> = { ferry: [], unbatched: [] };
      for (let run = 1; run <= RUNS; run++) {
        const runDir = mkdtempSync(join(dir, 'run-'));
        for (const arm of run % 2 === 0
          ? (['unbatched', 'ferry'] as const)
          : (['ferry', 'unbatched'] as const)) {
          const result = await appendsUnderUnits(runDir, arm);
          got[arm].push(result);
          progress(
            `sqlite-append-latency-under-units run ${run}/${RUNS} ${arm}: append p50 ${round(result.p50, 2)} ms, p99 ${round(result.p99, 2)} ms, ${round(result.appendsPerSecond)} appends/s, ${round(result.unitsPerSecond)} units/s`,
          );
        }
        rmSync(runDir, { recursive: true, force: true });
      }
      const m = (arm: Arm, f: keyof UnderUnits) => round(median(got[arm].map((r) => r[f])), 2);
      report({
        case: 'sqlite-append-latency-under-units',
        unit: 'ms',
        unitCallers: LATENCY_UNIT_CALLERS,
        appenders: LATENCY_APPENDERS,
        seconds: SECONDS,
        measured: 'store.append latency while units of work run back to back on the same file',
        ferryP50: m('ferry', 'p50'),
        ferryP99: m('ferry', 'p99'),
        ferryAppendsPerSecond: m('ferry', 'appendsPerSecond'),
        ferryUnitsPerSecond: m('ferry', 'unitsPerSecond'),
        unbatchedP50: m('unbatched', 'p50'),
        unbatchedP99: m('unbatched', 'p99'),
        unbatchedAppendsPerSecond: m('unbatched', 'appendsPerSecond'),
        unbatchedUnitsPerSecond: m('unbatched', 'unitsPerSecond'),
        runs: RUNS,
      });
    }
  } finally {
    await removeDir();
  }
}

await runBenchmark('bench:sqlite-units', main);
