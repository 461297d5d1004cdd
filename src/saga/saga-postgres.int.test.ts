import { afterAll, afterEach, expect, it } from 'vitest';
import { z } from 'zod';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts } from '../messaging/contracts.js';
import { createOutbox } from '../outbox/outbox.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { defineSaga } from './define-saga.js';
import { tallyContracts, tallyRuns, tallySaga } from './fixtures/tally-saga.js';
import { startSaga } from './start-saga.js';

const schemas: string[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(() => dropSchemas(schemas));

async function open(schema: string): Promise<EventStore> {
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 6,
    logger: silentLogger,
  });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  closers.push(() => store.close());
  return store;
}

/** A memory bus for the tally saga, closed after the test. */
async function tallyBus() {
  const bus = await createBus({
    url: `memory://saga-pg-${uuidv7()}`,
    service: 'tally',
    logger: silentLogger,
    contracts: tallyContracts,
  });
  closers.push(() => bus.close());
  return bus;
}

/** A memory bus with `contracts`, closed after the test (`url`: a broker shared with another). */
async function memoryBus<C extends Contracts>(
  service: string,
  contracts: C,
  url = `memory://saga-pg-${uuidv7()}`,
) {
  const bus = await createBus({ url, service, logger: silentLogger, contracts });
  closers.push(() => bus.close());
  return bus;
}

/** An outbox for `bus` on a store of a schema of its own, closed after the test. */
async function outboxOnFreshSchema<C extends Contracts>(bus: Bus<C>) {
  const schema = testSchemaName('saga');
  schemas.push(schema);
  const outbox = await createOutbox({ store: await open(schema), bus, logger: silentLogger });
  closers.push(() => outbox.close());
  return outbox;
}

it('two processes on one PostgreSQL database apply every message of one instance: conflicts are retried, none lost', async () => {
  const schema = testSchemaName('saga');
  schemas.push(schema);
  const bus = await tallyBus();
  const running = [];
  for (let i = 0; i < 2; i++) {
    const outbox = await createOutbox({
      store: await open(schema),
      bus,
      maxRetries: 50,
      logger: silentLogger,
    });
    closers.push(() => outbox.close());
    const saga = await startSaga(tallySaga, { outbox, logger: silentLogger, subscribe: { concurrency: 5 } });
    closers.push(() => saga.close());
    running.push(saga);
  }
  const [one, two] = running as [(typeof running)[0], (typeof running)[0]];
  await bus.publish('tally.opened', { tallyId: 't' });
  await waitFor(async () => (await one.get('t')) !== undefined, 'the tally to open');
  tallyRuns.count = 0;
  await Promise.all(
    Array.from({ length: 30 }, (_, i) => bus.publish('tally.add', { tallyId: 't', n: i + 1 })),
  );
  await waitFor(async () => (await two.get('t'))?.data.count === 30, 'every addition', 30_000);
  expect(await one.get('t')).toMatchObject({ data: { total: 465, count: 30 }, version: 31 });
  // Ten handlers at once on one instance: some lost the race and ran again.
  expect(tallyRuns.count).toBeGreaterThan(30);
  expect(await bus.listDeadLetters({ group: 'saga-tally' })).toEqual([]);
});

it('applies a message handled before its instance was committed (sent right after the start): tried again, not dead-lettered', async () => {
  // Must not be lost: the tally.add of each instance. Published after tally.opened with the same key,
  // it goes out once tally.opened is confirmed, not handled, and is handled beside it on PostgreSQL:
  // it found no instance, was dead-lettered at once, and the instance never counted it.
  const schema = testSchemaName('saga');
  schemas.push(schema);
  const bus = await tallyBus();
  const outbox = await createOutbox({ store: await open(schema), bus, logger: silentLogger });
  closers.push(() => outbox.close());
  // Its start takes a moment (it sends its first commands, checks them): the race is then lost often.
  const slowStart = defineSaga({
    ...tallySaga,
    started: () => new Promise((resolve) => setTimeout(resolve, 10)),
  } as typeof tallySaga);
  const saga = await startSaga(slowStart, {
    outbox,
    logger: silentLogger,
    subscribe: { backoff: { initialDelayMs: 20, maxDelayMs: 100 } },
  });
  closers.push(() => saga.close());
  const ids = Array.from({ length: 40 }, (_, i) => `early-${i}`);
  for (const tallyId of ids) {
    await outbox.unitOfWork(async (work) => {
      await work.publish('tally.opened', { tallyId }, { key: tallyId });
      await work.publish('tally.add', { tallyId, n: 1 }, { key: tallyId });
    });
  }
  let missing: string[] = [];
  await waitFor(
    async () => {
      const counted = new Set(
        (await saga.instances({ limit: 100 })).filter((i) => i.data.count === 1).map((i) => i.id),
      );
      missing = ids.filter((id) => !counted.has(id));
      return missing.length === 0;
    },
    () => `every instance to count its addition (${missing.join(', ')} did not)`,
    20_000,
  );
  expect(await saga.instances({ limit: 100 })).toHaveLength(ids.length);
  expect(await bus.listDeadLetters({ group: 'saga-tally' })).toEqual([]);
});

