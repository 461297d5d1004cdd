/**
 * `npm run bench:bus` — the message bus against its baselines, in one process run.
 *
 * Cases (one JSON line each on stdout, progress on stderr):
 *   amqp-publish-confirm-quorum   Ferry publish vs raw amqplib confirm channel, same window, persistent,
 *                                 durable quorum queue (Ferry's default)
 *   amqp-end-to-end-quorum        publish -> handler -> ack, Ferry vs raw amqplib, same window and prefetch
 *   amqp-publish-confirm-classic  the same on classic queues (queueType: 'classic'; raw amqplib on classic too)
 *   amqp-end-to-end-classic
 *   memory-async-handler  in-memory publish -> async handler, Ferry vs Node EventEmitter
 *   memory-rss            RSS after 1,000,000 in-memory messages vs after the first 100,000
 *
 * Options: --runs N (default 7; the median is reported), --messages N (AMQP, default 30000),
 * --memory-messages N (default 1000000, at least 200000), --only <case> (a full name, or `amqp-publish-confirm` /
 * `amqp-end-to-end` for both queue types), --queue-types quorum,classic (the default: both, quorum
 * first). AMQP URL from FERRY_BENCH_AMQP_URL.
 * Each side of an AMQP case runs in a fresh vhost of its own, so that queues and clean-up of one
 * side or of earlier runs cannot interfere with the other; the sides alternate in short slices and
 * the ratio is the median of the ratios of neighbouring slices.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import amqp, { type ConfirmChannel } from 'amqplib';
import { createBus, MemoryBroker, MemoryTransport, silentLogger } from 'ferry';
import type { QueueType } from 'ferry/amqp';
import {
  argValue,
  benchVhost,
  countdown,
  median,
  onlyCase,
  progress,
  pump,
  report,
  round,
  runBenchmark,
  secondsSince,
} from './support.js';

const RUNS = argValue('runs', 7);
const AMQP_MESSAGES = argValue('messages', 30_000);
const MEMORY_MESSAGES = argValue('memory-messages', 1_000_000, 200_000);
const WINDOW = 1000;
const PREFETCH = 100;
const only = onlyCase([
  'amqp-publish-confirm',
  'amqp-end-to-end',
  ...['quorum', 'classic'].flatMap((type) => [`amqp-publish-confirm-${type}`, `amqp-end-to-end-${type}`]),
  'memory-async-handler',
  'memory-rss',
]);
const QUEUE_TYPES = (
  process.argv.includes('--queue-types')
    ? (process.argv[process.argv.indexOf('--queue-types') + 1] ?? '').split(',')
    : ['quorum', 'classic']
).filter((t): t is QueueType => t === 'quorum' || t === 'classic');
const payload = {
  orderId: 'order-000042',
  customerId: 'customer-7',
  items: [{ sku: 'SKU-1', qty: 2 }],
  total: 59.9,
};
/** Raw clients serialise each message as the tutorial's publisher does: `Buffer.from(JSON.stringify(message))`. */
const encode = () => Buffer.from(JSON.stringify(payload));

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

/** One side of an AMQP case, set up once per run: each slice publishes `count` more messages. */
interface Side {
  /** Seconds taken by `count` more messages. */
  slice(count: number): Promise<number>;
  close(): Promise<void>;
}

async function rawPublisher(url: string, queueType: QueueType): Promise<Side> {
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange('raw.events', 'topic', { durable: true });
  await channel.assertQueue('raw.publish', { durable: true, arguments: { 'x-queue-type': queueType } });
  await channel.bindQueue('raw.publish', 'raw.events', 'bench.#');
  return {
    async slice(count) {
      const start = performance.now();
      await rawPublishAll(channel, count);
      return secondsSince(start);
    },
    close: () => connection.close(),
  };
}

function benchBus(url: string, queueType: QueueType) {
  return createBus({
    url,
    service: 'bench',
    logger: silentLogger,
    amqp: { publishWindow: WINDOW, queueType },
  });
}

