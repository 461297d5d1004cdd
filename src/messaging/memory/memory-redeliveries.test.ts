import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../logging/logger.js';
import { waitFor } from '../../testing/wait.js';
import { Bus } from '../bus.js';
import { MemoryBroker, type MemoryBrokerOptions } from './memory-broker.js';
import { MemoryTransport } from './memory-transport.js';

const opened: Bus[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((bus) => bus.close()));
});

/** A bus on a broker of its own, whose close gives up on handlers after 50 ms. */
function busOn(options: MemoryBrokerOptions): Bus {
  const bus = new Bus(new MemoryTransport({ broker: new MemoryBroker(options) }), {
    service: 'svc',
    logger: silentLogger,
    closeTimeoutMs: 50,
  });
  opened.push(bus);
  return bus;
}

const SUBSCRIPTION = {
  group: 'g',
  concurrency: 1,
  handlerTimeoutMs: 0,
  // Long enough for a subscription to close before the retry is due.
  backoff: { initialDelayMs: 100, factor: 1, maxDelayMs: 100 },
};
const never = () => new Promise<void>(() => {});

/** Subscribes `handler`, waits until `until` holds, and closes the subscription. */
async function runThenClose(bus: Bus, handler: () => Promise<void>, until: () => boolean): Promise<void> {
  const sub = await bus.subscribe('job.run', handler, SUBSCRIPTION);
  await waitFor(until, 'the handler to run');
  await sub.close();
}

describe('memory broker maxRedeliveries: messages closing subscribers gave back, counted as on RabbitMQ', () => {
  it('dead-letters at the next delivery once the count passes maxRedeliveries; 0 dead-letters the first one given back', async () => {
    const bus = busOn({ maxRedeliveries: 0 });
    let runs = 0;
    const hang = () => {
      runs++;
      return never();
    };
    const sub = await bus.subscribe('job.run', hang, SUBSCRIPTION);
    await bus.publish('job.run', { n: 1 }, { id: 'poison' });
    await waitFor(() => runs === 1, 'the first run');
    await sub.close();
    // Given back once: it waits in its queue, counted, until a subscriber takes it.
    expect(await bus.listDeadLetters({ group: 'g' })).toEqual([]);
    await bus.subscribe('job.run', hang, SUBSCRIPTION);
    await waitFor(async () => (await bus.listDeadLetters({ group: 'g' })).length === 1, 'the dead letter');
    expect(runs).toBe(1);
    const [dead] = await bus.listDeadLetters({ group: 'g' });
    expect(dead).toMatchObject({
      reason: { kind: 'redelivered', message: expect.stringContaining('delivered 1 times in a row') },
      attempts: 1,
      envelope: { id: 'poison', data: { n: 1 } },
    });
    // Replayed, it starts again from zero.
    expect(await bus.replayDeadLetters({ group: 'g' })).toBe(1);
    await waitFor(() => runs === 2, 'the replayed letter to run');
  });

  it('starts the count again once a handler settled the message (a retry)', async () => {
    const bus = busOn({ maxRedeliveries: 1 });
    const attempts: number[] = [];
    const hang = (m: { attempt: number }) => {
      attempts.push(m.attempt);
      return never();
    };
    // Given back once (count 1, the limit)…
    const first = await bus.subscribe('job.run', hang, SUBSCRIPTION);
    await bus.publish('job.run', {}, { id: 'm' });
    await waitFor(() => attempts.length === 1, 'attempt 1');
    await first.close();
    // …then failed by a handler: the retry is a fresh delivery, counted from zero.
    let failed = false;
    await runThenClose(
      bus,
      async () => {
        failed = true;
        throw new Error('boom');
      },
      () => failed,
    );
    const second = await bus.subscribe('job.run', hang, SUBSCRIPTION);
    await waitFor(() => attempts.length === 2, 'attempt 2');
    await second.close();
    // Given back once more: count 1 again, still within the limit, so it runs.
    await bus.subscribe('job.run', hang, SUBSCRIPTION);
    await waitFor(() => attempts.length === 3, 'attempt 2 delivered again');
    expect(attempts).toEqual([1, 2, 2]);
    expect(await bus.listDeadLetters({ group: 'g' })).toEqual([]);
  });

  it('refuses a bad maxRedeliveries', () => {
    for (const maxRedeliveries of [-1, 1.5, Number.NaN]) {
      expect(() => new MemoryBroker({ maxRedeliveries })).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
    }
  });
});
