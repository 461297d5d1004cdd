import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import type { Logger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import { sleep, waitFor } from '../testing/wait.js';
import type { AmqpTransportOptions } from './amqp-transport.js';
import { testVhosts } from './fixtures/test-vhosts.js';
import { isInequivalentQueueError } from './inequivalent-queue-error.js';
import { deadLetterQueueName, type QueueType, subscriptionTopology } from './topology.js';

const { vhost, defer } = testVhosts('ferry-queue-type');

interface Recorded {
  readonly level: 'warn' | 'error';
  readonly message: string;
  readonly fields: Record<string, unknown> | undefined;
}

function recordingLogger(): Logger & { readonly lines: Recorded[] } {
  const lines: Recorded[] = [];
  return {
    lines,
    debug: () => {},
    info: () => {},
    warn: (message, fields) => void lines.push({ level: 'warn', message, fields }),
    error: (message, fields) => void lines.push({ level: 'error', message, fields }),
  };
}

type AmqpOptions = Omit<AmqpTransportOptions, 'url' | 'logger'>;

async function bus(url: string, amqpOptions: AmqpOptions, logger: Logger): Promise<Bus> {
  const b = await createBus({
    url,
    service: 'billing',
    logger,
    amqp: { ...amqpOptions, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } },
  });
  defer(() => b.close());
  return b;
}

/** Consumers of `queue` (0 when it does not exist): a check of a missing queue closes its channel, so one channel per check. */
async function consumersOf(connection: amqp.ChannelModel, queue: string): Promise<number> {
  const check = await connection.createChannel();
  check.on('error', () => {});
  try {
    return (await check.checkQueue(queue)).consumerCount;
  } catch {
    return 0;
  } finally {
    await check.close().catch(() => {});
  }
}

const PATTERN = 'order.*';
const SUBSCRIBE = { maxAttempts: 2, backoff: { initialDelayMs: 100, factor: 2, maxDelayMs: 100 } };
const topology = subscriptionTopology({
  group: 'billing',
  pattern: PATTERN,
  concurrency: 1,
  retryDelays: [100],
});
const QUEUES = [
  topology.queue,
  topology.retryQueues.get(100)!,
  topology.redeliveredQueue,
  deadLetterQueueName('billing'),
];

/** The arguments Ferry declares each queue with, as `type`. */
function argumentsOf(queue: string, type: QueueType): Record<string, unknown> {
  if (queue !== topology.retryQueues.get(100)) return { 'x-queue-type': type };
  return {
    'x-queue-type': type,
    'x-message-ttl': 100,
    'x-dead-letter-exchange': '',
    'x-dead-letter-routing-key': topology.queue,
    ...(type === 'quorum'
      ? { 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' }
      : {}),
  };
}

/** The type each queue has: the one whose arguments the broker accepts on a declare. */
async function queueTypes(url: string): Promise<Record<string, QueueType>> {
  const connection = await amqp.connect(url);
  try {
    const types: Record<string, QueueType> = {};
    for (const queue of QUEUES) {
      for (const type of ['classic', 'quorum'] as const) {
        const channel = await connection.createChannel();
        channel.on('error', () => {});
        const accepted = await channel
          .assertQueue(queue, { durable: true, arguments: argumentsOf(queue, type) })
          .then(() => true)
          .catch(() => false);
        if (accepted) types[queue] = type;
        await channel.close().catch(() => {});
      }
    }
    return types;
  } finally {
    await connection.close();
  }
}

function typeWarnings(logger: { readonly lines: Recorded[] }): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of logger.lines) {
    if (line.level !== 'warn' || !/ exists as a (classic|quorum) queue /.test(line.message)) continue;
    const queue = String(line.fields?.queue);
    counts[queue] = (counts[queue] ?? 0) + 1;
  }
  return counts;
}

