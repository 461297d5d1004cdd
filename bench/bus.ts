/**
 * `npm run bench:bus` — the message bus against its baselines, in one process run.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   amqp-publish-confirm  Ferry publish vs raw amqplib confirm channel, same window, persistent, durable queue
 *   amqp-end-to-end       publish -> handler -> ack, Ferry vs raw amqplib, same window and prefetch
 *   memory-async-handler  in-memory publish -> async handler, Ferry vs Node EventEmitter
 *   memory-rss            RSS after 1,000,000 in-memory messages vs after the first 100,000
 *
 * Options: --runs N (default 7; the median is reported), --messages N (AMQP, default 30000),
 * --memory-messages N (default 1000000), --only <case>. AMQP URL from FERRY_BENCH_AMQP_URL.
 * Each side of an AMQP case runs in a fresh vhost of its own, so that queues and clean-up of one
 * side or of earlier runs cannot interfere with the other.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import amqp, { type ConfirmChannel } from 'amqplib';
import { createBus, MemoryBroker, MemoryTransport, silentLogger } from 'ferry';
import { createTestVhost, type TestVhost } from '../src/testing/rabbitmq.js';
import { argValue, countdown, median, progress, pump, report, round, secondsSince } from './support.js';

const RUNS = argValue('runs', 7);
const AMQP_MESSAGES = argValue('messages', 30_000);
const MEMORY_MESSAGES = argValue('memory-messages', 1_000_000);
const WINDOW = 1000;
const PREFETCH = 100;
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};
/** Raw clients serialise each message as the tutorial's publisher does: `Buffer.from(JSON.stringify(message))`. */
const encode = () => Buffer.from(JSON.stringify(payload));

function vhostUrl(vhost: TestVhost): string {
  const base = process.env.FERRY_BENCH_AMQP_URL;
  if (!base) return vhost.url;
  const url = new URL(base);
  url.pathname = `/${encodeURIComponent(vhost.name)}`;
  return url.toString();
}

/** Raw amqplib, written as a careful user would: confirm channel, bounded window, honours drain. */
function rawPublishAll(channel: ConfirmChannel, total: number): Promise<void> {
  let blocked: Promise<void> | undefined;
  return pump(total, WINDOW, (_i, done) => {
    const send = () => {
      const ok = channel.publish(
        'raw.events',
        'bench.order.created',
        encode(),
        {
          persistent: true,
          mandatory: true,
          contentType: 'application/json',
          messageId: randomUUID(),
          timestamp: Date.now(),
        },
        (error) => done(error ?? undefined),
      );
      if (!ok && blocked === undefined) {
        blocked = new Promise((resolve) =>
          channel.once('drain', () => {
            blocked = undefined;
            resolve();
          }),
        );
      }
    };
    if (blocked) void blocked.then(send);
    else send();
  });
}

async function rawPublish(url: string, total: number, queue: string): Promise<number> {
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange('raw.events', 'topic', { durable: true });
  await channel.assertQueue(queue, { durable: true });
  await channel.bindQueue(queue, 'raw.events', 'bench.#');
  await channel.purgeQueue(queue);
  const start = performance.now();
  await rawPublishAll(channel, total);
  const rate = total / secondsSince(start);
  await connection.close();
  return rate;
}

function benchBus(url: string) {
  return createBus({ url, service: 'bench', logger: silentLogger, amqp: { publishWindow: WINDOW } });
}

/** Ferry with the same window as the raw client: at most WINDOW publishes outstanding. */
function ferryPublishAll(bus: Awaited<ReturnType<typeof benchBus>>, total: number): Promise<void> {
  return pump(total, WINDOW, (_i, done) => {
    bus.publish('bench.order.created', payload).then(() => done(), done);
  });
}

async function ferryPublish(url: string, total: number): Promise<number> {
  const bus = await benchBus(url);
  // A subscription declares the durable queue; it is closed so that nothing consumes while publishing.
  const sub = await bus.subscribe('bench.#', async () => {}, { group: 'pub-only' });
  await sub.close();
  const start = performance.now();
  await ferryPublishAll(bus, total);
  const rate = total / secondsSince(start);
  await bus.close();
  return rate;
}

