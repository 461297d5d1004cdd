import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { currentContext } from '../context/context.js';
import { isFerryError, isInvalidOptionsError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import { systemClock, VirtualClock } from '../time/clock.js';
import type { Bus, BusOptions } from './bus.js';
import { MemoryBroker, type MemoryBrokerOptions } from './memory/memory-broker.js';
import { MemoryTransport } from './memory/memory-transport.js';

const START = Date.UTC(2030, 0, 1);
const opened: Bus[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((bus) => bus.close()));
});

/** A bus on a process-wide broker of its own (`memory://<unique>`), both on `clock`. */
async function open(clock: VirtualClock, extra: Partial<BusOptions> = {}): Promise<Bus> {
  const bus = await createBus({
    url: `memory://clock-${randomUUID()}`,
    service: 'svc',
    logger: silentLogger,
    clock,
    ...extra,
  });
  opened.push(bus);
  return bus;
}

describe('bus and memory broker on a virtual clock', () => {
  it('runs the default backoff (1 s, then 2 s) when the clock is advanced, not before', async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock);
    const attempts: { attempt: number; at: number }[] = [];
    await bus.subscribe('job.flaky', async (m) => {
      attempts.push({ attempt: m.attempt, at: clock.now() });
      if (m.attempt < 3) throw new Error(`attempt ${m.attempt} fails`);
    });
    await bus.publish('job.flaky', {});
    await clock.advance(0);
    expect(attempts.map((a) => a.attempt)).toEqual([1]);

    await clock.advance(999);
    expect(attempts.map((a) => a.attempt)).toEqual([1]);
    await clock.advance(1);
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2]);
    await clock.advance(1_999);
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2]);
    await clock.advance(1);
    expect(attempts).toEqual([
      { attempt: 1, at: START },
      { attempt: 2, at: START + 1_000 },
      { attempt: 3, at: START + 3_000 },
    ]);

    // The third attempt succeeded: no fourth one however long we wait, and nothing dead-lettered.
    await clock.advance(10 * 60_000);
    expect(attempts).toHaveLength(3);
    expect(await bus.listDeadLetters()).toEqual([]);
  });

  it('reaches the third attempt in one advance(3000), firing the retries in between', async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock);
    const attempts: number[] = [];
    let succeeded = false;
    await bus.subscribe('job.flaky', async (m) => {
      attempts.push(m.attempt);
      if (m.attempt < 3) throw new Error('not yet');
      succeeded = true;
    });
    await bus.publish('job.flaky', {});
    await clock.advance(2_999);
    expect(attempts).toEqual([1, 2]);
    expect(succeeded).toBe(false);
    await clock.advance(1);
    expect(attempts).toEqual([1, 2, 3]);
    expect(succeeded).toBe(true);
  });

  it('times a handler out when the clock passes handlerTimeoutMs and not before, stamping the dead letter with virtual time', async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock);
    let signal: AbortSignal | undefined;
    let deadline: number | undefined;
    const realBefore = Date.now();
    await bus.subscribe(
      'job.hang',
      async (_m, context) => {
        signal = context.signal;
        deadline = currentContext()?.deadline;
        await new Promise(() => {}); // hangs, never looks at its signal
      },
      { maxAttempts: 1, handlerTimeoutMs: 5_000 },
    );
    await bus.publish('job.hang', {});
    await clock.advance(4_999);
    expect(signal?.aborted).toBe(false);
    expect(await bus.listDeadLetters()).toEqual([]);

    await clock.advance(1);
    expect(signal?.aborted).toBe(true);
    expect(isFerryError(signal?.reason) && signal.reason.code).toBe('HANDLER_TIMEOUT');
    const dead = await bus.listDeadLetters();
    expect(dead).toMatchObject([{ attempts: 1, reason: { kind: 'timeout' } }]);
    expect(dead[0]!.deadLetteredAt).toBe(new Date(START + 5_000).toISOString());
    // The context deadline stays in real time: outgoing HTTP calls compare it with Date.now().
    expect(deadline).toBeGreaterThanOrEqual(realBefore + 5_000);
    expect(deadline).toBeLessThanOrEqual(Date.now() + 5_000);
  });

  it('expires a message by virtual time: ttlMs counts from clock.now(), and delivery checks against it', async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock);
    const handled: string[] = [];
    const first = await bus.subscribe('offer.made', (m) => {
      handled.push(m.id);
    });
    // The queue outlives its subscriber: messages wait there while nobody consumes.
    await first.close();
    await bus.publish('offer.made', {}, { id: 'short', ttlMs: 10_000 });
    await bus.publish('offer.made', {}, { id: 'long', ttlMs: 10_001 });
    await clock.advance(10_000);
    await bus.subscribe('offer.made', (m) => {
      handled.push(m.id);
    });
    await clock.advance(0);
    expect(handled).toEqual(['long']);
    const dead = await bus.listDeadLetters();
    expect(dead).toMatchObject([{ envelope: { id: 'short' }, reason: { kind: 'expired' } }]);
    expect(dead[0]!.envelope).toMatchObject({
      time: new Date(START).toISOString(),
      expiresat: new Date(START + 10_000).toISOString(),
    });
  });

  it('does not expire a message before its ttl on the virtual clock, however much real time passes', async () => {
    // Virtual time well behind real time: a check against Date.now() would call the message expired.
    const clock = new VirtualClock({ start: Date.UTC(2001, 0, 1) });
    const bus = await open(clock);
    const handled: { id: string; time: string }[] = [];
    await bus.subscribe('offer.made', (m) => {
      handled.push({ id: m.id, time: m.time });
    });
    await bus.publish('offer.made', {}, { id: 'kept', ttlMs: 1_000 });
    await clock.advance(0);
    expect(handled).toEqual([{ id: 'kept', time: '2001-01-01T00:00:00.000Z' }]);
    expect(await bus.listDeadLetters()).toEqual([]);
  });

  it('gives message ids from the virtual clock (UUID v7 carries its millisecond)', async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock);
    const ids: string[] = [];
    await bus.subscribe('offer.made', (m) => {
      ids.push(m.id);
    });
    await bus.publish('offer.made', {});
    await clock.advance(0);
    const ms = Number.parseInt(ids[0]!.replaceAll('-', '').slice(0, 12), 16);
    expect(ms).toBe(START);
  });

  it("stamps a foreign producer's message without a time or id with the broker clock", async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock);
    const seen: { id: string; time: string }[] = [];
    await bus.subscribe('legacy.event', (m) => {
      seen.push({ id: m.id, time: m.time });
    });
    await clock.advance(1_234);
    await (bus.transport as MemoryTransport).publishRaw({
      body: Buffer.from('{"n":1}'),
      routingKey: 'legacy.event',
    });
    await clock.advance(0);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.time).toBe(new Date(START + 1_234).toISOString());
    expect(Number.parseInt(seen[0]!.id.replaceAll('-', '').slice(0, 12), 16)).toBe(START + 1_234);
  });

  it('runs retries on the broker clock given to a MemoryBroker, with a transport instance', async () => {
    const clock = new VirtualClock({ start: START });
    const broker = new MemoryBroker({ clock });
    expect(broker.clock).toBe(clock);
    const bus = await createBus({
      transport: new MemoryTransport({ broker }),
      service: 'svc',
      logger: silentLogger,
      clock,
    });
    opened.push(bus);
    const attempts: number[] = [];
    await bus.subscribe(
      'job.flaky',
      async (m) => {
        attempts.push(m.attempt);
        throw new Error('always');
      },
      { maxAttempts: 2, backoff: { initialDelayMs: 60_000 } },
    );
    await bus.publish('job.flaky', {});
    await clock.advance(59_999);
    expect(attempts).toEqual([1]);
    await clock.advance(1);
    expect(attempts).toEqual([1, 2]);
    expect(await bus.listDeadLetters()).toMatchObject([{ attempts: 2, reason: { kind: 'handler-error' } }]);
  });

  it('waits for handlers in flight on close by the broker clock', async () => {
    const clock = new VirtualClock({ start: START });
    const bus = await open(clock, { closeTimeoutMs: 1_000 });
    let release: (() => void) | undefined;
    await bus.subscribe(
      'job.slow',
      () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
      { handlerTimeoutMs: 0 },
    );
    await bus.publish('job.slow', {});
    await clock.advance(0);
    expect(release).toBeDefined();
    let closed = false;
    const closing = bus.close().then(() => {
      closed = true;
    });
    await clock.advance(999);
    expect(closed).toBe(false);
    await clock.advance(1);
    expect(closed).toBe(true);
    await closing;
    release!();
  });
});

