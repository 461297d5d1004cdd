import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { MemoryInbox } from '../inbox/inbox.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts } from '../messaging/contracts.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { sleep, waitFor } from '../testing/wait.js';
import { testVhosts } from './fixtures/test-vhosts.js';
import { subscriptionQueueName } from './topology.js';

const { vhost, defer } = testVhosts('ferry-fault');

async function bus(url: string, service: string, inbox?: MemoryInbox): Promise<Bus<Contracts>> {
  const b = await createBus({
    url,
    service,
    logger: silentLogger,
    ...(inbox ? { inbox } : {}),
    amqp: { reconnect: { initialDelayMs: 50, maxDelayMs: 500 } },
  });
  defer(() => b.close());
  return b as Bus<Contracts>;
}

/**
 * Closes the vhost's connections once some are open: under load a kill could land while the buses were
 * still reconnecting from the previous one (or rabbitmqctl ran late) and close none, leaving fewer
 * real faults than the test counts on. Tries for up to 5 s; resolves how many it closed.
 */
async function closeLiveConnections(v: {
  closeConnections(reason?: string): Promise<number>;
}): Promise<number> {
  const until = Date.now() + 5000;
  for (;;) {
    const closed = await v.closeConnections('fault test');
    if (closed > 0 || Date.now() > until) return closed;
    await sleep(100);
  }
}

describe('RabbitMQ transport under connection faults', () => {
  it('loses nothing accepted by publish while every connection is closed four times, and the inbox handles each once', async () => {
    // Must not be lost: every message whose publish() resolved. Must not repeat: handler runs per id.
    const v = await vhost();
    const consumer = await bus(v.url, 'payments', new MemoryInbox());
    const producer = await bus(v.url, 'orders');
    const handledCount = new Map<string, number>();
    let deliveries = 0;
    await consumer.subscribe(
      'order.#',
      async (m) => {
        deliveries++;
        if (m.attempt === 1 && deliveries % 997 === 0) throw new Error('transient failure'); // exercises delayed retry too
        handledCount.set(m.id, (handledCount.get(m.id) ?? 0) + 1);
      },
      { concurrency: 32, backoff: { initialDelayMs: 50, maxDelayMs: 200 } },
    );

    const total = 10_000;
    const accepted = new Set<string>();
    const rejected: unknown[] = [];
    const kills: Promise<number>[] = [];
    const inFlight = new Set<Promise<void>>();
    for (let i = 0; i < total; i++) {
      const id = `m-${i}`;
      const p = producer
        .publish('order.created', { i }, { id })
        .then(() => void accepted.add(id))
        .catch((error: unknown) => void rejected.push(error))
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= 300) await Promise.race(inFlight);
      if (i > 0 && i % 2000 === 0) {
        kills.push(closeLiveConnections(v));
        await sleep(150);
      }
    }
    await Promise.all(inFlight);
    const closed = await Promise.all(kills);

    expect(rejected).toEqual([]);
    expect(accepted.size).toBe(total);
    // Each kill hit live connections (publisher and consumer), so the faults were real.
    expect(closed.filter((n) => n > 0).length).toBeGreaterThanOrEqual(3);
    await waitFor(
      () => [...accepted].every((id) => handledCount.has(id)),
      () => `every accepted message handled (${handledCount.size}/${accepted.size})`,
      60_000,
    );
    const repeated = [...handledCount].filter(([, n]) => n !== 1);
    expect(repeated).toEqual([]);
    expect(await consumer.listDeadLetters({ group: 'payments' })).toEqual([]);
  }, 120_000);

  it('consumes a plain amqplib producer across a connection kill: valid messages handled, malformed ones dead-lettered', async () => {
    // Must not be lost: any of the producer's confirmed messages, valid (handled) or malformed (dead-lettered).
    const v = await vhost();
    const consumer = await bus(v.url, 'legacy-reader', new MemoryInbox());
    const handled = new Map<string, unknown>();
    await consumer.subscribe('order.created', async (m) => void handled.set(m.id, m.data));

    // What the classic tutorial's MessageBroker.publish sends: JSON, persistent, messageId, timestamp.
    const valid: string[] = [];
    const malformed: string[] = [];
    async function produce(from: number): Promise<void> {
      const connection = await amqp.connect(v.url);
      defer(() => connection.close());
      const channel = await connection.createConfirmChannel();
      for (let i = from; i < from + 100; i++) {
        const messageId = randomUUID();
        const bad = i % 10 === 7;
        const body = Buffer.from(bad ? `{"orderId": ${i}, oops` : JSON.stringify({ orderId: i }));
        channel.publish('ferry.events', 'order.created', body, {
          persistent: true,
          messageId,
          timestamp: Date.now(),
        });
        (bad ? malformed : valid).push(messageId);
      }
      await channel.waitForConfirms();
    }
    await produce(0);
    // Kill every connection of the vhost while the consumer is still working through the first batch.
    expect(await v.closeConnections('fault test')).toBeGreaterThanOrEqual(2);
    await produce(100);

    await waitFor(
      () => valid.every((id) => handled.has(id)),
      () => `valid messages handled (${handled.size}/${valid.length})`,
      30_000,
    );
    await waitFor(
      async () =>
        (await consumer.listDeadLetters({ group: 'legacy-reader', limit: 1000 })).length >= malformed.length,
      'malformed messages dead-lettered',
      30_000,
    );
    const dead = await consumer.listDeadLetters({ group: 'legacy-reader', limit: 1000 });
    expect(dead.map((d) => d.envelope?.id ?? JSON.stringify(d.body)).length).toBe(malformed.length);
    for (const d of dead) {
      expect(d.reason.kind).toBe('malformed');
      expect(d.reason.message).toMatch(/not valid JSON/);
      expect(d.routingKey).toBe('order.created');
      expect(d.body).toMatch(/^\{"orderId": \d+, oops$/);
    }
    expect(handled.size).toBe(valid.length);
    expect(handled.get(valid[0]!)).toEqual({ orderId: 0 });
  }, 60_000);
});

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

