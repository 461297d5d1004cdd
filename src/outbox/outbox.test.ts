import { afterEach, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { createBus } from '../connect/create-bus.js';
import { isConcurrencyError } from '../eventstore/errors.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { testOutbox } from '../testing/outbox-contract.js';
import { waitFor } from '../testing/wait.js';
import { VirtualClock } from '../time/clock.js';
import { MemoryOutboxStorage } from './memory-outbox-storage.js';
import { createOutbox } from './outbox.js';
import type { UnitOfWork } from './unit-of-work.js';

afterEach(() => vi.restoreAllMocks());

testOutbox('memory', { createStore: async () => new EventStore(new MemoryEventStoreBackend()) });

it('takes maxRetries per unit of work (and per handler run), in place of the outbox-wide one', async () => {
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const outbox = await createOutbox({ store, bus, logger: silentLogger, maxRetries: 3 });
  try {
    await store.append('order-1', [{ type: 'OrderPlaced', data: {} }]);
    let runs = 0;
    // Always loses the race: the stream exists.
    const late = async (work: { append: (typeof store)['append'] }) => {
      runs++;
      await work.append('order-1', [{ type: 'Late', data: {} }], { expectedVersion: 'no_stream' });
    };
    const runsOf = async (run: () => Promise<unknown>) => {
      runs = 0;
      const error = await run().catch((e: unknown) => e);
      expect(isConcurrencyError(error)).toBe(true);
      return runs;
    };
    expect(await runsOf(() => outbox.unitOfWork(late))).toBe(4);
    expect(await runsOf(() => outbox.unitOfWork(late, { maxRetries: 0 }))).toBe(1);
    expect(await runsOf(() => outbox.unitOfWork(late, { maxRetries: 9 }))).toBe(10);
    expect(await runsOf(() => outbox.runHandler('c', uuidv7(), late, { maxRetries: 6 }))).toBe(7);
    for (const maxRetries of [-1, 1.5, 10_001]) {
      await expect(outbox.unitOfWork(late, { maxRetries })).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
    }
  } finally {
    await outbox.close();
    await store.close();
    await bus.close();
  }
});

it('lets commits gather for lingerMs before a round, so that one claim takes the messages of many', async () => {
  const claim = vi.spyOn(MemoryOutboxStorage.prototype, 'claim');
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const received: number[] = [];
  await bus.subscribe('order.placed', (m) => {
    received.push((m.data as { n: number }).n);
  });
  const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: { lingerMs: 50 } });
  try {
    await outbox.flush();
    claim.mockClear();
    // Forty commits, one after the other, each of which wakes the relay.
    for (let n = 0; n < 40; n++) {
      await outbox.unitOfWork((work) => work.publish('order.placed', { n }));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await outbox.flush();
    await vi.waitFor(() => expect(received).toHaveLength(40));
    expect(received).toEqual([...received].sort((a, b) => a - b));
    const rounds = await Promise.all(claim.mock.results.map((r) => r.value as Promise<unknown[]>));
    // Without the pause each commit would start a round of its own.
    expect(rounds.filter((rows) => rows.length > 0).length).toBeLessThanOrEqual(3);
  } finally {
    await outbox.close();
    await store.close();
    await bus.close();
  }
  for (const lingerMs of [-1, 1.5, 1001]) {
    await expect(
      createOutbox({ store, bus, logger: silentLogger, relay: { lingerMs } }),
    ).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
    });
  }
});

