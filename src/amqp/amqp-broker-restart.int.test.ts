import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isFerryError } from '../errors/ferry-error.js';
import type { Logger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts } from '../messaging/contracts.js';
import { waitFor } from '../testing/wait.js';
import { type RabbitNode, startRabbitNode } from './fixtures/rabbit-node.js';
import { deferCleanups } from './fixtures/test-vhosts.js';
import type { QueueType } from './topology.js';

// The broker itself goes down here, so these tests run on a RabbitMQ node of their own (started
// beside the shared one), never on the node the parallel tests use.
let node: RabbitNode;
beforeAll(async () => {
  node = await startRabbitNode();
}, 120_000);
afterAll(async () => {
  await node?.destroy();
}, 120_000);

const defer = deferCleanups();

/** Counts the transport's reports of a lost connection and of a recovery, and keeps nothing else. */
function countingLogger(): Logger & { readonly lost: () => number; readonly recovered: () => number } {
  let lost = 0;
  let recovered = 0;
  const noop = (): void => {};
  return {
    debug: noop,
    info: noop,
    error: noop,
    warn(message) {
      if (message.startsWith('lost the RabbitMQ connection')) lost++;
      if (message.startsWith('connected to RabbitMQ')) recovered++;
    },
    lost: () => lost,
    recovered: () => recovered,
  };
}

async function bus(service: string, queueType: QueueType, logger: Logger): Promise<Bus<Contracts>> {
  const b = await createBus({
    url: node.url,
    service,
    logger,
    closeTimeoutMs: 5000,
    amqp: {
      queueType,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
      // Far longer than a restart takes: a publish held across the outage must be confirmed, not
      // time out, whatever the machine's speed.
      confirmTimeoutMs: 180_000,
    },
  });
  defer(() => b.close());
  return b as Bus<Contracts>;
}

async function restart(): Promise<void> {
  await node.stop();
  await node.start();
}

/** Codes a publish may reject with when the broker cannot take it; anything else is a bug. */
const PUBLISH_FAILURE_CODES = ['PUBLISH_NOT_CONFIRMED', 'PUBLISH_NACKED', 'BROKER_UNAVAILABLE'];

describe.each(['classic', 'quorum'] as const)('RabbitMQ broker restarted twice (%s queues)', (queueType) => {
  it('handles every confirmed message of 4,000 published across the restarts and resumes the subscription', async () => {
    // Must not be lost: any message whose publish() resolved (the broker confirmed it), whether it
    // was published before, during or after a restart. Must not happen: a publish that never settles,
    // a rejection that is not a typed Ferry error, a subscription that stops after a restart.
    const consumerLog = countingLogger();
    const producerLog = countingLogger();
    const consumer = await bus(`ledger-${queueType}`, queueType, consumerLog);
    const producer = await bus(`bank-${queueType}`, queueType, producerLog);
    const handled = new Map<string, number>();
    // The handlers wait until the first restart is over: the broker goes down holding a backlog of
    // confirmed messages in the queue, and the consumer holds a full prefetch it has not acknowledged.
    let openGate = (): void => {};
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    await consumer.subscribe(
      'entry.#',
      async (m) => {
        await gate;
        handled.set(m.id, (handled.get(m.id) ?? 0) + 1);
      },
      { concurrency: 32 },
    );

    const total = 4000;
    const firstRestartAt = 1000;
    const secondRestartAt = 2200;
    /** From this index on, every publish starts after the second restart completed. */
    const afterRestarts = 3400;
    const confirmed = new Set<string>();
    const rejected: unknown[] = [];
    const inFlight = new Set<Promise<void>>();
    let restarting: Promise<void> = Promise.resolve();
    for (let i = 0; i < total; i++) {
      if (i === firstRestartAt) restarting = restart().then(openGate);
      if (i === secondRestartAt) {
        await restarting;
        // Both sides back on the broker first: a node stopped again before a side's reconnect
        // (backing off up to 500 ms) made the two restarts one outage to that side.
        await waitFor(
          () => producerLog.recovered() >= 1 && consumerLog.recovered() >= 1,
          () =>
            `both sides reconnected after the first restart (producer ${producerLog.recovered()}, consumer ${consumerLog.recovered()})`,
          60_000,
        );
        restarting = restart();
      }
      if (i === afterRestarts) await restarting;
      const id = `entry-${i}`;
      const p = producer
        .publish('entry.booked', { i }, { id })
        .then(() => void confirmed.add(id))
        .catch((error: unknown) => void rejected.push(error))
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= 200) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);

    // Every publish settled; a rejected one says why with a stable code.
    expect(confirmed.size + rejected.length).toBe(total);
    const untyped = rejected.filter((e) => !isFerryError(e) || !PUBLISH_FAILURE_CODES.includes(e.code));
    expect(untyped).toEqual([]);

    await waitFor(
      () => [...confirmed].every((id) => handled.has(id)),
      () =>
        `every confirmed message handled (${[...confirmed].filter((id) => handled.has(id)).length}/${confirmed.size}; first missing: ${[...confirmed].find((id) => !handled.has(id))})`,
      180_000,
    );
    // The subscription resumed: what was published after both restarts was handled too.
    const late = Array.from({ length: total - afterRestarts }, (_, k) => `entry-${afterRestarts + k}`);
    expect(late.filter((id) => !handled.has(id))).toEqual([]);
    // The restarts were real to both sides: each lost its connection at least twice, and recovered.
    for (const log of [producerLog, consumerLog]) {
      expect(log.lost()).toBeGreaterThanOrEqual(2);
      expect(log.recovered()).toBe(log.lost());
    }
    // Nothing was dead-lettered: a message held by the consumer across a restart comes back counted
    // once per restart, well under maxRedeliveries.
    expect(await consumer.listDeadLetters({ group: `ledger-${queueType}` })).toEqual([]);

    const duplicates = [...handled.values()].filter((n) => n > 1).length;
    console.info(
      `${queueType}: ${confirmed.size} confirmed, ${rejected.length} rejected (${[
        ...new Set(rejected.map((e) => (isFerryError(e) ? e.code : String(e)))),
      ].join(
        ', ',
      )}), ${handled.size} handled, ${duplicates} handled more than once; connection lost ${producerLog.lost()} times (producer), ${consumerLog.lost()} (consumer)`,
    );
  }, 400_000);
});