describe('RabbitMQ queue type', () => {
  it('declares quorum queues by default', async () => {
    const v = await vhost();
    const b = await bus(v.url, {}, recordingLogger());
    await b.subscribe(PATTERN, async () => {}, SUBSCRIBE);
    expect(await queueTypes(v.url)).toEqual(Object.fromEntries(QUEUES.map((q) => [q, 'quorum'])));
  });

  const upgrades: { from: QueueType; to: QueueType; options: AmqpOptions }[] = [
    { from: 'classic', to: 'quorum', options: {} },
    { from: 'quorum', to: 'classic', options: { queueType: 'classic' } },
  ];
  for (const { from, to, options } of upgrades) {
    it(`uses ${from} queues as they are when ${to} ones are asked for, with one warning per queue`, async () => {
      const v = await vhost();
      const handled: string[] = [];
      let failing = true;
      const handler = async (m: { id: string; data: unknown }) => {
        if (failing && (m.data as { fail?: boolean }).fail) throw new Error('card declined');
        handled.push(m.id);
      };

      // An older deployment, with queues of the other type: handles one, dead-letters one, and
      // leaves one waiting in its queue.
      const old = await bus(v.url, { queueType: from }, recordingLogger());
      const oldSubscription = await old.subscribe(PATTERN, handler, SUBSCRIBE);
      await old.publish('order.created', {}, { id: 'a1' });
      await old.publish('order.created', { fail: true }, { id: 'a2' });
      await waitFor(() => handled.includes('a1'), 'a1 handled by the old deployment');
      await waitFor(async () => (await old.listDeadLetters()).length === 1, 'a2 dead-lettered');
      await oldSubscription.close();
      await old.publish('order.created', {}, { id: 'b1' });
      await old.close();
      expect(await queueTypes(v.url)).toEqual(Object.fromEntries(QUEUES.map((q) => [q, from])));

      const logger = recordingLogger();
      const upgraded = await bus(v.url, options, logger);
      const subscription = await upgraded.subscribe(PATTERN, handler, SUBSCRIBE);
      await upgraded.publish('order.created', {}, { id: 'c1' });
      await upgraded.publish('order.created', { fail: true }, { id: 'c2' });
      await waitFor(() => handled.includes('b1') && handled.includes('c1'), 'b1 and c1 handled');
      // c2 went through the delay queue of the other type, then to the dead-letter queue.
      await waitFor(async () => (await upgraded.listDeadLetters()).length === 2, 'c2 dead-lettered too');
      const dead = await upgraded.listDeadLetters();
      expect(dead.map((d) => d.envelope?.id).sort()).toEqual(['a2', 'c2']);
      expect(dead.every((d) => d.attempts === 2 && d.reason.message === 'card declined')).toBe(true);

      failing = false;
      expect(await upgraded.replayDeadLetters()).toBe(2);
      await waitFor(() => handled.includes('a2') && handled.includes('c2'), 'the replayed letters handled');

      // A reconnect declares everything again; the warnings are not repeated.
      await v.closeConnections('queue type test');
      await upgraded.publish('order.created', {}, { id: 'd1' });
      await waitFor(() => handled.includes('d1'), 'd1 handled after the reconnect');

      expect(typeWarnings(logger)).toEqual(Object.fromEntries(QUEUES.map((q) => [q, 1])));
      const warning = logger.lines.find((l) => l.fields?.queue === topology.queue)!;
      expect(warning.message).toContain(`exists as a ${from} queue but queueType is '${to}'`);
      expect(warning.message).toContain('delete it');
      expect(warning.message).toContain(`queueType: '${from}'`);
      expect(warning.fields).toEqual({ queue: topology.queue, existing: from, requested: to });
      expect(logger.lines.filter((l) => l.level === 'error')).toEqual([]);
      expect(handled.sort()).toEqual(['a1', 'a2', 'b1', 'c1', 'c2', 'd1']);
      expect(await queueTypes(v.url)).toEqual(Object.fromEntries(QUEUES.map((q) => [q, from])));

      // Once deleted, the subscription's queues come back as the type asked for.
      await subscription.close();
      expect(await upgraded.deleteSubscription(PATTERN, SUBSCRIBE)).toBe(0);
      await upgraded.subscribe(PATTERN, handler, SUBSCRIBE);
      const types = await queueTypes(v.url);
      expect(types[topology.queue]).toBe(to);
      expect(types[topology.retryQueues.get(100)!]).toBe(to);
    });
  }

  it('refuses with INEQUIVALENT_QUEUE a queue whose other arguments differ, and keeps working', async () => {
    const v = await vhost();
    const raw = await amqp.connect(v.url);
    defer(() => raw.close());
    const channel = await raw.createChannel();
    await channel.assertQueue(topology.queue, {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-max-length': 10 },
    });
    const logger = recordingLogger();
    const b = await bus(v.url, {}, logger);
    const refused = await b.subscribe(PATTERN, async () => {}, SUBSCRIBE).catch((error: unknown) => error);
    expect(isInequivalentQueueError(refused)).toBe(true);
    expect(refused).toMatchObject({
      code: 'INEQUIVALENT_QUEUE',
      queue: topology.queue,
      queueType: 'quorum',
    });
    expect((refused as Error).message).toContain("inequivalent arg 'x-max-length'");

    // The refusal closed only its own channel: publishing and other subscriptions carry on.
    const handled: string[] = [];
    await b.subscribe(PATTERN, async (m) => void handled.push(m.id), { group: 'audit' });
    await b.publish('order.created', {}, { id: 'e1' });
    await waitFor(() => handled.includes('e1'), 'e1 handled by the other group');
    expect(logger.lines).toEqual([]);
  });

  it('leaves no bound queue behind when a subscription fails on one of its queues (its publishes stay unroutable)', async () => {
    // Must not happen: messages of the failed subscription's pattern piling up, unconsumed and
    // unbounded, in a queue bound to the exchange, while their publishes resolve.
    const v = await vhost();
    const raw = await amqp.connect(v.url);
    defer(() => raw.close());
    const channel = await raw.createChannel();
    await channel.assertQueue(deadLetterQueueName('billing'), {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-max-length': 10 },
    });
    const b = await bus(v.url, {}, recordingLogger());
    const refused = await b.subscribe(PATTERN, async () => {}, SUBSCRIBE).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: 'INEQUIVALENT_QUEUE', queue: deadLetterQueueName('billing') });
    await expect(b.publish('order.created', {}, { id: 'nobody' })).rejects.toMatchObject({
      code: 'UNROUTABLE',
    });
    expect((await channel.checkQueue(topology.queue)).messageCount).toBe(0);
  });

  it('declares again the queue of a subscription deleted while it ran, without cycling the connection under the others', async () => {
    // Must not happen: the other subscription's message run twice (its delivery lost with a cycled
    // connection). Must not be lost: the deleted subscription's later messages.
    const v = await vhost();
    const logger = recordingLogger();
    const b = await bus(v.url, {}, logger);
    const billing: string[] = [];
    await b.subscribe(PATTERN, async (m) => void billing.push(m.id), SUBSCRIBE);
    const audit: string[] = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    await b.subscribe(
      'audit.*',
      async (m) => {
        audit.push(m.id);
        await released;
      },
      { group: 'audit' },
    );
    await b.publish('audit.slow', {}, { id: 'slow' });
    await waitFor(() => audit.includes('slow'), 'the audit handler running');

    const raw = await amqp.connect(v.url);
    defer(() => raw.close());
    const channel = await raw.createChannel();
    await channel.deleteQueue(topology.queue);
    await waitFor(
      async () => (await consumersOf(raw, topology.queue)) === 1,
      'the deleted queue declared again and consumed',
      10_000,
    );
    await b.publish('order.created', {}, { id: 'after' });
    await waitFor(() => billing.includes('after'), 'a message published after the deletion handled');
    release();
    await b.publish('audit.next', {}, { id: 'next' });
    await waitFor(() => audit.includes('next'), 'the audit subscription still consuming');
    expect(audit).toEqual(['slow', 'next']);
    expect(logger.lines.filter((l) => l.message.startsWith('lost the RabbitMQ connection'))).toEqual([]);
    expect(logger.lines.map((l) => l.message)).toEqual([
      `the broker cancelled the consumer of queue ${topology.queue}; declaring the queues of that subscription again`,
    ]);
  });

  it('recovers a subscription whose queue is deleted again and again, the connection left alone (classic queues)', async () => {
    // Must not happen: another subscription's running handlers re-run (its deliveries lost with a
    // cycled connection) because a queue vanished between its declare and its consume or bind.
    // Classic queues: RabbitMQ 3.10 may close the whole connection (541 INTERNAL_ERROR,
    // cluster_not_formed) when a quorum queue is declared while its deletion is under way (README).
    const v = await vhost();
    const logger = recordingLogger();
    const b = await bus(v.url, { queueType: 'classic' }, logger);
    const billing: string[] = [];
    await b.subscribe(PATTERN, async (m) => void billing.push(m.id), SUBSCRIBE);
    const runs = new Map<string, number>();
    await b.subscribe(
      'audit.*',
      async (m) => {
        runs.set(m.id, (runs.get(m.id) ?? 0) + 1);
        await sleep(1500);
      },
      { group: 'audit', concurrency: 10 },
    );
    const audits = Array.from({ length: 10 }, (_, i) => `audit-${i}`);
    for (const id of audits) await b.publish('audit.slow', {}, { id });
    await waitFor(() => runs.size === audits.length, 'every audit handler running');

    const raw = await amqp.connect(v.url);
    defer(() => raw.close());
    // Back to back for a second: some deletions land between a declare and its consume or bind.
    const channel = await raw.createChannel();
    for (const until = Date.now() + 1000; Date.now() < until; ) await channel.deleteQueue(topology.queue);
    await waitFor(
      async () => (await consumersOf(raw, topology.queue)) === 1,
      'the queue declared again and consumed',
      10_000,
    );
    await b.publish('order.created', {}, { id: 'after' });
    await waitFor(() => billing.includes('after'), 'a message published after the deletions handled', 15_000);
    await sleep(2000); // the audit handlers end; a re-run would start now
    expect([...runs.values()]).toEqual(audits.map(() => 1));
    expect(logger.lines.filter((l) => l.message.startsWith('lost the RabbitMQ connection'))).toEqual([]);
  });

  it('declares again every queue of a subscription deleted at once, and still retries and dead-letters', async () => {
    // Must not be lost: a message that fails (retried, then dead-lettered into the declared-again
    // dead-letter queue) and one that succeeds, both published after the deletion.
    const v = await vhost();
    const logger = recordingLogger();
    const b = await bus(v.url, {}, logger);
    const handled: string[] = [];
    await b.subscribe(
      PATTERN,
      async (m) => {
        if (m.id === 'bad') throw new Error('always');
        handled.push(m.id);
      },
      SUBSCRIBE,
    );
    const raw = await amqp.connect(v.url);
    defer(() => raw.close());
    const channel = await raw.createChannel();
    for (const queue of QUEUES) await channel.deleteQueue(queue);
    await waitFor(
      async () => (await consumersOf(raw, topology.queue)) === 1,
      'the subscription queue declared again and consumed',
    );
    await b.publish('order.created', {}, { id: 'bad' });
    await b.publish('order.created', {}, { id: 'good' });
    await waitFor(() => handled.includes('good'), 'the good message handled');
    await waitFor(
      async () => (await b.listDeadLetters({ group: 'billing' })).some((d) => d.envelope?.id === 'bad'),
      'the bad message dead-lettered',
      15_000,
    );
    expect(logger.lines.filter((l) => l.message.startsWith('lost the RabbitMQ connection'))).toEqual([]);
  });

  it('drops, without a reconnect loop, a subscription whose queue was redeclared otherwise while it ran', async () => {
    const v = await vhost();
    const logger = recordingLogger();
    const b = await bus(v.url, {}, logger);
    await b.subscribe(PATTERN, async () => {}, SUBSCRIBE);
    const handled: string[] = [];
    await b.subscribe(PATTERN, async (m) => void handled.push(m.id), { group: 'audit' });

    // Something else replaces the delay queue (nothing consumes it, so Ferry does not notice yet).
    const raw = await amqp.connect(v.url);
    defer(() => raw.close());
    const channel = await raw.createChannel();
    const delayQueue = topology.retryQueues.get(100)!;
    await channel.deleteQueue(delayQueue);
    await channel.assertQueue(delayQueue, {
      durable: true,
      arguments: { ...argumentsOf(delayQueue, 'quorum'), 'x-max-length': 10 },
    });

    await v.closeConnections('queue type test');
    await b.publish('order.created', {}, { id: 'f1' });
    await waitFor(() => handled.includes('f1'), 'f1 handled by the other group after the reconnect');

    const errors = logger.lines.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toContain(`subscription ${PATTERN} of group billing stopped`);
    expect(errors[0]!.message).toContain("inequivalent arg 'x-max-length'");
    // One connection loss (the one caused here), not one per attempt.
    expect(logger.lines.filter((l) => l.message.startsWith('lost the RabbitMQ connection'))).toHaveLength(1);
  });
});