const isInvalidTopicOrOptions = (error: unknown) =>
  ['INVALID_TOPIC', 'INVALID_OPTIONS'].includes((error as { code?: string }).code ?? '');

describe('MemoryBroker.named and the clock', () => {
  it('creates a named broker on the given clock, the bus clock by default, and refuses another clock later', async () => {
    const name = `clock-${randomUUID()}`;
    const clock = new VirtualClock();
    const bus = await createBus({ url: `memory://${name}`, service: 'svc', logger: silentLogger, clock });
    opened.push(bus);
    const broker = (bus.transport as MemoryTransport).broker;
    expect(broker.clock).toBe(clock);
    expect(MemoryBroker.named(name)).toBe(broker);
    expect(MemoryBroker.named(name, { clock })).toBe(broker);
    let refused: unknown;
    try {
      MemoryBroker.named(name, { clock: new VirtualClock() });
    } catch (error) {
      refused = error;
    }
    expect(isInvalidOptionsError(refused)).toBe(true);
    await expect(
      createBus({ url: `memory://${name}`, service: 'other', logger: silentLogger, clock: systemClock }),
    ).rejects.toSatisfy(isInvalidOptionsError);
  });

  it('refuses a later bus asking the named broker for other limits than it was made with, instead of ignoring them', async () => {
    /** A bus on the broker `name`, closed after the test once made. */
    const busOn = async (name: string, service: string, memory?: MemoryBrokerOptions) => {
      const bus = await createBus({
        url: `memory://${name}`,
        service,
        logger: silentLogger,
        ...(memory === undefined ? {} : { memory }),
      });
      opened.push(bus);
      return bus;
    };
    const name = `limits-${randomUUID()}`;
    const first = await busOn(name, 'first', { maxMessageBytes: 100, maxRedeliveries: 2 });
    for (const memory of [{ maxMessageBytes: 10_000 }, { maxRedeliveries: 5 }, { maxQueueLength: 10 }]) {
      const refused = await busOn(name, 'later', memory).catch((e: unknown) => e);
      expect(isInvalidOptionsError(refused), JSON.stringify(memory)).toBe(true);
      expect((refused as Error).message).toContain(Object.keys(memory)[0]);
    }
    // A bus refused for its own options makes no broker: the corrected call may choose its limits.
    const fresh = `limits-${randomUUID()}`;
    await expect(busOn(fresh, '', { maxQueueLength: 50 })).rejects.toSatisfy(isInvalidTopicOrOptions);
    await busOn(fresh, 'fixed', { maxQueueLength: 60 });
    // The same values, or none, share the broker as it is.
    await busOn(name, 'same', { maxMessageBytes: 100 });
    const plain = await busOn(name, 'plain');
    expect((plain.transport as MemoryTransport).broker).toBe((first.transport as MemoryTransport).broker);
  });

  it('lets memory.clock override the bus clock for the broker', async () => {
    const busClock = new VirtualClock();
    const brokerClock = new VirtualClock();
    const bus = await open(busClock, { memory: { clock: brokerClock } });
    expect((bus.transport as MemoryTransport).broker.clock).toBe(brokerClock);
  });

  it('defaults to the system clock', () => {
    expect(new MemoryBroker().clock).toBe(systemClock);
    expect(MemoryBroker.named(`clock-${randomUUID()}`).clock).toBe(systemClock);
  });
});
