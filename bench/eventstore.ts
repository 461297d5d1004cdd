/**
 * `npm run bench:eventstore` — the event store against raw drivers on the same database, in one run.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   pg-append-single      single-event appends, 8 concurrent writers on distinct streams, with expected
 *                         versions; baselines: raw INSERT into the equivalent table (Ferry's keys, the target)
 *                         and into the anchor table with a unique (stream, version) key only
 *   pg-append-batch10     the same with 10 events per append; baseline: raw 10-row INSERT
 *   pg-readall            readAll over 200,000 events; baseline: raw keyset-paginated SELECT, same batch size
 *   pg-subscription-latency  append called -> handler of a live subscription in another store instance
 *                         (LISTEN/NOTIFY); baseline: raw BEGIN, INSERT, NOTIFY, COMMIT -> LISTEN handler
 *   pg-append-64-writers  single-event appends, 64 concurrent writers each on its own stream, with expected
 *                         versions (concurrent appends share a commit: group commit); baseline: raw INSERT into
 *                         the equivalent table, one INSERT per commit, 64 writers on a pg.Pool of 16 connections
 *   sqlite-append         single-event appends on SQLite (WAL; each resolves once its commit is synced to disk,
 *                         off the event loop); baseline: raw better-sqlite3 INSERT with synchronous=FULL
 *   sqlite-append-64-writers  64 concurrent writers each appending single events to its own stream; baseline:
 *                         64 writers doing one raw better-sqlite3 INSERT per commit
 *
 * Options: --runs N (default 7, medians reported), --appends N (per PostgreSQL append run, default 6000),
 * --readall N (default 200000), --only <case>. Database from FERRY_BENCH_POSTGRES_URL.
 *
 * Both sides of a case start with their connections open (Ferry's store opens its pool when it is
 * created; the raw pool opens its connections before the clock), and the sides go in turn first.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createEventStore, type EventStore, silentLogger } from 'ferry';
import pg from 'pg';
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

const RUNS = argValue('runs', 7);
const APPENDS = argValue('appends', 6000);
const READALL = argValue('readall', 200_000, 2000);
const WRITERS = 8;
const MANY_WRITERS = 64;
/** Connections of the raw baseline's pool with 64 writers; Ferry's store keeps its own pool of 10. */
const RAW_MANY_POOL = 16;
const only = onlyCase([
  'pg-append-single',
  'pg-append-64-writers',
  'pg-append-batch10',
  'pg-readall',
  'pg-subscription-latency',
  'sqlite-append',
  'sqlite-append-64-writers',
]);
const url = process.env.FERRY_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};
const meta = { correlationId: '01a22bd5-0000-7000-8000-000000000000' };

const admin = new pg.Pool({ connectionString: url, max: 2 });
// Registered first, so ended last: the schemas' drops (on the way out too) need it.
onCleanup('the admin pool', () => admin.end());

/** Drops of the schemas made and not yet dropped (also run on Ctrl-C or a failure). */
const schemaDrops = new Map<string, () => Promise<void>>();