function startFixture(name: string, env: Record<string, string>): ChildProcess {
  const child = spawnFixture(fixture(name), env);
  defer(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return child;
}

describe('RabbitMQ transport when a process is SIGKILLed', () => {
  it('keeps every message whose publish resolved before the publisher was killed', async () => {
    // Must not be lost: each id the publisher process printed after its publish() resolved.
    const v = await vhost();
    const reader = await bus(v.url, 'audit', new MemoryInbox());
    const received = new Set<string>();
    await reader.subscribe('ledger.#', async (m) => void received.add(m.id));

    const confirmed: string[] = [];
    const child = startFixture('publisher-process.ts', { AMQP_URL: v.url });
    onLines(child, (line) => {
      if (line.startsWith('confirmed ')) confirmed.push(line.slice('confirmed '.length));
    });
    await waitFor(() => confirmed.length >= 2000, 'the publisher to get 2000 confirms', 30_000);
    child.kill('SIGKILL');
    await once(child, 'exit');
    const mustHave = [...confirmed];
    await waitFor(
      () => mustHave.every((id) => received.has(id)),
      () =>
        `confirmed messages received (${mustHave.filter((id) => received.has(id)).length}/${mustHave.length})`,
      30_000,
    );
  }, 60_000);

  it('redelivers what a SIGKILLed consumer had not acknowledged to the next consumer', async () => {
    // Must not be lost: any of the 500 messages, although the first consumer dies holding some unacknowledged.
    const v = await vhost();
    const producer = await bus(v.url, 'shipping');
    const child = startFixture('consumer-process.ts', { AMQP_URL: v.url });
    const handledByChild = new Set<string>();
    let ready = false;
    onLines(child, (line) => {
      if (line === 'ready') ready = true;
      if (line.startsWith('handled ')) handledByChild.add(line.slice('handled '.length));
    });
    await waitFor(() => ready, 'the consumer process to subscribe', 30_000);
    const ids = Array.from({ length: 500 }, (_, i) => `ship-${i}`);
    await Promise.all(ids.map((id, i) => producer.publish('parcel.sent', { i }, { id })));
    await waitFor(() => handledByChild.size >= 50, 'the consumer to handle some', 30_000);
    child.kill('SIGKILL');
    await once(child, 'exit');

    const handledBySuccessor = new Set<string>();
    const successor = await bus(v.url, 'tracking');
    await successor.subscribe('parcel.sent', async (m) => void handledBySuccessor.add(m.id), {
      group: 'tracking',
    });
    await waitFor(
      () => ids.every((id) => handledByChild.has(id) || handledBySuccessor.has(id)),
      () => `every parcel handled (${handledByChild.size} + ${handledBySuccessor.size})`,
      30_000,
    );
    expect(handledBySuccessor.size).toBeGreaterThan(0);
  }, 60_000);

  it.each([
    ['classic', 1],
    ['quorum', 1],
    ['classic', 8],
    ['quorum', 8],
  ] as const)(
    'dead-letters a message that kills every consumer after maxRedeliveries, and handles the rest (%s queues, concurrency %i)',
    async (queueType, concurrency) => {
      // Must not be lost: any of the 30 good messages, nor the poison one (it ends in the dead-letter
      // queue once, reason 'redelivered'). Must not happen: a crash loop without end, copies of the
      // poison message, or good messages held with it counted towards the limit.
      const v = await vhost();
      const producer = await bus(v.url, 'scheduler');
      const handled = new Set<string>();
      const poisonDeliveries: string[] = [];
      let deaths = 0;
      let ready = false;
      let stopping = false;
      const start = (): void => {
        const child = startFixture('poison-consumer-process.ts', {
          AMQP_URL: v.url,
          QUEUE_TYPE: queueType,
          CONCURRENCY: String(concurrency),
        });
        onLines(child, (line) => {
          if (line === 'ready') ready = true;
          if (line.startsWith('handled ')) handled.add(line.slice('handled '.length));
          if (line.startsWith('delivered poison-pill ')) poisonDeliveries.push(line);
        });
        child.on('exit', () => {
          deaths++;
          if (!stopping) start();
        });
      };
      start();
      defer(async () => {
        stopping = true;
      });
      await waitFor(() => ready, 'the worker to subscribe', 30_000);
      const good = Array.from({ length: 30 }, (_, i) => `job-${i}`);
      for (const [i, id] of good.entries()) {
        await producer.publish('job.run', { i }, { id });
        if (i === 14) await producer.publish('job.run', { poison: true }, { id: 'poison-pill' });
      }
      await waitFor(
        () => good.every((id) => handled.has(id)),
        () => `every good job (${handled.size})`,
        60_000,
      );
      let dead: Awaited<ReturnType<typeof producer.listDeadLetters>> = [];
      await waitFor(
        async () => {
          dead = await producer.listDeadLetters({ group: 'worker' });
          return dead.length >= 1;
        },
        'the poison pill in the dead-letter queue',
        30_000,
      );
      // Time for any copy of the poison message to crash the worker again or reach the dead letters.
      await sleep(3000);
      dead = await producer.listDeadLetters({ group: 'worker' });
      expect(dead.map((d) => d.envelope?.id)).toEqual(['poison-pill']);
      expect(dead[0]).toMatchObject({ reason: { kind: 'redelivered' } });
      expect(dead[0]!.reason.message).toMatch(/3 times in a row/);
      expect(handled.has('poison-pill')).toBe(false);
      // The first delivery and two counted redeliveries each killed the worker; the third went to the dead letters.
      expect(deaths).toBe(3);
      // Each counted copy still says what it is, though it reached the queue through the default exchange.
      expect(poisonDeliveries).toEqual(Array(3).fill('delivered poison-pill job.run'));
      expect(dead[0]!.routingKey).toBe('job.run');
      // Nothing left behind: no copy waits in the subscription queue or the redelivered queue.
      const connection = await amqp.connect(v.url);
      defer(() => connection.close());
      const channel = await connection.createChannel();
      for (const queue of ['ferry:worker:job.run', 'ferry:worker:job.run:redelivered']) {
        const { messageCount } = await channel.checkQueue(queue).catch(() => ({ messageCount: 0 }));
        expect(messageCount, queue).toBe(0);
      }
      stopping = true;
    },
    120_000,
  );

  it.each(['classic', 'quorum'] as const)(
    'moves a full prefetch held with a poison message without copying any of it (%s queues)',
    async (queueType) => {
      // The poison message is first of 8 waiting when the worker starts, so it kills the worker before
      // any other one runs. Must not happen: a good message handled twice (a copy made while moving the
      // prefetch aside), dead-lettered, or left behind; the poison one dead-lettered more than once.
      const v = await vhost();
      const producer = await bus(v.url, 'scheduler');
      const start = (): ChildProcess =>
        startFixture('poison-consumer-process.ts', {
          AMQP_URL: v.url,
          QUEUE_TYPE: queueType,
          CONCURRENCY: '8',
        });
      // A first run declares the queues; it is stopped before anything is published.
      const first = start();
      await new Promise<void>((resolve) => onLines(first, (line) => line === 'ready' && resolve()));
      first.kill('SIGKILL');
      await once(first, 'exit');
      // The broker learns of the death a moment later: a message published before that could go to
      // the dead consumer and come back redelivered, counted once without any worker running it.
      const probe = await amqp.connect(v.url);
      defer(() => probe.close());
      const probeChannel = await probe.createChannel();
      await waitFor(
        async () => (await probeChannel.checkQueue('ferry:worker:job.run')).consumerCount === 0,
        'the broker to drop the killed worker’s consumer',
        30_000,
      );
      await producer.publish('job.run', { poison: true }, { id: 'poison-pill' });
      const good = Array.from({ length: 7 }, (_, i) => `job-${i}`);
      for (const id of good) await producer.publish('job.run', {}, { id });

      const handled = new Map<string, number>();
      let deaths = 0;
      let stopping = false;
      const run = (): void => {
        const child = start();
        onLines(child, (line) => {
          if (line.startsWith('handled ')) {
            const id = line.slice('handled '.length);
            handled.set(id, (handled.get(id) ?? 0) + 1);
          }
        });
        child.on('exit', () => {
          deaths++;
          if (!stopping) run();
        });
      };
      run();
      defer(async () => {
        stopping = true;
      });
      await waitFor(
        async () =>
          good.every((id) => handled.has(id)) &&
          (await producer.listDeadLetters({ group: 'worker' })).length > 0,
        () => `every good job (${handled.size}) and the poison one dead-lettered`,
        60_000,
      );
      await sleep(3000);
      const dead = await producer.listDeadLetters({ group: 'worker' });
      expect(dead.map((d) => d.envelope?.id)).toEqual(['poison-pill']);
      expect(deaths).toBe(3);
      expect(Object.fromEntries(handled)).toEqual(Object.fromEntries(good.map((id) => [id, 1])));
      const connection = await amqp.connect(v.url);
      defer(() => connection.close());
      const channel = await connection.createChannel();
      for (const queue of ['ferry:worker:job.run', 'ferry:worker:job.run:redelivered']) {
        expect((await channel.checkQueue(queue)).messageCount, queue).toBe(0);
      }
      stopping = true;
    },
    120_000,
  );
});

describe('RabbitMQ transport when an operator deletes queues', () => {
  it('declares a deleted dead-letter queue again and dead-letters into it, rather than rerun the message every 10 s', async () => {
    // Must not be lost: the failing message, which must end in the dead-letter queue.
    const v = await vhost();
    const consumer = await bus(v.url, 'dlq-gone');
    let runs = 0;
    await consumer.subscribe(
      'job.failing',
      async () => {
        runs++;
        throw new Error('always');
      },
      { maxAttempts: 1 },
    );
    const connection = await amqp.connect(v.url);
    defer(() => connection.close());
    const channel = await connection.createChannel();
    await channel.deleteQueue('ferry:dlq-gone:dead-letter');
    await consumer.publish('job.failing', { n: 1 }, { id: 'lost-dlq' });
    await waitFor(
      // A listing cut by the reconnect rejects (BROKER_CONNECTION): asked again.
      async () =>
        (await consumer.listDeadLetters().catch(() => [])).some((d) => d.envelope?.id === 'lost-dlq'),
      () => `the message dead-lettered into the declared-again queue (${runs} runs)`,
      20_000,
    );
    // Run again at most once more (given back when the subscription was attached again), not every 10 s.
    expect(runs).toBeLessThanOrEqual(2);
  }, 30_000);
});

describe('RabbitMQ transport and messages sent straight to a queue', () => {
  it('refuses a type header naming a type the subscription pattern does not match (dead-lettered malformed)', async () => {
    // Must not happen: a message handed to an `sq.*` handler as `admin.drop-all`. Must not be lost:
    // the message, which must end in the dead-letter queue with the reason.
    const v = await vhost();
    const consumer = await bus(v.url, 'sq');
    const handled: string[] = [];
    await consumer.subscribe('sq.*', async (m) => void handled.push(`${m.id}:${m.type}`));
    const connection = await amqp.connect(v.url);
    defer(() => connection.close());
    const channel = await connection.createConfirmChannel();
    const queue = subscriptionQueueName('sq', 'sq.*');
    await channel.checkQueue(queue);
    channel.sendToQueue(queue, Buffer.from('{}'), {
      messageId: 'forged-type',
      headers: { 'x-ferry-routing-key': 'admin.drop-all' },
    });
    channel.sendToQueue(queue, Buffer.from('{}'), {
      messageId: 'own-type',
      headers: { 'x-ferry-routing-key': 'sq.ok' },
    });
    await channel.waitForConfirms();
    await waitFor(() => handled.length === 1, 'the message whose type matches');
    await waitFor(
      async () => (await consumer.listDeadLetters()).length === 1,
      'the forged one dead-lettered',
      10_000,
    );
    const [dead] = await consumer.listDeadLetters();
    expect(dead!.reason).toMatchObject({
      kind: 'malformed',
      message: `the message type "admin.drop-all" does not match the subscription's pattern "sq.*"`,
    });
    expect(handled).toEqual(['own-type:sq.ok']);
  }, 30_000);
});

describe('RabbitMQ transport and plain messages over maxMessageBytes', () => {
  it('retries, dead-letters and gives an id to a plain message the broker took though it is over maxMessageBytes, as memory does', async () => {
    // Must not happen: a message no retry, dead letter or id could be published for (each move refused
    // MessageTooLargeError), given back to its queue for ever. Must not be lost: each message, handled
    // or in the dead letters.
    const v = await vhost();
    const consumer = await createBus({
      url: v.url,
      service: 'big',
      logger: silentLogger,
      amqp: { maxMessageBytes: 1000 },
      subscriptionDefaults: { maxAttempts: 2, backoff: { initialDelayMs: 10, maxDelayMs: 10 } },
    });
    defer(() => consumer.close());
    const runs: { type: string; id: string; attempt: number }[] = [];
    await consumer.subscribe('big.#', async (m) => {
      runs.push({ type: m.type, id: m.id, attempt: m.attempt });
      if (m.type === 'big.failing') throw new Error('refused');
    });
    const connection = await amqp.connect(v.url);
    defer(() => connection.close().catch(() => {}));
    const channel = await connection.createConfirmChannel();
    const body = (n: number) => Buffer.from(JSON.stringify({ pad: 'x'.repeat(2000), n }));
    channel.publish('ferry.events', 'big.failing', body(1), { messageId: 'big-failing', persistent: true });
    channel.publish('ferry.events', 'big.idless', body(2), { persistent: true });
    channel.publish('ferry.events', 'big.malformed', Buffer.from(`{${'x'.repeat(2000)}`), {
      messageId: 'big-malformed',
      persistent: true,
    });
    await channel.waitForConfirms();
    let letters: Awaited<ReturnType<typeof consumer.listDeadLetters>> = [];
    await waitFor(async () => {
      letters = await consumer.listDeadLetters({ group: 'big' });
      return letters.length === 2;
    }, 'two dead letters');
    expect(letters.map((l) => [l.reason.kind, l.attempts]).sort()).toEqual([
      ['handler-error', 2],
      ['malformed', 1],
    ]);
    await waitFor(() => runs.some((r) => r.type === 'big.idless'), 'the message without an id to run');
    expect(runs.filter((r) => r.type === 'big.failing').map((r) => r.attempt)).toEqual([1, 2]);
    expect(runs.filter((r) => r.type === 'big.idless')).toHaveLength(1);
    // A replay sends the letter back too.
    const failed = letters.filter((l) => l.reason.kind === 'handler-error').map((l) => l.deadLetterId);
    await consumer.replayDeadLetters({ group: 'big', deadLetterIds: failed });
    await waitFor(
      () => runs.filter((r) => r.type === 'big.failing').length === 4,
      'the replayed letter to run',
    );
  }, 30_000);
});

describe('RabbitMQ transport and plain messages without an id', () => {
  it('keeps the id it gives a message without one when the connection is lost mid-run, so the inbox runs it once', async () => {
    // Must not happen: the broker gives the message back after the connection loss and it comes
    // under another id, so the inbox runs it beside its first run (both to the end). Must not be
    // lost: the message, handled to the end once.
    const v = await vhost();
    const consumer = await bus(v.url, 'idless', new MemoryInbox());
    const ids: string[] = [];
    let completed = 0;
    await consumer.subscribe('idless.job', async (m) => {
      ids.push(m.id);
      await sleep(1500);
      completed++;
    });
    const connection = await amqp.connect(v.url);
    defer(() => connection.close().catch(() => {}));
    const channel = await connection.createConfirmChannel();
    channel.publish('ferry.events', 'idless.job', Buffer.from('{"n":1}'), { persistent: true });
    await channel.waitForConfirms();
    await waitFor(() => ids.length === 1, 'the first run');
    await sleep(300);
    expect(await v.closeConnections('fault test')).toBeGreaterThanOrEqual(1);
    await waitFor(() => completed >= 1, 'the run to end', 20_000);
    await sleep(2500);
    expect(completed).toBe(1);
    expect(new Set(ids).size).toBe(1);
  }, 40_000);
});