async function rawEndToEnd(url: string, total: number): Promise<number> {
  const connection = await amqp.connect(url);
  const publisher = await connection.createConfirmChannel();
  const consumer = await connection.createChannel();
  await publisher.assertExchange('raw.events', 'topic', { durable: true });
  await consumer.assertQueue('raw.e2e', { durable: true });
  await consumer.bindQueue('raw.e2e', 'raw.events', 'bench.#');
  await consumer.purgeQueue('raw.e2e');
  await consumer.prefetch(PREFETCH);
  const handled = countdown(total);
  const handler = async (data: unknown) => data;
  await consumer.consume('raw.e2e', (message) => {
    if (message === null) return;
    void handler(JSON.parse(message.content.toString('utf8'))).then(() => {
      consumer.ack(message);
      handled.tick();
    });
  });
  const start = performance.now();
  await rawPublishAll(publisher, total);
  await handled.done;
  const rate = total / secondsSince(start);
  await connection.close();
  return rate;
}

async function ferryEndToEnd(url: string, total: number): Promise<number> {
  const bus = await benchBus(url);
  const handled = countdown(total);
  await bus.subscribe(
    'bench.#',
    async () => {
      handled.tick();
    },
    { group: 'e2e', concurrency: PREFETCH },
  );
  const start = performance.now();
  await ferryPublishAll(bus, total);
  await handled.done;
  const rate = total / secondsSince(start);
  await bus.close();
  return rate;
}

const BATCH = 1000;
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** In-memory: publish in batches, yielding between them, until every async handler ran. */
async function ferryMemory(total: number, onProgress?: (handled: number) => void): Promise<number> {
  const bus = await createBus({
    transport: new MemoryTransport({ broker: new MemoryBroker() }),
    service: 'bench',
    logger: silentLogger,
  });
  const handled = countdown(total);
  await bus.subscribe(
    'bench.#',
    async () => {
      const n = handled.tick();
      if (onProgress !== undefined && n % 100_000 === 0) onProgress(n);
    },
    { concurrency: 1000 },
  );
  const start = performance.now();
  for (let i = 0; i < total; i += BATCH) {
    for (let j = 0; j < BATCH; j++) void bus.publish('bench.order.created', payload);
    await yieldToLoop();
  }
  await handled.done;
  const rate = total / secondsSince(start);
  await bus.close();
  return rate;
}

/** The tutorial's in-process EventBus: an EventEmitter with an async listener. */
async function emitterMemory(total: number): Promise<number> {
  const emitter = new EventEmitter();
  const handled = countdown(total);
  emitter.on('bench.order.created', async () => {
    handled.tick();
  });
  const start = performance.now();
  for (let i = 0; i < total; i += BATCH) {
    for (let j = 0; j < BATCH; j++) emitter.emit('bench.order.created', payload);
    await yieldToLoop();
  }
  await handled.done;
  return total / secondsSince(start);
}

async function amqpCase(
  name: string,
  target: number,
  ferry: (url: string) => Promise<number>,
  raw: (url: string) => Promise<number>,
  unit: string,
): Promise<void> {
  const ferryRates: number[] = [];
  const rawRates: number[] = [];
  const ratios: number[] = [];
  for (let run = 1; run <= RUNS; run++) {
    // A vhost per side: each measures on empty queues in its own message store, and both vhosts are
    // deleted only after both sides ran, so the broker's clean-up I/O never overlaps a measurement.
    const rawVhost = await createTestVhost('ferry-bench-raw');
    const ferryVhost = await createTestVhost('ferry-bench-ferry');
    try {
      // Alternate the order so neither side always runs on a warmer broker.
      let f: number;
      let r: number;
      if (run % 2 === 1) {
        r = await raw(vhostUrl(rawVhost));
        f = await ferry(vhostUrl(ferryVhost));
      } else {
        f = await ferry(vhostUrl(ferryVhost));
        r = await raw(vhostUrl(rawVhost));
      }
      ferryRates.push(f);
      rawRates.push(r);
      ratios.push(f / r);
      progress(
        `${name} run ${run}/${RUNS}: ferry ${round(f)} ${unit}, raw amqplib ${round(r)} ${unit}, ratio ${round(f / r, 2)}`,
      );
    } finally {
      await Promise.all([rawVhost.dispose(), ferryVhost.dispose()]);
    }
  }
  report({
    case: name,
    unit,
    messages: AMQP_MESSAGES,
    window: WINDOW,
    ferry: round(median(ferryRates)),
    baseline: 'raw amqplib',
    baselineValue: round(median(rawRates)),
    ratio: round(median(ratios), 3),
    target: `>= ${target}x`,
    pass: median(ratios) >= target,
    runs: RUNS,
  });
}

