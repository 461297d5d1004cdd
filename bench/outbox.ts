/**
 * `npm run bench:outbox` — the transactional outbox on PostgreSQL + RabbitMQ against the unsafe way
 * (append, commit, then `bus.publish`), in one process run.
 *
 * One unit of work = append one event to a stream + one message. Arms:
 *   outbox         `outbox.unitOfWork(w => { w.append(…); w.publish(…) })`; the relay publishes after
 *                  the commit (claim → publish with confirms → delete)
 *   outbox-append  `outbox.append(stream, [event], { expectedVersion, messages: [message] })`: the
 *                  same, on the storage's fast path, which shares commits with concurrent calls (the
 *                  store's group commit); the relay publishes after the commit
 *   direct-append  `await store.append(…)` then `await bus.publish(…)`: what a service writes without
 *                  an outbox (the store's group commit); the baseline of the ratio and of the target
 *   direct-tx      `await outbox.unitOfWork(w => w.append(…))` then `await bus.publish(…)`: the same
 *                  transaction as the outbox arm without its outbox row (BEGIN, append, COMMIT on a
 *                  pooled client), reported beside it to separate the outbox's cost from group commit
 * Every arm counts a message once the consumer's handler (another bus, same vhost) has it.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   outbox-throughput-16, outbox-throughput-64   C concurrent producers, each doing its share of
 *                  `--messages` units of work on a stream of its own (expected versions); messages/s
 *                  from the first unit of work until the consumer has the last message
 *   outbox-latency  paced, open-loop load (`--rate` msg/s for `--seconds`): per message, commit (the
 *                  unit of work resolved) → consumer's handler for the outbox; publish start (just after
 *                  the commit) → handler for the baselines; p50/p99/max, plus unit start → handler
 *
 * Options: --runs N (default 3, medians reported), --messages N (per throughput arm, default 3000),
 * --rate N (default 300), --seconds N (default 2), --pool N (the store's pool, default 10),
 * --batch N (relay batch size, default the relay's), --keyed (each outbox message keyed by its stream;
 * the direct arms' bus.publish has no key, reported as `outboxKeyed`),
 * --profile (counts relay round trips: claims, rows per claim, publish and delete times),
 * --only <case> (`outbox-throughput` for both concurrencies). Database from FERRY_BENCH_POSTGRES_URL,
 * broker from FERRY_BENCH_AMQP_URL. Each run uses a fresh schema and a fresh vhost, deleted after it.
 *
 * Ferry comes from the built package (`npm run bench:outbox` builds it first), as in the other benches.
 */
import { randomUUID } from 'node:crypto';
import {
  type Bus,
  createBus,
  createEventStore,
  createOutbox,
  type EventStore,
  type Outbox,
  type OutboxStorage,
  silentLogger,
} from 'ferry';
import {
  argValue,
  benchVhost,
  hasFlag,
  median,
  onCleanup,
  onlyCase,
  progress,
  report,
  round,
  runBenchmark,
} from './support.js';

const RUNS = argValue('runs', 3);
const MESSAGES = argValue('messages', 3000);
const RATE = argValue('rate', 300);
const SECONDS = argValue('seconds', 2);
const POOL = argValue('pool', 10);
const BATCH = argValue('batch', 0, 0);
const KEYED = hasFlag('keyed');
const PROFILE = hasFlag('profile');
const CONCURRENCIES = [16, 64];
const PREFETCH = 100;
const TARGET_RATIO = 0.7;
const TARGET_P99_MS = 20;
const only = onlyCase([
  'outbox-throughput',
  ...[16, 64].map((c) => `outbox-throughput-${c}`),
  'outbox-latency',
]);
const pgUrl = process.env.FERRY_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};

type Arm = 'outbox' | 'outbox-append' | 'direct-append' | 'direct-tx';
const ARMS: readonly Arm[] = ['outbox', 'outbox-append', 'direct-append', 'direct-tx'];
const TYPE = 'bench.order.placed';

interface BenchData {
  readonly tag: string;
  readonly n: number;
  /** `performance.now()` when the unit of work started. */
  readonly startedAt: number;
  readonly order: typeof payload;
}

/** What the consumer expects now: the messages of one arm, by index. */
interface Expectation {
  readonly tag: string;
  readonly handledAt: Float64Array;
  received: number;
  readonly done: Promise<void>;
  resolve(): void;
}

function expect(tag: string, total: number): Expectation {
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  return { tag, handledAt: new Float64Array(total).fill(-1), received: 0, done, resolve };
}