const tapeContracts = {
  'tape.opened': z.object({ tapeId: z.string() }),
  'tape.mark': z.object({ tapeId: z.string(), n: z.number() }),
  'tape.marked': z.object({ tapeId: z.string(), n: z.number() }),
};

/** Records every message it applies, and publishes one message per application. */
const tapeSaga = defineSaga({
  name: 'tape',
  contracts: tapeContracts,
  startedBy: ['tape.opened'],
  initial: () => ({ status: 'open', data: { seen: [] as number[] } }),
  id: { 'tape.opened': (m) => m.data.tapeId, 'tape.mark': (m) => m.data.tapeId },
  states: {
    open: {
      'tape.mark': (saga, m) => {
        saga.set({ seen: [...saga.state.data.seen, m.data.n] }).publish('tape.marked', m.data);
      },
    },
  },
});

it('sustained contention on one instance (two processes, ten handlers each, default retries) dead-letters nothing: every message applied once', async () => {
  const schema = testSchemaName('saga');
  schemas.push(schema);
  const url = `memory://saga-pg-${uuidv7()}`;
  const count = 80;
  const running = [];
  const buses = [];
  for (let i = 0; i < 2; i++) {
    // The outbox's default maxRetries (3) and the bus's default maxAttempts (5), with a short
    // redelivery delay: what a service gets unless it tunes them.
    const bus = await createBus({
      url,
      service: 'tape',
      logger: silentLogger,
      contracts: tapeContracts,
      subscriptionDefaults: { backoff: { initialDelayMs: 10, factor: 1, maxDelayMs: 10 } },
    });
    closers.push(() => bus.close());
    buses.push(bus);
    const outbox = await createOutbox({ store: await open(schema), bus, logger: silentLogger });
    closers.push(() => outbox.close());
    const saga = await startSaga(tapeSaga, { outbox, logger: silentLogger, subscribe: { concurrency: 10 } });
    closers.push(() => saga.close());
    running.push(saga);
  }
  const [bus] = buses as [(typeof buses)[0]];
  const [one] = running as [(typeof running)[0]];
  const marked: number[] = [];
  await bus.subscribe('tape.marked', (m) => void marked.push(m.data.n), { group: 'observer' });
  await bus.publish('tape.opened', { tapeId: 't' });
  await waitFor(async () => (await one.get('t')) !== undefined, 'the tape to open');
  await Promise.all(
    Array.from({ length: count }, (_, i) => bus.publish('tape.mark', { tapeId: 't', n: i + 1 })),
  );
  const everyOne = Array.from({ length: count }, (_, i) => i + 1);
  const settled = async () =>
    (await one.get('t'))!.version + (await bus.listDeadLetters({ group: 'saga-tape' })).length === count + 1;
  await waitFor(settled, 'every message applied or dead-lettered', 60_000);
  expect(await bus.listDeadLetters({ group: 'saga-tape' })).toEqual([]);
  const instance = await one.get('t');
  expect([...instance!.data.seen].sort((a, b) => a - b)).toEqual(everyOne);
  expect(instance!.version).toBe(count + 1);
  await waitFor(() => marked.length >= count, 'every message published', 30_000);
  expect([...marked].sort((a, b) => a - b)).toEqual(everyOne);
}, 90_000);

it('finds no instance by an id holding NUL, as on the other stores (PostgreSQL text cannot hold one)', async () => {
  // running.get rejected with PostgreSQL's raw "invalid byte sequence"; memory and SQLite found none.
  const schema = testSchemaName('saga');
  schemas.push(schema);
  const bus = await tallyBus();
  const outbox = await createOutbox({ store: await open(schema), bus, logger: silentLogger });
  closers.push(() => outbox.close());
  const saga = await startSaga(tallySaga, { outbox, logger: silentLogger });
  closers.push(() => saga.close());
  expect(await saga.get('t\u0000')).toBeUndefined();
});

const startContracts = {
  'order.placed': z.object({ orderId: z.string(), total: z.number() }),
  'stock.reserve': z.object({ orderId: z.string(), total: z.number() }),
};

/** Keeps the total of the message that started it, and sends it on. */
const firstStartSaga = defineSaga({
  name: 'first-start',
  contracts: startContracts,
  startedBy: ['order.placed'],
  initial: (m) => ({ status: 'open', data: { total: m.data.total } }),
  started: (saga) => {
    saga.send('stock.reserve', { orderId: saga.id, total: saga.state.data.total });
  },
  id: { 'order.placed': (m) => m.data.orderId },
  states: { open: {} },
});