function schemaName(): string {
  const schema = `bench_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  schemaDrops.set(
    schema,
    onCleanup(`schema ${schema}`, async () => {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }),
  );
  return schema;
}

async function dropSchema(schema: string): Promise<void> {
  const drop = schemaDrops.get(schema);
  schemaDrops.delete(schema);
  await drop?.();
}

/** A raw pool with its `connections` open, as Ferry's store has its own open when created. */
async function openPool(connections: number): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: url, max: connections });
  const clients = await Promise.all(Array.from({ length: connections }, () => pool.connect()));
  for (const client of clients) client.release();
  return pool;
}

/**
 * The raw baseline table. `equivalent`: Ferry's own columns and keys, including the unique
 * (stream, event id) key behind idempotent appends; otherwise the anchor table of ANCHORS.md, with
 * the unique (stream, version) key only.
 */
async function rawTable(schema: string, equivalent = false): Promise<void> {
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`CREATE TABLE "${schema}".raw_events (
    position bigserial PRIMARY KEY,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    id uuid NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)${equivalent ? ', UNIQUE (stream_id, id)' : ''}
  )`);
}

/** Runs `writers` loops of `perWriter` iterations each, concurrently. */
async function concurrently(
  writers: number,
  perWriter: number,
  step: (writer: number, i: number) => Promise<void>,
): Promise<void> {
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      for (let i = 0; i < perWriter; i++) await step(w, i);
    }),
  );
}

async function rawAppends(
  batch: number,
  equivalent = false,
  writers = WRITERS,
  connections = 10,
): Promise<number> {
  const schema = schemaName();
  await rawTable(schema, equivalent);
  const pool = await openPool(connections);
  const perWriter = Math.ceil(APPENDS / writers / batch);
  const values = Array.from({ length: batch }, (_, n) => {
    const o = n * 6;
    return `($${o + 1}, $${o + 2}, $${o + 3}, $${o + 4}, $${o + 5}, $${o + 6})`;
  }).join(', ');
  const text = `INSERT INTO "${schema}".raw_events (stream_id, version, id, type, data, metadata) VALUES ${values}`;
  const start = performance.now();
  await concurrently(writers, perWriter, async (w, i) => {
    const params: unknown[] = [];
    for (let n = 0; n < batch; n++) {
      params.push(
        `stream-${w}`,
        i * batch + n,
        randomUUID(),
        'OrderPlaced',
        JSON.stringify(payload),
        JSON.stringify(meta),
      );
    }
    await pool.query({ name: `raw-${batch}`, text, values: params });
  });
  const rate = (writers * perWriter * batch) / secondsSince(start);
  await pool.end();
  await dropSchema(schema);
  return rate;
}

async function ferryAppends(batch: number, writers = WRITERS): Promise<number> {
  const schema = schemaName();
  const store = await createEventStore({ url, postgres: { schema, poolSize: 10 }, logger: silentLogger });
  const perWriter = Math.ceil(APPENDS / writers / batch);
  const events = Array.from({ length: batch }, () => ({
    type: 'OrderPlaced',
    data: payload,
    metadata: meta,
  }));
  const start = performance.now();
  await concurrently(writers, perWriter, async (w, i) => {
    await store.append(`stream-${w}`, events, { expectedVersion: i === 0 ? 'no_stream' : i * batch - 1 });
  });
  const rate = (writers * perWriter * batch) / secondsSince(start);
  await store.close();
  await dropSchema(schema);
  return rate;
}

async function fillReadAll(store: EventStore): Promise<void> {
  const events = Array.from({ length: 500 }, () => ({ type: 'OrderPlaced', data: payload, metadata: meta }));
  await concurrently(4, READALL / 500 / 4, (w, i) =>
    store.append(`fill-${w}-${i % 50}`, events).then(() => {}),
  );
}

async function readAllCase(turn: number): Promise<{ ferry: number; raw: number }> {
  const schema = schemaName();
  const store = await createEventStore({ url, postgres: { schema }, logger: silentLogger });
  await fillReadAll(store);
  // Raw: keyset pagination over the same table, same batch size, rows parsed by pg the same way.
  const pool = await openPool(1);
  const ferrySide = async () => {
    let count = 0;
    const start = performance.now();
    for await (const _ of store.readAll({ batchSize: 500 })) count++;
    return { count, rate: count / secondsSince(start) };
  };
  const rawSide = async () => {
    let after = '0';
    let count = 0;
    const start = performance.now();
    for (;;) {
      const { rows } = await pool.query(
        `SELECT position, stream_id, version, id, type, data, metadata, time FROM "${schema}".events WHERE position > $1 ORDER BY position LIMIT 500`,
        [after],
      );
      count += rows.length;
      if (rows.length < 500) break;
      after = rows[rows.length - 1].position;
    }
    return { count, rate: count / secondsSince(start) };
  };
  const { ferry, raw } = await alternate(turn, ferrySide, rawSide);
  await pool.end();
  await store.close();
  await dropSchema(schema);
  for (const [side, { count }] of [
    ['Ferry', ferry],
    ['raw', raw],
  ] as const) {
    if (count !== READALL) throw new Error(`${side} read ${count} events, expected ${READALL}`);
  }
  return { ferry: ferry.rate, raw: raw.rate };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const LATENCY_EVENTS = 400;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function ferryLatency(): Promise<number[]> {
  const schema = schemaName();
  const writer = await createEventStore({ url, postgres: { schema }, logger: silentLogger });
  const reader = await createEventStore({ url, postgres: { schema }, logger: silentLogger });
  const calledAt = new Map<string, number>();
  const handledAt = new Map<string, number>();
  const sub = reader.subscribe({ name: 'latency', idlePollMs: 60_000 }, (e) => {
    handledAt.set(e.id, performance.now());
  });
  await sub.caughtUp();
  // Warm-up, not measured: the writer learns that another process listens within a second.
  for (let i = 0; i < 100; i++) {
    await writer.append('warm-up', [{ type: 'Tick', data: { i } }]);
    await sleep(10);
  }
  while (handledAt.size < 100) await sleep(10);
  handledAt.clear();
  for (let i = 0; i < LATENCY_EVENTS; i++) {
    const id = randomUUID();
    calledAt.set(id, performance.now());
    await writer.append(`lat-${i % 10}`, [{ id, type: 'Tick', data: { i } }]);
    await sleep(2);
  }
  while (handledAt.size < LATENCY_EVENTS) await sleep(10);
  await writer.close();
  await reader.close();
  await dropSchema(schema);
  return [...calledAt].map(([id, t]) => handledAt.get(id)! - t);
}

async function rawLatency(): Promise<number[]> {
  const schema = schemaName();
  await rawTable(schema);
  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  const channel = `raw_${schema}`;
  await listener.query(`LISTEN "${channel}"`);
  const handledAt = new Map<string, number>();
  listener.on('notification', (n) => handledAt.set(n.payload!, performance.now()));
  const pool = await openPool(1);
  const append = async (stream: string, version: number, id: string) => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(
        `INSERT INTO "${schema}".raw_events (stream_id, version, id, type, data, metadata) VALUES ($1, $2, $3, 'Tick', '{}', '{}')`,
        [stream, version, id],
      );
      await client.query('SELECT pg_notify($1, $2)', [channel, id]);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  };
  // Warm-up, not measured, as Ferry's side has.
  for (let i = 0; i < 100; i++) {
    await append('warm-up', i, randomUUID());
    await sleep(10);
  }
  while (handledAt.size < 100) await sleep(10);
  handledAt.clear();
  const calledAt = new Map<string, number>();
  for (let i = 0; i < LATENCY_EVENTS; i++) {
    const id = randomUUID();
    calledAt.set(id, performance.now());
    await append(`lat-${i % 10}`, Math.floor(i / 10), id);
    await sleep(2);
  }
  while (handledAt.size < LATENCY_EVENTS) await sleep(10);
  await listener.end();
  await pool.end();
  await dropSchema(schema);
  return [...calledAt].map(([id, t]) => handledAt.get(id)! - t);
}

const SQLITE_APPENDS = 3000;

/** `writers` concurrent writers, each appending to its own stream (one writer: the original case). */
async function sqliteCase(turn: number, writers = 1): Promise<{ ferry: number; raw: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-'));
  const removeDir = onCleanup(dir, () => rmSync(dir, { recursive: true, force: true }));
  const perWriter = Math.ceil(SQLITE_APPENDS / writers);
  const total = perWriter * writers;
  const ferrySide = async () => {
    const store = await createEventStore({ url: `sqlite:${join(dir, 'ferry.db')}`, logger: silentLogger });
    const start = performance.now();
    await concurrently(writers, perWriter, async (w, i) => {
      await store.append(`s-${w}`, [{ type: 'OrderPlaced', data: payload, metadata: meta }], {
        expectedVersion: i - 1,
      });
    });
    const rate = total / secondsSince(start);
    await store.close();
    return rate;
  };
  const rawSide = async () => {
    const db = new Database(join(dir, 'raw.db'));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec(`CREATE TABLE raw_events (position INTEGER PRIMARY KEY AUTOINCREMENT, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
      id TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL, time TEXT NOT NULL, UNIQUE (stream_id, version))`);
    const insert = db.prepare(
      'INSERT INTO raw_events (stream_id, version, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    const start = performance.now();
    await concurrently(writers, perWriter, async (w, i) => {
      insert.run(
        `s-${w}`,
        i,
        randomUUID(),
        'OrderPlaced',
        JSON.stringify(payload),
        JSON.stringify(meta),
        new Date().toISOString(),
      );
      // The same turn of the event loop as an awaited append, so both sides pay for a promise.
      await Promise.resolve();
    });
    const rate = total / secondsSince(start);
    db.close();
    return rate;
  };
  try {
    return await alternate(turn, ferrySide, rawSide);
  } finally {
    await removeDir();
  }
}

async function ratioCase(
  name: string,
  target: number | undefined,
  baseline: string,
  unit: string,
  run: () => Promise<{ ferry: number; raw: number }>,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const ferry: number[] = [];
  const raw: number[] = [];
  const ratios: number[] = [];
  // A warm-up run, not counted: connections, plans and the database's caches start cold.
  await run();
  for (let r = 1; r <= RUNS; r++) {
    const result = await run();
    ferry.push(result.ferry);
    raw.push(result.raw);
    ratios.push(result.ferry / result.raw);
    progress(
      `${name} run ${r}/${RUNS}: ferry ${round(result.ferry)} ${unit}, ${baseline} ${round(result.raw)} ${unit}, ratio ${round(result.ferry / result.raw, 2)}`,
    );
  }
  report({
    case: name,
    unit,
    ...extra,
    ferry: round(median(ferry)),
    baseline,
    baselineValue: round(median(raw)),
    ratio: round(median(ratios), 3),
    ...(target === undefined ? {} : { target: `>= ${target}x`, pass: median(ratios) >= target }),
    runs: RUNS,
  });
}

/** Alternates which side goes first, so neither always meets a warmer database. */
async function alternate<T>(turn: number, ferry: () => Promise<T>, raw: () => Promise<T>) {
  if (turn % 2 === 0) {
    const f = await ferry();
    return { ferry: f, raw: await raw() };
  }
  const b = await raw();
  return { ferry: await ferry(), raw: b };
}

async function main(): Promise<void> {
  process.stderr.write(`ferry bench:eventstore — ${RUNS} runs per case, medians reported\n`);
  let turn = 0;
  const next = () => turn++;
  if (!only || only === 'pg-append-single') {
    // Three sides, in rotating order: Ferry, raw INSERT into the equivalent table (the target), and
    // raw INSERT into the leaner anchor table, reported beside it.
    const sides = [() => ferryAppends(1), () => rawAppends(1, true), () => rawAppends(1, false)];
    const results: number[][] = [[], [], []];
    for (const side of sides) await side(); // warm-up, not counted
    for (let r = 1; r <= RUNS; r++) {
      const got: number[] = [0, 0, 0];
      for (let k = 0; k < 3; k++) {
        const i = (k + r) % 3;
        got[i] = await sides[i]!();
      }
      for (const [i, v] of got.entries()) results[i]!.push(v);
      progress(
        `pg-append-single run ${r}/${RUNS}: ferry ${round(got[0]!)} events/s, raw INSERT same table ${round(got[1]!)} (ratio ${round(got[0]! / got[1]!, 2)}), anchor table ${round(got[2]!)} (ratio ${round(got[0]! / got[2]!, 2)})`,
      );
    }
    const ratio = median(results[0]!.map((f, i) => f / results[1]![i]!));
    report({
      case: 'pg-append-single',
      unit: 'events/s',
      writers: WRITERS,
      appends: APPENDS,
      ferry: round(median(results[0]!)),
      baseline: 'raw INSERT into the equivalent table (same columns and keys)',
      baselineValue: round(median(results[1]!)),
      ratio: round(ratio, 3),
      target: '>= 0.8x',
      pass: ratio >= 0.8,
      anchorBaseline: 'raw INSERT into the anchor table (unique (stream, version) only)',
      anchorBaselineValue: round(median(results[2]!)),
      anchorRatio: round(median(results[0]!.map((f, i) => f / results[2]![i]!)), 3),
      runs: RUNS,
    });
  }
  if (!only || only === 'pg-append-64-writers') {
    await ratioCase(
      'pg-append-64-writers',
      undefined,
      `raw INSERT into the equivalent table, one per commit, pg.Pool of ${RAW_MANY_POOL}`,
      'events/s',
      () =>
        alternate(
          next(),
          () => ferryAppends(1, MANY_WRITERS),
          () => rawAppends(1, true, MANY_WRITERS, RAW_MANY_POOL),
        ),
      {
        writers: MANY_WRITERS,
        appends: APPENDS,
        rawPoolConnections: RAW_MANY_POOL,
        ferryPoolConnections: 10,
      },
    );
  }
  if (!only || only === 'pg-append-batch10') {
    await ratioCase(
      'pg-append-batch10',
      undefined,
      'raw 10-row INSERT',
      'events/s',
      () =>
        alternate(
          next(),
          () => ferryAppends(10),
          () => rawAppends(10),
        ),
      { writers: WRITERS, events: APPENDS },
    );
  }
  if (!only || only === 'pg-readall') {
    await ratioCase('pg-readall', undefined, 'raw keyset SELECT', 'events/s', () => readAllCase(next()), {
      events: READALL,
    });
  }
  if (!only || only === 'pg-subscription-latency') {
    const ferryP50: number[] = [];
    const ferryP99: number[] = [];
    const rawP50: number[] = [];
    const rawP99: number[] = [];
    for (let r = 1; r <= RUNS; r++) {
      const { ferry: f, raw: b } = await alternate(r, ferryLatency, rawLatency);
      ferryP50.push(percentile(f, 50));
      ferryP99.push(percentile(f, 99));
      rawP50.push(percentile(b, 50));
      rawP99.push(percentile(b, 99));
      progress(
        `pg-subscription-latency run ${r}/${RUNS}: ferry p50 ${round(percentile(f, 50), 2)} ms p99 ${round(percentile(f, 99), 2)} ms, raw LISTEN p50 ${round(percentile(b, 50), 2)} ms p99 ${round(percentile(b, 99), 2)} ms`,
      );
    }
    report({
      case: 'pg-subscription-latency',
      unit: 'ms',
      events: LATENCY_EVENTS,
      ferryP50: round(median(ferryP50), 2),
      ferryP99: round(median(ferryP99), 2),
      measured: 'from the append called to the handler',
      baseline: 'raw BEGIN, INSERT, NOTIFY, COMMIT on a pooled connection; LISTEN on another',
      baselineP50: round(median(rawP50), 2),
      baselineP99: round(median(rawP99), 2),
      runs: RUNS,
    });
  }
  if (!only || only === 'sqlite-append') {
    await ratioCase(
      'sqlite-append',
      undefined,
      'raw better-sqlite3 INSERT',
      'appends/s',
      () => sqliteCase(next()),
      {
        appends: SQLITE_APPENDS,
      },
    );
  }
  if (!only || only === 'sqlite-append-64-writers') {
    await ratioCase(
      'sqlite-append-64-writers',
      undefined,
      'raw better-sqlite3 INSERT, one per commit',
      'appends/s',
      () => sqliteCase(next(), MANY_WRITERS),
      { writers: MANY_WRITERS, appends: SQLITE_APPENDS },
    );
  }
}

await runBenchmark('bench:eventstore', main);