/** One run's schema, vhost, store, outbox and buses, shared by the cases of the run. */
interface Env {
  readonly schema: string;
  /** Drops the schema and deletes the vhost (also run on Ctrl-C or a failure). */
  readonly remove: () => Promise<void>;
  readonly store: EventStore;
  readonly outbox: Outbox;
  readonly producer: Bus;
  readonly consumer: Bus;
  current: Expectation | undefined;
  readonly profile: RelayProfile;
}

interface RelayProfile {
  claims: number;
  emptyClaims: number;
  claimedRows: number;
  claimMs: number;
  deletes: number;
  deleteMs: number;
  publishes: number;
  publishMs: number;
}

const emptyProfile = (): RelayProfile => ({
  claims: 0,
  emptyClaims: 0,
  claimedRows: 0,
  claimMs: 0,
  deletes: 0,
  deleteMs: 0,
  publishes: 0,
  publishMs: 0,
});

/** Times the relay's storage calls and publishes by wrapping them on this instance (no change to Ferry). */
function instrument(storage: OutboxStorage, bus: Bus, profile: RelayProfile): void {
  const claim = storage.claim.bind(storage);
  storage.claim = async (...args) => {
    const start = performance.now();
    const rows = await claim(...args);
    profile.claimMs += performance.now() - start;
    profile.claims++;
    if (rows.length === 0) profile.emptyClaims++;
    profile.claimedRows += rows.length;
    return rows;
  };
  const delivered = storage.delivered.bind(storage);
  storage.delivered = async (...args) => {
    const start = performance.now();
    const count = await delivered(...args);
    profile.deleteMs += performance.now() - start;
    profile.deletes++;
    return count;
  };
  const transport = bus.transport;
  const publish = transport.publish.bind(transport);
  transport.publish = async (...args) => {
    const start = performance.now();
    await publish(...args);
    profile.publishMs += performance.now() - start;
    profile.publishes++;
  };
}