/** Ferry with the same window as the raw client: at most WINDOW publishes outstanding. */
function ferryPublishAll(bus: Awaited<ReturnType<typeof benchBus>>, total: number): Promise<void> {
  return pump(total, WINDOW, (_i, done) => {
    bus.publish('bench.order.created', payload).then(() => done(), done);
  });
}

async function ferryPublisher(url: string, queueType: QueueType): Promise<Side> {
  const bus = await benchBus(url, queueType);
  // A subscription declares the durable queue; it is closed so that nothing consumes while publishing.
  await (await bus.subscribe('bench.#', async () => {}, { group: 'pub-only' })).close();
  return {
    async slice(count) {
      const start = performance.now();
      await ferryPublishAll(bus, count);
      return secondsSince(start);
    },
    close: () => bus.close(),
  };
}

/** Waits until `handled()` reaches `target`. */
async function until(handled: () => number, target: number): Promise<void> {
  while (handled() < target) await new Promise((resolve) => setImmediate(resolve));
}

async function rawEndToEnd(url: string, queueType: QueueType): Promise<Side> {
  const connection = await amqp.connect(url);
  const publisher = await connection.createConfirmChannel();
  const consumer = await connection.createChannel();
  await publisher.assertExchange('raw.events', 'topic', { durable: true });
  await consumer.assertQueue('raw.e2e', { durable: true, arguments: { 'x-queue-type': queueType } });
  await consumer.bindQueue('raw.e2e', 'raw.events', 'bench.#');
  await consumer.prefetch(PREFETCH);
  let handled = 0;
  const handler = async (data: unknown) => data;
  await consumer.consume('raw.e2e', (message) => {
    if (message === null) return;
    void handler(JSON.parse(message.content.toString('utf8'))).then(() => {
      consumer.ack(message);
      handled++;
    });
  });
  let sent = 0;
  return {
    async slice(count) {
      const start = performance.now();
      await rawPublishAll(publisher, count);
      sent += count;
      await until(() => handled, sent);
      return secondsSince(start);
    },
    close: () => connection.close(),
  };
}

async function ferryEndToEnd(url: string, queueType: QueueType): Promise<Side> {
  const bus = await benchBus(url, queueType);
  let handled = 0;
  await bus.subscribe(
    'bench.#',
    async () => {
      handled++;
    },
    { group: 'e2e', concurrency: PREFETCH },
  );
  let sent = 0;
  return {
    async slice(count) {
      const start = performance.now();
      await ferryPublishAll(bus, count);
      sent += count;
      await until(() => handled, sent);
      return secondsSince(start);
    },
    close: () => bus.close(),
  };
}