async function main(): Promise<void> {
  process.stderr.write(`ferry bench:bus — ${RUNS} runs per case, medians reported\n`);
  if (!only || only === 'amqp-publish-confirm') {
    await amqpCase(
      'amqp-publish-confirm',
      0.9,
      (url) => ferryPublish(url, AMQP_MESSAGES),
      (url) => rawPublish(url, AMQP_MESSAGES, 'raw.publish'),
      'msg/s',
    );
  }
  if (!only || only === 'amqp-end-to-end') {
    await amqpCase(
      'amqp-end-to-end',
      0.8,
      (url) => ferryEndToEnd(url, AMQP_MESSAGES),
      (url) => rawEndToEnd(url, AMQP_MESSAGES),
      'msg/s',
    );
  }
  if (!only || only === 'memory-async-handler') {
    const ferryRates: number[] = [];
    const emitterRates: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const f = await ferryMemory(MEMORY_MESSAGES);
      const e = await emitterMemory(MEMORY_MESSAGES);
      ferryRates.push(f);
      emitterRates.push(e);
      progress(
        `memory-async-handler run ${run}/${RUNS}: ferry ${round(f)} msg/s, EventEmitter ${round(e)} emits/s`,
      );
    }
    report({
      case: 'memory-async-handler',
      unit: 'msg/s',
      messages: MEMORY_MESSAGES,
      ferry: round(median(ferryRates)),
      baseline: 'node EventEmitter (async listener, no queue, no retry)',
      baselineValue: round(median(emitterRates)),
      ratio: round(median(ferryRates) / median(emitterRates), 3),
      target: '>= 1000000 msg/s',
      pass: median(ferryRates) >= 1_000_000,
      runs: RUNS,
    });
  }
  if (!only || only === 'memory-rss') {
    // Each run in a fresh process: earlier cases must not have raised the RSS high-water mark.
    const samples: { at100k: number; atEnd: number }[] = [];
    for (let run = 1; run <= RUNS; run++) {
      const sample = await rssChild();
      samples.push(sample);
      progress(
        `memory-rss run ${run}/${RUNS}: RSS ${round(sample.at100k)} MB at 100k, ${round(sample.atEnd)} MB at 1M`,
      );
    }
    const growth = median(samples.map((s) => s.atEnd - s.at100k));
    report({
      case: 'memory-rss',
      unit: 'MB',
      messages: MEMORY_MESSAGES,
      rssAt100kMb: round(median(samples.map((s) => s.at100k)), 1),
      rssAt1mMb: round(median(samples.map((s) => s.atEnd)), 1),
      growthMb: round(growth, 1),
      target: '<= 50 MB growth',
      pass: growth <= 50,
      runs: RUNS,
    });
  }
}

/** Runs this script in a child process that measures RSS over one in-memory run. */
async function rssChild(): Promise<{ at100k: number; atEnd: number }> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [...process.execArgv, process.argv[1]!, '--rss-child', '--memory-messages', String(MEMORY_MESSAGES)],
    { timeout: 300_000 },
  );
  return JSON.parse(stdout.trim().split('\n').pop()!) as { at100k: number; atEnd: number };
}

async function rssChildMain(): Promise<void> {
  let at100k = 0;
  await ferryMemory(MEMORY_MESSAGES, (handled) => {
    if (handled === 100_000) at100k = process.memoryUsage.rss() / 2 ** 20;
  });
  process.stdout.write(`${JSON.stringify({ at100k, atEnd: process.memoryUsage.rss() / 2 ** 20 })}\n`);
}

if (process.argv.includes('--rss-child')) await rssChildMain();
else await main();