async function openEnv(): Promise<Env> {
  const schema = `bench_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  const vhost = await benchVhost('ferry-bench-outbox');
  const dropSchema = onCleanup(`schema ${schema}`, async () => {
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: pgUrl });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).finally(() => client.end());
  });
  const remove = async () => {
    await dropSchema();
    await vhost.remove();
  };
  const store = await createEventStore({
    url: pgUrl,
    postgres: { schema, poolSize: POOL },
    logger: silentLogger,
  });
  const producer = await createBus({ url: vhost.url, service: 'bench', logger: silentLogger });
  const consumer = await createBus({ url: vhost.url, service: 'bench-consumer', logger: silentLogger });
  const outbox = await createOutbox({
    store,
    bus: producer,
    logger: silentLogger,
    ...(BATCH > 0 ? { relay: { batchSize: BATCH } } : {}),
  });
  const env: Env = {
    schema,
    remove,
    store,
    outbox,
    producer,
    consumer,
    current: undefined,
    profile: emptyProfile(),
  };
  if (PROFILE) instrument(outbox.storage, producer, env.profile);
  await consumer.subscribe(
    TYPE,
    (message) => {
      const data = message.data as BenchData;
      const current = env.current;
      if (current === undefined || data.tag !== current.tag) return;
      if (current.handledAt[data.n]! >= 0) return; // a redelivery
      current.handledAt[data.n] = performance.now();
      if (++current.received === current.handledAt.length) current.resolve();
    },
    { group: 'bench', concurrency: PREFETCH },
  );
  return env;
}

async function closeEnv(env: Env): Promise<void> {
  try {
    await env.outbox.close();
    await env.producer.close();
    await env.consumer.close();
    await env.store.close();
  } finally {
    await env.remove();
  }
}

/**
 * One unit of work of `arm`; resolves the `performance.now()` reading the latency is counted from:
 * the commit for the outbox, the start of `bus.publish` (just after the commit) for the baselines.
 */
async function unit(env: Env, arm: Arm, streamId: string, expectedVersion: number, data: BenchData) {
  const event = { type: 'OrderPlaced', data: payload };
  const expected = expectedVersion < 0 ? ('no_stream' as const) : expectedVersion;
  const options = KEYED ? { key: streamId } : {};
  switch (arm) {
    case 'outbox': {
      await env.outbox.unitOfWork(async (work) => {
        await work.append(streamId, [event], { expectedVersion: expected });
        await work.publish(TYPE, data, options);
      });
      return performance.now();
    }
    case 'outbox-append': {
      await env.outbox.append(streamId, [event], {
        expectedVersion: expected,
        messages: [{ type: TYPE, data, options }],
      });
      return performance.now();
    }
    case 'direct-append': {
      await env.store.append(streamId, [event], { expectedVersion: expected });
      const at = performance.now();
      await env.producer.publish(TYPE, data);
      return at;
    }
    case 'direct-tx': {
      await env.outbox.unitOfWork(async (work) => {
        await work.append(streamId, [event], { expectedVersion: expected });
      });
      const at = performance.now();
      await env.producer.publish(TYPE, data);
      return at;
    }
  }
}

let tagSeq = 0;

/** `producers` loops, each doing its share of `total` units of work on a stream of its own. */
async function throughput(env: Env, arm: Arm, producers: number, total: number): Promise<number> {
  const perProducer = Math.ceil(total / producers);
  const count = perProducer * producers;
  const tag = `${arm}-t${++tagSeq}`;
  const expectation = expect(tag, count);
  env.current = expectation;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: producers }, async (_, p) => {
      for (let i = 0; i < perProducer; i++) {
        const n = p * perProducer + i;
        await unit(env, arm, `${tag}-${p}`, i - 1, { tag, n, startedAt: performance.now(), order: payload });
      }
    }),
  );
  await withTimeout(expectation.done, 120_000, `${tag}: ${expectation.received}/${count} consumed`);
  const seconds = (performance.now() - start) / 1000;
  env.current = undefined;
  return count / seconds;
}

interface LatencyResult {
  /** From the commit (outbox) or publish start (baselines) to the handler, ms. */
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  /** From the start of the unit of work to the handler, ms. */
  readonly e2eP50: number;
  readonly e2eP99: number;
}

/** Open-loop pacing: unit n starts at start + n / rate whatever the earlier ones are doing. */
async function latency(env: Env, arm: Arm, rate: number, seconds: number): Promise<LatencyResult> {
  const total = Math.max(1, Math.round(rate * seconds));
  const tag = `${arm}-l${++tagSeq}`;
  const expectation = expect(tag, total);
  env.current = expectation;
  const from = new Float64Array(total);
  const startedAt = new Float64Array(total);
  const units: Promise<void>[] = [];
  const start = performance.now();
  for (let n = 0; n < total; n++) {
    const due = start + (n * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    startedAt[n] = performance.now();
    units.push(
      unit(env, arm, `${tag}-${n}`, -1, { tag, n, startedAt: startedAt[n]!, order: payload }).then((at) => {
        from[n] = at;
      }),
    );
  }
  await Promise.all(units);
  await withTimeout(expectation.done, 60_000, `${tag}: ${expectation.received}/${total} consumed`);
  env.current = undefined;
  const lat: number[] = [];
  const e2e: number[] = [];
  for (let n = 0; n < total; n++) {
    lat.push(expectation.handledAt[n]! - from[n]!);
    e2e.push(expectation.handledAt[n]! - startedAt[n]!);
  }
  return {
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    max: Math.max(...lat),
    e2eP50: percentile(e2e, 50),
    e2eP99: percentile(e2e, 99),
  };
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise: Promise<void>, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<void>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The arms in an order that rotates with `turn`, so that none always meets a warmer database. */
function rotated(turn: number): Arm[] {
  return ARMS.map((_, i) => ARMS[(i + turn) % ARMS.length]!);
}

function profileLine(env: Env, arm: Arm): string {
  const p = env.profile;
  const line = `relay during ${arm}: ${p.claims} claims (${p.emptyClaims} empty, ${round(p.claimedRows / Math.max(1, p.claims - p.emptyClaims), 1)} rows per non-empty claim, ${round(p.claimMs / Math.max(1, p.claims), 2)} ms each), ${p.deletes} deletes (${round(p.deleteMs / Math.max(1, p.deletes), 2)} ms each), ${p.publishes} transport publishes, relay's and bus.publish's (${round(p.publishMs / Math.max(1, p.publishes), 2)} ms to confirm)`;
  Object.assign(p, emptyProfile());
  return line;
}

const wanted = (name: string) =>
  !only || only === name || (only === 'outbox-throughput' && name.startsWith(only));

interface ThroughputRuns {
  readonly rates: Record<Arm, number[]>;
  readonly ratios: number[];
  readonly appendRatios: number[];
  readonly txRatios: number[];
}

interface LatencyRuns {
  readonly results: Record<Arm, LatencyResult[]>;
}

async function main(): Promise<void> {
  process.stderr.write(
    `ferry bench:outbox — ${RUNS} runs, medians reported (pool ${POOL}${BATCH > 0 ? `, relay batch ${BATCH}` : ''}${KEYED ? ', keyed' : ''})\n`,
  );
  const tp = new Map<number, ThroughputRuns>();
  for (const c of CONCURRENCIES) {
    tp.set(c, {
      rates: { outbox: [], 'outbox-append': [], 'direct-append': [], 'direct-tx': [] },
      ratios: [],
      appendRatios: [],
      txRatios: [],
    });
  }
  const lat: LatencyRuns = {
    results: { outbox: [], 'outbox-append': [], 'direct-append': [], 'direct-tx': [] },
  };
  for (let run = 1; run <= RUNS; run++) {
    const env = await openEnv();
    try {
      // Warm-up, not counted: connections, plans, queues and the relay's LISTEN session.
      for (const arm of ARMS) await throughput(env, arm, 16, 480);
      if (PROFILE) profileLine(env, 'outbox');
      for (const c of CONCURRENCIES) {
        if (!wanted(`outbox-throughput-${c}`)) continue;
        const got = {} as Record<Arm, number>;
        for (const arm of rotated(run)) {
          got[arm] = await throughput(env, arm, c, MESSAGES);
          if (PROFILE) progress(profileLine(env, arm));
        }
        const runs = tp.get(c)!;
        for (const arm of ARMS) runs.rates[arm].push(got[arm]);
        runs.ratios.push(got.outbox / got['direct-append']);
        runs.appendRatios.push(got['outbox-append'] / got['direct-append']);
        runs.txRatios.push(got.outbox / got['direct-tx']);
        progress(
          `outbox-throughput-${c} run ${run}/${RUNS}: outbox.append ${round(got['outbox-append'])} msg/s (ratio ${round(got['outbox-append'] / got['direct-append'], 2)}), unit of work ${round(got.outbox)} (ratio ${round(got.outbox / got['direct-append'], 2)}), store.append + publish ${round(got['direct-append'])}, transaction + publish ${round(got['direct-tx'])} (unit of work's ratio ${round(got.outbox / got['direct-tx'], 2)})`,
        );
      }
      if (wanted('outbox-latency')) {
        const got = {} as Record<Arm, LatencyResult>;
        for (const arm of rotated(run)) {
          got[arm] = await latency(env, arm, RATE, SECONDS);
          if (PROFILE) progress(profileLine(env, arm));
        }
        for (const arm of ARMS) lat.results[arm].push(got[arm]);
        progress(
          `outbox-latency run ${run}/${RUNS} at ${RATE} msg/s: ${ARMS.map((a) => `${a} p50 ${round(got[a].p50, 2)} p99 ${round(got[a].p99, 2)} max ${round(got[a].max, 1)} ms`).join('; ')}`,
        );
      }
      // The consumer may have a message before the relay's round deleted its row: wait for the round.
      await env.outbox.flush();
      const backlog = await env.outbox.backlog();
      if (backlog.pending + backlog.failed > 0) {
        throw new Error(`outbox not empty after the run: ${JSON.stringify(backlog)}`);
      }
    } finally {
      await closeEnv(env);
    }
  }
  const summary: string[] = [];
  for (const c of CONCURRENCIES) {
    if (!wanted(`outbox-throughput-${c}`)) continue;
    const runs = tp.get(c)!;
    const ratio = median(runs.ratios);
    const appendRatio = median(runs.appendRatios);
    report({
      case: `outbox-append-throughput-${c}`,
      unit: 'msg/s',
      producers: c,
      messages: Math.ceil(MESSAGES / c) * c,
      poolSize: POOL,
      outboxKeyed: KEYED,
      measured: 'outbox.append(stream, [event], { expectedVersion, messages: [message] }) until consumed',
      ferry: round(median(runs.rates['outbox-append'])),
      baseline: 'store.append, then bus.publish after the commit',
      baselineValue: round(median(runs.rates['direct-append'])),
      ratio: round(appendRatio, 3),
      target: `>= ${TARGET_RATIO}x`,
      pass: appendRatio >= TARGET_RATIO,
      runs: RUNS,
    });
    summary.push(
      `outbox-append-throughput-${c}: outbox.append ${round(median(runs.rates['outbox-append']))} msg/s vs ${round(median(runs.rates['direct-append']))} (store.append + publish): ${round(appendRatio, 2)}x, target >= ${TARGET_RATIO}x ${appendRatio >= TARGET_RATIO ? 'met' : 'MISSED'}`,
    );
    report({
      case: `outbox-throughput-${c}`,
      unit: 'msg/s',
      producers: c,
      messages: Math.ceil(MESSAGES / c) * c,
      poolSize: POOL,
      outboxKeyed: KEYED,
      ferry: round(median(runs.rates.outbox)),
      baseline: 'store.append, then bus.publish after the commit',
      baselineValue: round(median(runs.rates['direct-append'])),
      ratio: round(ratio, 3),
      target: `>= ${TARGET_RATIO}x`,
      pass: ratio >= TARGET_RATIO,
      txBaseline: 'the same transaction without the outbox row (BEGIN, append, COMMIT), then bus.publish',
      txBaselineValue: round(median(runs.rates['direct-tx'])),
      txRatio: round(median(runs.txRatios), 3),
      runs: RUNS,
    });
    summary.push(
      `outbox-throughput-${c}: outbox ${round(median(runs.rates.outbox))} msg/s vs ${round(median(runs.rates['direct-append']))} (store.append + publish): ${round(ratio, 2)}x, target >= ${TARGET_RATIO}x ${ratio >= TARGET_RATIO ? 'met' : 'MISSED'}; vs transaction + publish ${round(median(runs.txRatios), 2)}x`,
    );
  }
  if (wanted('outbox-latency')) {
    const m = (arm: Arm, f: keyof LatencyResult) => round(median(lat.results[arm].map((r) => r[f])), 2);
    const p99 = m('outbox', 'p99');
    const appendP99 = m('outbox-append', 'p99');
    report({
      case: 'outbox-append-latency',
      unit: 'ms',
      rate: RATE,
      messages: Math.round(RATE * SECONDS),
      poolSize: POOL,
      outboxKeyed: KEYED,
      measured: 'commit (outbox.append resolved) -> consumer handler',
      ferryP50: m('outbox-append', 'p50'),
      ferryP99: appendP99,
      ferryMax: m('outbox-append', 'max'),
      ferryEndToEndP50: m('outbox-append', 'e2eP50'),
      ferryEndToEndP99: m('outbox-append', 'e2eP99'),
      baseline: 'store.append, then bus.publish: publish start (after the commit) -> consumer handler',
      baselineP50: m('direct-append', 'p50'),
      baselineP99: m('direct-append', 'p99'),
      baselineEndToEndP99: m('direct-append', 'e2eP99'),
      target: `p99 < ${TARGET_P99_MS} ms`,
      pass: appendP99 < TARGET_P99_MS,
      runs: RUNS,
    });
    summary.push(
      `outbox-append-latency at ${RATE} msg/s: outbox.append commit -> handler p50 ${m('outbox-append', 'p50')} ms, p99 ${appendP99} ms (target < ${TARGET_P99_MS} ms ${appendP99 < TARGET_P99_MS ? 'met' : 'MISSED'}); unit start -> handler p99 ${m('outbox-append', 'e2eP99')} ms`,
    );
    report({
      case: 'outbox-latency',
      unit: 'ms',
      rate: RATE,
      messages: Math.round(RATE * SECONDS),
      poolSize: POOL,
      outboxKeyed: KEYED,
      measured: 'commit (unit of work resolved) -> consumer handler',
      ferryP50: m('outbox', 'p50'),
      ferryP99: p99,
      ferryMax: m('outbox', 'max'),
      ferryEndToEndP50: m('outbox', 'e2eP50'),
      ferryEndToEndP99: m('outbox', 'e2eP99'),
      baseline: 'store.append, then bus.publish: publish start (after the commit) -> consumer handler',
      baselineP50: m('direct-append', 'p50'),
      baselineP99: m('direct-append', 'p99'),
      baselineMax: m('direct-append', 'max'),
      baselineEndToEndP50: m('direct-append', 'e2eP50'),
      baselineEndToEndP99: m('direct-append', 'e2eP99'),
      txBaselineP50: m('direct-tx', 'p50'),
      txBaselineP99: m('direct-tx', 'p99'),
      txBaselineEndToEndP99: m('direct-tx', 'e2eP99'),
      ratioP99: round(p99 / m('direct-append', 'p99'), 2),
      target: `p99 < ${TARGET_P99_MS} ms`,
      pass: p99 < TARGET_P99_MS,
      runs: RUNS,
    });
    summary.push(
      `outbox-latency at ${RATE} msg/s: outbox commit -> handler p50 ${m('outbox', 'p50')} ms, p99 ${p99} ms (target < ${TARGET_P99_MS} ms ${p99 < TARGET_P99_MS ? 'met' : 'MISSED'}); store.append + publish: publish -> handler p50 ${m('direct-append', 'p50')} ms, p99 ${m('direct-append', 'p99')} ms; unit start -> handler p99: outbox ${m('outbox', 'e2eP99')} ms, direct ${m('direct-append', 'e2eP99')} ms`,
    );
  }
  process.stderr.write(`${summary.join('\n')}\n`);
}

await runBenchmark('bench:outbox', main);