const BATCH = 1000;
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** In-memory: publish in batches, yielding between them, until every async handler ran. */
/** `onHandled` is called once every handler of the first `handled` messages ran (before the bus closes). */
async function ferryMemory(total: number, onHandled?: (handled: number) => void): Promise<number> {
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
      if (onHandled !== undefined && (n % 100_000 === 0 || n === total)) onHandled(n);
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

/**
 * Each run gives each side a vhost of its own (empty queues, its own message store; both deleted
 * only after both ran), then interleaves short slices of the two sides and compares neighbouring
 * slices: the broker's speed on this machine drifts by tens of percent within a run.
 */
async function amqpCase(
  base: string,
  queueType: QueueType,
  target: number,
  makeFerry: (url: string, queueType: QueueType) => Promise<Side>,
  makeRaw: (url: string, queueType: QueueType) => Promise<Side>,
  unit: string,
): Promise<void> {
  const name = `${base}-${queueType}`;
  const SLICES = 6;
  const perSlice = Math.ceil(AMQP_MESSAGES / SLICES);
  const ferryRates: number[] = [];
  const rawRates: number[] = [];
  const sliceRatios: number[] = [];
  for (let run = 1; run <= RUNS; run++) {
    const [rawVhost, ferryVhost] = await Promise.all([
      benchVhost('ferry-bench-raw'),
      benchVhost('ferry-bench-ferry'),
    ]);
    try {
      const ferry = await makeFerry(ferryVhost.url, queueType);
      const raw = await makeRaw(rawVhost.url, queueType);
      await ferry.slice(1000); // warm-up, not counted
      await raw.slice(1000);
      let ferrySeconds = 0;
      let rawSeconds = 0;
      for (let slice = 0; slice < SLICES; slice++) {
        let f: number;
        let r: number;
        if ((slice + run) % 2 === 0) {
          f = await ferry.slice(perSlice);
          r = await raw.slice(perSlice);
        } else {
          r = await raw.slice(perSlice);
          f = await ferry.slice(perSlice);
        }
        ferrySeconds += f;
        rawSeconds += r;
        sliceRatios.push(r / f);
      }
      await ferry.close();
      await raw.close();
      ferryRates.push((perSlice * SLICES) / ferrySeconds);
      rawRates.push((perSlice * SLICES) / rawSeconds);
      progress(
        `${name} run ${run}/${RUNS}: ferry ${round(ferryRates.at(-1)!)} ${unit}, raw amqplib ${round(rawRates.at(-1)!)} ${unit}, ratio ${round(ferryRates.at(-1)! / rawRates.at(-1)!, 2)}`,
      );
    } finally {
      await Promise.all([rawVhost.remove(), ferryVhost.remove()]);
    }
  }
  const ratio = median(sliceRatios);
  report({
    case: name,
    queueType,
    unit,
    messages: AMQP_MESSAGES,
    window: WINDOW,
    slices: sliceRatios.length,
    ferry: round(median(ferryRates)),
    baseline: 'raw amqplib',
    baselineValue: round(median(rawRates)),
    ratio: round(ratio, 3),
    target: `>= ${target}x`,
    pass: ratio >= target,
    runs: RUNS,
  });
}

async function main(): Promise<void> {
  process.stderr.write(`ferry bench:bus — ${RUNS} runs per case, medians reported\n`);
  for (const queueType of QUEUE_TYPES) {
    if (!only || only === 'amqp-publish-confirm' || only === `amqp-publish-confirm-${queueType}`) {
      await amqpCase('amqp-publish-confirm', queueType, 0.9, ferryPublisher, rawPublisher, 'msg/s');
    }
    if (!only || only === 'amqp-end-to-end' || only === `amqp-end-to-end-${queueType}`) {
      await amqpCase('amqp-end-to-end', queueType, 0.8, ferryEndToEnd, rawEndToEnd, 'msg/s');
    }
  }
  if (!only || only === 'memory-async-handler') {
    const ferryRates: number[] = [];
    const emitterRates: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      // In turn first: the first of the two meets a heap the other has not grown yet.
      let f = run % 2 === 1 ? await ferryMemory(MEMORY_MESSAGES) : 0;
      const e = await emitterMemory(MEMORY_MESSAGES);
      if (run % 2 === 0) f = await ferryMemory(MEMORY_MESSAGES);
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
        `memory-rss run ${run}/${RUNS}: RSS ${round(sample.at100k)} MB at 100,000, ${round(sample.atEnd)} MB at ${MEMORY_MESSAGES}`,
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
  let atEnd = 0;
  // Both samples while the bus is open: closing it could free what a leak holds.
  await ferryMemory(MEMORY_MESSAGES, (handled) => {
    if (handled === 100_000) at100k = process.memoryUsage.rss() / 2 ** 20;
    if (handled === MEMORY_MESSAGES) atEnd = process.memoryUsage.rss() / 2 ** 20;
  });
  process.stdout.write(`${JSON.stringify({ at100k, atEnd })}\n`);
}

if (process.argv.includes('--rss-child')) await rssChildMain();
else await runBenchmark('bench:bus', main);