it('of two start messages of one instance published back to back, the first starts it and the second is the duplicate, as on SQLite and memory', async () => {
  // Handled side by side, whichever committed first won: 2 to 5 instances of 10 took the second
  // message's total, and sent it on. Must not happen: an instance started by the later message.
  const bus = await memoryBus('shop', startContracts);
  const outbox = await outboxOnFreshSchema(bus);
  const saga = await startSaga(firstStartSaga, { outbox, logger: silentLogger });
  closers.push(() => saga.close());
  const reserved: { orderId: string; total: number }[] = [];
  await bus.subscribe('stock.reserve', (m) => void reserved.push(m.data), { group: 'stock' });
  const ids = Array.from({ length: 20 }, (_, i) => `order-${i}`);
  for (const orderId of ids) {
    await bus.publish('order.placed', { orderId, total: 1 });
    await bus.publish('order.placed', { orderId, total: 2 });
  }
  await waitFor(() => reserved.length >= ids.length, 'a reservation per order', 20_000);
  await outbox.flush();
  expect(reserved.map((r) => r.total)).toEqual(ids.map(() => 1));
  for (const orderId of ids) expect((await saga.get(orderId))?.data).toEqual({ total: 1 });
});

it("applies one instance's messages in the order they arrive, in one process", async () => {
  // Ten handlers at once applied them in whatever order their units of work committed.
  const bus = await memoryBus('tape', tapeContracts);
  const outbox = await outboxOnFreshSchema(bus);
  const saga = await startSaga(tapeSaga, { outbox, logger: silentLogger, subscribe: { concurrency: 10 } });
  closers.push(() => saga.close());
  await bus.publish('tape.opened', { tapeId: 't' });
  for (let n = 1; n <= 30; n++) await bus.publish('tape.mark', { tapeId: 't', n });
  await waitFor(async () => (await saga.get('t'))?.data.seen.length === 30, 'every mark', 20_000);
  expect((await saga.get('t'))?.data.seen).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
});

it('keeps the first start message first with two runners of the saga in one process (one outbox, two buses)', async () => {
  // Each runner had turns of its own: 2 to 3 of 30 instances were started by the later message.
  const url = `memory://saga-pg-${uuidv7()}`;
  const one = await memoryBus('shop', startContracts, url);
  const two = await memoryBus('shop', startContracts, url);
  const outbox = await outboxOnFreshSchema(one);
  const first = await startSaga(firstStartSaga, { outbox, logger: silentLogger });
  closers.push(() => first.close());
  const second = await startSaga(firstStartSaga, { outbox, bus: two, logger: silentLogger });
  closers.push(() => second.close());
  const ids = Array.from({ length: 30 }, (_, i) => `order-${i}`);
  for (const orderId of ids) {
    await one.publish('order.placed', { orderId, total: 1 });
    await one.publish('order.placed', { orderId, total: 2 });
  }
  await waitFor(async () => (await first.instances({ limit: 100 })).length === ids.length, 'every order');
  await outbox.flush();
  for (const orderId of ids) expect((await first.get(orderId))?.data).toEqual({ total: 1 });
});

it("publishes nothing of a step that ran past its time limit: its retry's messages only, once", async () => {
  // A handler that blocked the event loop past handlerTimeoutMs: its unit of work was rolled back
  // while its outbox insert was under way, which then ran after the ROLLBACK, in autocommit. The
  // step's state was applied once (by the retry) but its message went out twice, with two ids.
  const bus = await memoryBus('tape', tapeContracts);
  const outbox = await outboxOnFreshSchema(bus);
  let blocked = false;
  const slowOnce = defineSaga({
    ...tapeSaga,
    states: {
      open: {
        'tape.mark': (saga, m) => {
          if (m.data.n === 2 && !blocked) {
            blocked = true;
            const until = Date.now() + 300;
            while (Date.now() < until) {}
          }
          saga.set({ seen: [...saga.state.data.seen, m.data.n] }).publish('tape.marked', m.data);
        },
      },
    },
  } as typeof tapeSaga);
  const saga = await startSaga(slowOnce, {
    outbox,
    logger: silentLogger,
    subscribe: { handlerTimeoutMs: 100, backoff: { initialDelayMs: 30, factor: 1, maxDelayMs: 30 } },
  });
  closers.push(() => saga.close());
  const marked: { n: number; id: string }[] = [];
  await bus.subscribe('tape.marked', (m) => void marked.push({ n: m.data.n, id: m.id }), {
    group: 'observer',
  });
  await bus.publish('tape.opened', { tapeId: 't' });
  for (let n = 1; n <= 4; n++) await bus.publish('tape.mark', { tapeId: 't', n });
  await waitFor(async () => (await saga.get('t'))?.data.seen.length === 4, 'every mark applied', 10_000);
  await outbox.flush();
  await sleep(200);
  expect([...(await saga.get('t'))!.data.seen].sort()).toEqual([1, 2, 3, 4]);
  expect(marked.map((m) => m.n).sort()).toEqual([1, 2, 3, 4]);
});