it('bounds the wait of close for settlements by settleOnCloseMs of real time, under a virtual clock nobody moves', async () => {
  const clock = new VirtualClock();
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
    closeTimeoutMs: 0,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const entered: number[] = [];
  // A handler that never ends: its message is never settled.
  await bus.subscribe('order.placed', (m) => {
    entered.push((m.data as { n: number }).n);
    return new Promise<void>(() => {});
  });
  const outbox = await createOutbox({
    store,
    bus,
    clock,
    logger: silentLogger,
    relay: { settleOnCloseMs: 300 },
  });
  try {
    await outbox.unitOfWork((work) => work.publish('order.placed', { n: 1 }));
    await vi.waitFor(async () => expect((await outbox.backlog()).awaitingSettlement).toBe(1));
    expect(entered).toEqual([1]);
    const started = Date.now();
    await outbox.close();
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(await outbox.backlog()).toMatchObject({ awaitingSettlement: 1 });
  } finally {
    await outbox.close();
    await store.close();
    await bus.close();
  }
  for (const settleOnCloseMs of [-1, 1.5, 2 ** 31]) {
    await expect(
      createOutbox({
        store: new EventStore(new MemoryEventStoreBackend()),
        bus,
        logger: silentLogger,
        relay: { settleOnCloseMs },
      }),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  }
});

it('refuses a missing store or bus, a relay that is neither options nor false, and a unit of work that is not a function (INVALID_OPTIONS, not a TypeError)', async () => {
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  try {
    for (const [options, named] of [
      [{ store: undefined, bus }, /needs store: an event store/],
      [{ store: {}, bus }, /needs store: an event store/],
      [{ store, bus: undefined }, /needs bus: a bus/],
      [{ store, bus: {} }, /needs bus: a bus/],
      // true was taken as the relay's defaults.
      [{ store, bus, relay: true }, /relay options must be an object/],
      [{ store, bus, relay: 'on' }, /relay options must be an object/],
    ] as const) {
      await expect(createOutbox({ ...options, logger: silentLogger } as never)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(named),
      });
    }
    const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: false });
    try {
      await expect(outbox.unitOfWork('x' as never)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(/unitOfWork needs a function/),
      });
    } finally {
      await outbox.close();
    }
  } finally {
    await store.close();
    await bus.close();
  }
});

it('refuses a clock without now or setTimeout (INVALID_OPTIONS) and starts nothing when any option is refused', async () => {
  // A clock without setTimeout failed with a TypeError once the relay had started, and the relay's
  // next round ended the process with an uncaught exception.
  const claim = vi.spyOn(MemoryOutboxStorage.prototype, 'claim');
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const closeWith = vi.spyOn(store, 'closeWith');
  const setTimeout = vi.fn(() => ({ cancel: () => {} }));
  try {
    for (const options of [
      { clock: { now: () => Date.now() } },
      { clock: { setTimeout } },
      { clock: 'system' },
      { clock: null },
      { clock: { now: () => Date.now(), setTimeout }, relay: { lingerMs: -1 } },
      { clock: { now: () => Date.now(), setTimeout }, maxRetries: -1 },
      // null was taken for the default, as no other option's null is.
      { clock: { now: () => Date.now(), setTimeout }, maxRetries: null },
      // Taken, then the relay's first warning threw a TypeError: it stopped, close() rejected with it.
      { clock: { now: () => Date.now(), setTimeout }, logger: {} },
    ]) {
      await expect(
        createOutbox({ store, bus, logger: silentLogger, ...options } as never),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
    await new Promise((resolve) => globalThis.setTimeout(resolve, 50));
    expect(claim).not.toHaveBeenCalled();
    expect(setTimeout).not.toHaveBeenCalled();
    // Nor did the store learn of an outbox that does not exist.
    expect(closeWith).not.toHaveBeenCalled();
  } finally {
    await store.close();
    await bus.close();
  }
});

it("times a transactional handler's calls it did not await: one that never ends is rolled back at the limit, and the store is free", async () => {
  // Must not happen: the unit held open past its limit, every other unit of the process waiting
  // behind it. Must not be lost: the message, dead-lettered with reason kind timeout.
  const never = {
    '~standard': {
      version: 1 as const,
      vendor: 'test',
      // An asynchronous check that never answers: the publish it guards never ends.
      validate: () => new Promise<never>(() => {}),
    },
  };
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
    contracts: { 'job.run': z.object({ n: z.number() }), 'slow.check': never },
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const outbox = await createOutbox({ store, bus, logger: silentLogger });
  try {
    await bus.subscribe(
      'job.run',
      async (_message, { work }) => {
        await work.append('job-1', [{ type: 'Ran', data: {} }]);
        void work.publish('slow.check', {}); // a forgotten await, on a call that never ends
      },
      { group: 'jobs', unitOfWork: outbox, handlerTimeoutMs: 200, maxAttempts: 1 },
    );
    await bus.publish('job.run', { n: 1 });
    await waitFor(
      async () => (await bus.listDeadLetters({ group: 'jobs' })).length === 1,
      'the dead letter',
      3000,
    );
    const [dead] = await bus.listDeadLetters({ group: 'jobs' });
    expect(dead?.reason.kind).toBe('timeout');
    expect(await store.readStream('job-1')).toEqual([]);
    // The store is free: another unit of work runs and commits.
    await outbox.unitOfWork((work) =>
      work.append('job-2', [{ type: 'Ran', data: {} }]).then(() => undefined),
    );
    expect(await store.readStream('job-2')).toHaveLength(1);
  } finally {
    await outbox.close();
    await store.close();
    await bus.close();
  }
});

it('refuses healthCheck and scheduled options it does not read, null or a misspelt key, with INVALID_OPTIONS', async () => {
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const outbox = await createOutbox({ store, bus, logger: silentLogger });
  try {
    // null threw a TypeError; a misspelt key was dropped for the default.
    for (const options of [null, { maxAge: 10 }, { maxAgeMs: null }, { maxFailed: null }, 5]) {
      expect(() => outbox.healthCheck(options as never), JSON.stringify(options)).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
    }
    for (const options of [null, { limt: 5 }, { limit: null }, 'k']) {
      await expect(outbox.scheduled(options as never), JSON.stringify(options)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
    }
    await outbox.healthCheck({ maxAgeMs: 1000, maxFailed: 0 })();
    expect(await outbox.scheduled({ limit: 5 })).toEqual([]);
  } finally {
    await outbox.close();
    await store.close();
    await bus.close();
  }
});

it.each(['bus', 'subscription'] as const)(
  "runs no transactional handler whose unit of work's turn came after the %s's close gave up on it, and rolls back the one still running: their messages are handled by the next consumer",
  async (closed) => {
    // Must not happen: the closed consumer running a handler whose message it handed back, or
    // keeping what the handler it gave up on wrote. Must not be lost: those messages, each one's
    // effects kept once, by the next consumer.
    const url = `memory://outbox-${uuidv7()}`;
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
    const bus = await createBus({ url, service: 'orders', logger: silentLogger, closeTimeoutMs: 200 });
    const outbox = await createOutbox({ store, bus, logger: silentLogger });
    const runs: number[] = [];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let gated = true;
    const handler = async (m: { data: unknown }, { work }: { work: UnitOfWork }) => {
      const n = (m.data as { n: number }).n;
      runs.push(n);
      await work.append(`job-${n}`, [{ type: 'Ran', data: {} }]);
      if (n === 1 && gated) await gate;
    };
    try {
      const sub = await bus.subscribe('job.run', handler, { unitOfWork: outbox, concurrency: 2 });
      await bus.publish('job.run', { n: 1 });
      await bus.publish('job.run', { n: 2 });
      await vi.waitFor(() => expect(runs).toEqual([1]));
      // The second waits for the first's unit of work (one at a time on memory) when close gives up.
      await (closed === 'bus' ? bus.close() : sub.close());
      gated = false;
      open();
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(runs).toEqual([1]);
      // Rolled back when the close gave up on it, though it ended after.
      expect(await store.readStream('job-1')).toEqual([]);
      const next = await createBus({ url, service: 'orders', logger: silentLogger });
      const nextOutbox = await createOutbox({ store, bus: next, logger: silentLogger });
      await next.subscribe('job.run', handler, { unitOfWork: nextOutbox });
      await vi.waitFor(() => expect(runs.slice(1).sort()).toEqual([1, 2]));
      for (const n of [1, 2]) expect(await store.readStream(`job-${n}`)).toHaveLength(1);
      await nextOutbox.close();
      await next.close();
    } finally {
      await outbox.close();
      await bus.close();
      await store.close();
    }
  },
);
