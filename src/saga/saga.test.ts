import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import type { Message } from '../messaging/envelope.js';
import { SagaConcurrencyError } from '../outbox/errors.js';
import { createOutbox } from '../outbox/outbox.js';
import { sleep, waitFor } from '../testing/wait.js';
import { VirtualClock } from '../time/clock.js';
import { defineSaga } from './define-saga.js';
import { SagaDefinitionError, SagaTransitionError, SagaUnknownInstanceError } from './errors.js';
import { orderContracts, orderSaga } from './fixtures/order-saga.js';
import { retrySaga, sloppySaga } from './fixtures/retry-saga.js';
import { tallyContracts, tallySaga } from './fixtures/tally-saga.js';
import type { SagaContext } from './saga-context.js';
import { undoMessageId } from './saga-state.js';
import { startSaga } from './start-saga.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** The bus, store and outbox of a service, without a saga. */
async function service() {
  const clock = new VirtualClock({ start: Date.now() });
  const bus = await createBus({
    url: `memory://saga-${uuidv7()}`,
    service: 'shop',
    logger: silentLogger,
    contracts: { ...orderContracts, ...tallyContracts },
    clock,
  });
  closers.push(() => bus.close());
  const backend = new MemoryEventStoreBackend();
  const store = new EventStore(backend, { logger: silentLogger });
  closers.push(() => store.close());
  const outbox = await createOutbox({ store, bus, clock, logger: silentLogger });
  closers.push(() => outbox.close());
  const received: Message[] = [];
  await bus.subscribe('#', (m) => void received.push(m), { group: 'audit' });
  const sent = (type: string) => received.filter((m) => m.type === type);
  // The relay sleeps 0 ms on the clock between two rows of one key: a virtual clock must let it run.
  const until = (what: string, condition: () => boolean | Promise<boolean>) =>
    waitFor(async () => {
      await clock.advance(0);
      return condition();
    }, what);
  return { clock, bus, backend, store, outbox, received, sent, until };
}

/** A service running the order saga. */
async function setup() {
  const s = await service();
  const saga = await startSaga(orderSaga, { outbox: s.outbox, logger: silentLogger });
  closers.push(() => saga.close());
  return { ...s, saga };
}

type Setup = Awaited<ReturnType<typeof setup>>;

async function placeAndReserve(s: Setup, orderId: string) {
  await s.bus.publish('order.placed', { orderId, total: 40 });
  await s.until('stock.reserve', () => s.sent('stock.reserve').length === 1);
  await s.bus.publish('stock.reserved', { orderId });
  await s.until('payment.charge', () => s.sent('payment.charge').length === 1);
}

describe('order saga on the memory store and bus', () => {
  it('reserves, charges and confirms; the payment timeout is cancelled and never fires', async () => {
    const s = await setup();
    await placeAndReserve(s, 'o-1');
    expect(s.sent('payment.charge')[0]!.data).toEqual({ orderId: 'o-1', amount: 40 });
    expect(await s.saga.get('o-1')).toMatchObject({
      status: 'charging',
      timeouts: ['payment'],
      steps: ['stock'],
    });
    const [timeout] = await s.outbox.scheduled();
    expect(timeout).toMatchObject({
      type: 'saga.order.timeout',
      envelope: { data: { sagaId: 'o-1', name: 'payment' } },
    });
    expect(timeout!.dueAt.getTime()).toBe(s.clock.now() + 30_000);

    await s.bus.publish('payment.charged', { orderId: 'o-1' });
    await s.until('order.confirmed', () => s.sent('order.confirmed').length === 1);
    const done = await s.saga.get('o-1');
    expect(done).toMatchObject({ status: 'confirmed', completed: true, timeouts: [], version: 3 });
    expect(await s.outbox.scheduled()).toEqual([]);

    await s.clock.advance(60_000);
    await s.outbox.flush();
    await sleep(20);
    expect(s.sent('saga.order.timeout')).toEqual([]);
    expect(await s.saga.get('o-1')).toEqual(done);
    expect(s.sent('stock.release')).toEqual([]);
  });

  it('cancels when the stock is unavailable', async () => {
    const s = await setup();
    await s.bus.publish('order.placed', { orderId: 'o-2', total: 10 });
    await s.until('stock.reserve', () => s.sent('stock.reserve').length === 1);
    await s.bus.publish('stock.unavailable', { orderId: 'o-2' });
    await s.until('order.cancelled', () => s.sent('order.cancelled').length === 1);
    expect(s.sent('order.cancelled')[0]!.data).toEqual({ orderId: 'o-2', reason: 'out of stock' });
    expect(await s.saga.get('o-2')).toMatchObject({ status: 'cancelled', completed: true });
    expect(s.sent('stock.release')).toEqual([]);
  });

  it('compensates a declined payment: releases the stock with a deterministic id, then cancels', async () => {
    const s = await setup();
    await placeAndReserve(s, 'o-3');
    await s.bus.publish('payment.declined', { orderId: 'o-3' });
    await s.until('order.cancelled', () => s.sent('order.cancelled').length === 1);
    const release = s.sent('stock.release');
    expect(release.map((m) => [m.id, m.data])).toEqual([
      [undoMessageId('order', 'o-3', 'stock', 1), { orderId: 'o-3' }],
    ]);
    // Same key (the saga id): the undo goes out before the cancellation.
    const types = s.received.filter((m) => m.type !== 'order.placed').map((m) => m.type);
    expect(types.indexOf('stock.release')).toBeLessThan(types.indexOf('order.cancelled'));
    expect(await s.saga.get('o-3')).toMatchObject({
      status: 'cancelled',
      completed: true,
      steps: [],
      timeouts: [],
      data: { total: 40, notes: ['declined'] },
    });
    expect(await s.outbox.scheduled()).toEqual([]);
  });

  it('gives a step recorded again after a compensation an undo id of its own, so an inbox takes both undos', async () => {
    const s = await service();
    const retry = await startSaga(retrySaga, { outbox: s.outbox, logger: silentLogger });
    closers.push(() => retry.close());
    // The stock service: releases once per message id, through its transactional inbox.
    let released = 0;
    await s.bus.subscribe(
      'stock.release',
      async () => {
        released++;
      },
      { group: 'stock', unitOfWork: s.outbox },
    );
    await s.bus.publish('order.placed', { orderId: 'o-7', total: 40 });
    await s.until('the instance', async () => (await retry.get('o-7')) !== undefined);
    for (const round of [1, 2]) {
      await s.bus.publish('stock.reserved', { orderId: 'o-7' });
      await s.until('charging', async () => (await retry.get('o-7'))?.status === 'charging');
      await s.bus.publish('payment.declined', { orderId: 'o-7' });
      await s.until(`release ${round}`, () => released === round);
    }
    expect(s.sent('stock.release').map((m) => m.id)).toEqual([
      undoMessageId('retry', 'o-7', 'stock', 1),
      undoMessageId('retry', 'o-7', 'stock', 2),
    ]);
    expect(await retry.get('o-7')).toMatchObject({ status: 'reserving', data: { tries: 2 }, steps: [] });
  });

  it('sends the same undo id when the compensating message is run again after a failure', async () => {
    const s = await service();
    let failures = 1;
    const flaky = defineSaga({
      ...retrySaga,
      name: 'flaky',
      states: {
        ...retrySaga.states,
        charging: {
          ...retrySaga.states.charging,
          'payment.declined': (saga) => {
            saga.compensate().to('reserving', { tries: saga.state.data.tries + 1 });
            if (failures-- > 0) throw new Error('the handler fails after compensating');
          },
        },
      },
    });
    const running = await startSaga(flaky, {
      outbox: s.outbox,
      logger: silentLogger,
      subscribe: { backoff: { initialDelayMs: 0, maxDelayMs: 0 } },
    });
    closers.push(() => running.close());
    await s.bus.publish('order.placed', { orderId: 'o-8', total: 40 });
    await s.until('the instance', async () => (await running.get('o-8')) !== undefined);
    await s.bus.publish('stock.reserved', { orderId: 'o-8' });
    await s.until('charging', async () => (await running.get('o-8'))?.status === 'charging');
    await s.bus.publish('payment.declined', { orderId: 'o-8' });
    await s.until('reserving again', async () => (await running.get('o-8'))?.status === 'reserving');
    await s.until('the release', () => s.sent('stock.release').length === 1);
    expect(failures).toBe(-1);
    expect(s.sent('stock.release').map((m) => m.id)).toEqual([undoMessageId('flaky', 'o-8', 'stock', 1)]);
  });

  it('dead-letters at once a step recorded with an undo message its contract refuses, and keeps the instance as it was', async () => {
    const s = await service();
    // orderId must be a string.
    const sloppy = sloppySaga({ type: 'stock.release', data: { orderId: 42 } });
    const running = await startSaga(sloppy, { outbox: s.outbox, logger: silentLogger });
    closers.push(() => running.close());
    await s.bus.publish('order.placed', { orderId: 'o-9', total: 40 });
    await s.until('the instance', async () => (await running.get('o-9')) !== undefined);
    await s.bus.publish('stock.reserved', { orderId: 'o-9' });
    await s.until(
      'a dead letter',
      async () => (await s.bus.listDeadLetters({ group: 'saga-sloppy' })).length === 1,
    );
    const [letter] = await s.bus.listDeadLetters({ group: 'saga-sloppy' });
    expect(letter!.attempts).toBe(1);
    expect(letter!.envelope?.type).toBe('stock.reserved');
    expect(letter!.reason.message).toMatch(
      /^saga "sloppy": instance "o-9": the undo message of step "stock" could not be sent: message of type "stock\.release" failed its schema: orderId/,
    );
    expect(await running.get('o-9')).toMatchObject({ status: 'reserving', steps: [], version: 1 });
  });

  it('dead-letters at once a message or timeout it asks for that could not be sent (a bad when, a refused contract), and starts no instance', async () => {
    const s = await service();
    // Each order asks for something the bus or the outbox refuses whatever the attempt.
    const asks: Record<string, (saga: SagaContext<typeof orderContracts, 'open', object>) => void> = {
      'negative-delay': (saga) => void saga.schedule('t', { delayMs: -1 }),
      'delay-past-max': (saga) => void saga.schedule('t', { delayMs: 2 ** 31 }),
      'fractional-delay': (saga) => void saga.schedule('t', { delayMs: 1.5 }),
      'no-when': (saga) => void (saga.schedule as (name: string) => unknown)('t'),
      'both-whens': (saga) => void saga.schedule('t', { delayMs: 1, at: new Date() } as never),
      'invalid-date': (saga) => void saga.schedule('t', { at: new Date(Number.NaN) }),
      'refused-send': (saga) => void saga.send('stock.reserve', { orderId: 42 } as never),
      'refused-timeout-message': (saga) =>
        void saga.schedule('t', 'stock.reserve', { orderId: 42 } as never, { delayMs: 10 }),
      'unknown-type': (saga) => void saga.send('no such type' as never, {} as never),
      // A misspelt key beside a good one was dropped; null options were spread as none.
      'misspelt-when': (saga) => void saga.schedule('t', { at: new Date(), delayMS: 5 } as never),
      'null-options': (saga) => void saga.send('stock.reserve', { orderId: saga.id }, null as never),
      'number-options': (saga) => void saga.publish('stock.reserve', { orderId: saga.id }, 5 as never),
    };
    const asking = defineSaga({
      name: 'asking',
      contracts: orderContracts,
      startedBy: ['order.placed'],
      initial: () => ({ status: 'open' as const, data: {} }),
      started: (saga, m) => asks[m.data.orderId]?.(saga),
      id: { 'order.placed': (m) => m.data.orderId },
      states: { open: {} },
    });
    const running = await startSaga(asking, {
      outbox: s.outbox,
      logger: silentLogger,
      subscribe: { maxAttempts: 3, backoff: { initialDelayMs: 0, maxDelayMs: 0 } },
    });
    closers.push(() => running.close());
    for (const orderId of Object.keys(asks)) await s.bus.publish('order.placed', { orderId, total: 1 });
    const letters = async () => s.bus.listDeadLetters({ group: 'saga-asking' });
    await s.until('a dead letter each', async () => (await letters()).length === Object.keys(asks).length);
    for (const letter of await letters()) {
      const orderId = (letter.envelope!.data as { orderId: string }).orderId;
      // Refused at the first attempt, named as the saga's mistake (not retried as an outage).
      expect({ orderId, attempts: letter.attempts }).toEqual({ orderId, attempts: 1 });
      expect(letter.reason.message, orderId).toMatch(new RegExp(`^saga "asking": instance "${orderId}": `));
      expect(await running.get(orderId), orderId).toBeUndefined();
    }
    const reasons = Object.fromEntries(
      (await letters()).map((l) => [(l.envelope!.data as { orderId: string }).orderId, l.reason.message]),
    );
    expect(reasons['negative-delay']).toMatch(/timeout "t" needs exactly one of delayMs .* not delayMs -1$/);
    expect(reasons['no-when']).toMatch(/timeout "t" needs exactly one of delayMs .* not undefined$/);
    expect(reasons['refused-send']).toMatch(
      /message "stock\.reserve" could not be sent: message of type "stock\.reserve" failed its schema/,
    );
    expect(reasons['refused-timeout-message']).toMatch(/the message of timeout "t" could not be sent/);
    expect(reasons['misspelt-when']).toMatch(/timeout "t" needs .*, and nothing else, not "delayMS"$/);
    expect(reasons['null-options']).toMatch(
      /the options of message "stock\.reserve" must be an object, not null$/,
    );
    expect(s.sent('stock.reserve')).toEqual([]);
    expect(await s.outbox.scheduled()).toEqual([]);
  });

  it('compensates when the payment timeout fires, on the virtual clock', async () => {
    const s = await setup();
    await placeAndReserve(s, 'o-4');
    await s.clock.advance(29_999);
    await s.outbox.flush();
    expect(s.sent('saga.order.timeout')).toEqual([]);
    await s.clock.advance(1);
    await s.until('order.cancelled', () => s.sent('order.cancelled').length === 1);
    expect(s.sent('saga.order.timeout')).toHaveLength(1);
    expect(s.sent('order.cancelled')[0]!.data).toEqual({ orderId: 'o-4', reason: 'payment timed out' });
    expect(s.sent('stock.release').map((m) => m.id)).toEqual([undoMessageId('order', 'o-4', 'stock', 1)]);
    expect(await s.saga.get('o-4')).toMatchObject({ status: 'cancelled', completed: true, timeouts: [] });
    // A reply after the timeout: the instance is completed, onCompleted is 'ignore'.
    await s.bus.publish('payment.charged', { orderId: 'o-4' });
    await sleep(30);
    expect(await s.bus.listDeadLetters({ group: 'saga-order' })).toEqual([]);
    expect(s.sent('order.confirmed')).toEqual([]);
    expect(await s.saga.get('o-4')).toMatchObject({ status: 'cancelled', version: 3 });
  });

  it('refuses a saga call made after its handler returned (an un-awaited async helper) instead of dropping it without a word', async () => {
    const s = await service();
    const late: unknown[] = [];
    let helperDone: () => void = () => {};
    const helperRan = new Promise<void>((resolve) => {
      helperDone = resolve;
    });
    // A helper the handler forgets to await: its call comes after the handler returned.
    const confirmLater = async (saga: {
      publish(type: 'order.confirmed', data: { orderId: string }): unknown;
    }) => {
      await sleep(5);
      try {
        saga.publish('order.confirmed', { orderId: 'o-late' });
      } catch (error) {
        late.push(error);
      }
      helperDone();
    };
    const saga = defineSaga({
      name: 'late',
      contracts: orderContracts,
      startedBy: ['order.placed'],
      initial: () => ({ status: 'reserving', data: {} }),
      started: (ctx) => {
        void confirmLater(ctx);
      },
      id: { 'order.placed': (m) => m.data.orderId, 'stock.reserved': (m) => m.data.orderId },
      states: {
        reserving: {
          // Awaited before its call: applied.
          'stock.reserved': async (ctx) => {
            await sleep(5);
            ctx.to('confirmed');
          },
        },
        confirmed: {},
      },
    });
    const runner = await startSaga(saga, { outbox: s.outbox, logger: silentLogger });
    closers.push(() => runner.close());
    await s.bus.publish('order.placed', { orderId: 'o-late', total: 1 });
    await helperRan;
    expect(late).toHaveLength(1);
    expect(late[0]).toBeInstanceOf(SagaDefinitionError);
    expect(String((late[0] as Error).message)).toMatch(/publish.*after its handler returned/);
    await s.bus.publish('stock.reserved', { orderId: 'o-late' });
    await s.until('confirmed', async () => (await runner.get('o-late'))?.status === 'confirmed');
    expect(s.sent('order.confirmed')).toEqual([]);
  });

  it('ignores a second start message for an existing instance', async () => {
    const s = await setup();
    await s.bus.publish('order.placed', { orderId: 'o-5', total: 40 });
    await s.until('stock.reserve', () => s.sent('stock.reserve').length === 1);
    await s.bus.publish('order.placed', { orderId: 'o-5', total: 99 });
    await s.until('second order.placed', () => s.sent('order.placed').length === 2);
    await sleep(30);
    expect(s.sent('stock.reserve')).toHaveLength(1);
    expect(await s.saga.get('o-5')).toMatchObject({ status: 'reserving', data: { total: 40 }, version: 1 });
    expect(await s.bus.listDeadLetters({ group: 'saga-order' })).toEqual([]);
  });

  it("dead-letters a message for an unknown instance after the subscription's attempts (its start may not have committed yet)", async () => {
    const s = await service();
    const saga = await startSaga(orderSaga, {
      outbox: s.outbox,
      logger: silentLogger,
      subscribe: { maxAttempts: 3, backoff: { initialDelayMs: 10, maxDelayMs: 10 } },
    });
    closers.push(() => saga.close());
    await s.bus.publish('stock.reserved', { orderId: 'nobody' });
    // The retry delays run on the bus's virtual clock.
    await waitFor(async () => {
      await s.clock.advance(10);
      return (await s.bus.listDeadLetters({ group: 'saga-order' })).length === 1;
    }, 'a dead letter');
    const [letter] = await s.bus.listDeadLetters({ group: 'saga-order' });
    expect(letter).toMatchObject({
      attempts: 3,
      reason: { message: new SagaUnknownInstanceError('order', 'nobody', 'stock.reserved').message },
    });
    expect(letter!.envelope?.type).toBe('stock.reserved');
    expect(await saga.instances()).toEqual([]);
  });

  it("with onUnknown 'ignore', ignores a message for an unknown instance only at its last attempt, not before its start may have committed", async () => {
    const s = await service();
    const attempts: number[] = [];
    const saga = await startSaga(defineSaga({ ...orderSaga, onUnknown: 'ignore' } as typeof orderSaga), {
      outbox: s.outbox,
      logger: silentLogger,
      subscribe: {
        maxAttempts: 3,
        backoff: { initialDelayMs: 10, maxDelayMs: 10 },
        middleware: [
          (next) => async (message) => {
            attempts.push(message.attempt);
            return next(message);
          },
        ],
      },
    });
    closers.push(() => saga.close());
    await s.bus.publish('stock.reserved', { orderId: 'nobody-yet' });
    await waitFor(async () => {
      await s.clock.advance(10);
      return attempts.length === 3;
    }, 'the last attempt');
    await s.clock.advance(100);
    await sleep(50);
    expect(attempts).toEqual([1, 2, 3]);
    expect(await s.bus.listDeadLetters({ group: 'saga-order' })).toEqual([]);
  });

  it('refuses what is not a saga definition, and an instance status it does not have (it listed nothing)', async () => {
    const s = await setup();
    await expect(startSaga({} as never, { outbox: s.outbox })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/needs a saga definition/),
    });
    for (const query of [{ status: 'bogus' }, { status: 'Active' }, { stauts: 'active' }]) {
      await expect(s.saga.instances(query as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it("refuses a group inside subscribe (it was dropped for saga-<name>), pointing to startSaga's own", async () => {
    const s = await service();
    await expect(
      startSaga(orderSaga, { outbox: s.outbox, subscribe: { group: 'orders-saga' } as never }),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringMatching(/own group option/) });
  });

  it('refuses subscribe.middleware that is not a list of functions with INVALID_OPTIONS, as subscribe does', async () => {
    const s = await service();
    for (const middleware of [5, 'log', [5], {}]) {
      await expect(
        startSaga(orderSaga, { outbox: s.outbox, subscribe: { middleware } as never }),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it('dead-letters at once a message whose instance id PostgreSQL could not keep apart (NUL, lone surrogate)', async () => {
    const s = await setup();
    for (const orderId of ['o-\u0000', 'o-\uD800']) {
      await s.bus.publish('order.placed', { orderId, total: 40 }).catch(() => {});
    }
    await s.until(
      'the dead letters',
      async () => (await s.bus.listDeadLetters({ group: 'saga-order' })).length === 2,
    );
    for (const letter of await s.bus.listDeadLetters({ group: 'saga-order' })) {
      expect(letter.attempts).toBe(1);
      expect(letter.reason.message).toMatch(
        /without NUL or lone surrogates: it contains (NUL|a lone surrogate)/,
      );
    }
    expect(await s.saga.instances()).toEqual([]);
  });

  it('dead-letters an invalid transition at once, with the typed error text', async () => {
    const s = await setup();
    await s.bus.publish('order.placed', { orderId: 'o-6', total: 40 });
    await s.until('stock.reserve', () => s.sent('stock.reserve').length === 1);
    await s.bus.publish('payment.charged', { orderId: 'o-6' });
    await s.until(
      'a dead letter',
      async () => (await s.bus.listDeadLetters({ group: 'saga-order' })).length === 1,
    );
    const [letter] = await s.bus.listDeadLetters({ group: 'saga-order' });
    expect(letter!.attempts).toBe(1);
    expect(letter!.reason.message).toBe(
      'saga "order" instance "o-6" in status "reserving" has no handler for "payment.charged"',
    );
    expect(letter!.reason.message).toBe(
      new SagaTransitionError('order', 'o-6', 'reserving', 'payment.charged').message,
    );
    expect(await s.saga.get('o-6')).toMatchObject({ status: 'reserving', version: 1 });
  });

  it('lists instances by active or completed', async () => {
    const s = await setup();
    await s.bus.publish('order.placed', { orderId: 'a', total: 1 });
    await s.bus.publish('order.placed', { orderId: 'b', total: 2 });
    await s.until('two reservations', () => s.sent('stock.reserve').length === 2);
    await s.bus.publish('stock.unavailable', { orderId: 'b' });
    await s.until('order.cancelled', () => s.sent('order.cancelled').length === 1);
    expect((await s.saga.instances({ status: 'active' })).map((i) => i.id)).toEqual(['a']);
    expect((await s.saga.instances({ status: 'completed' })).map((i) => i.id)).toEqual(['b']);
    expect((await s.saga.instances()).map((i) => i.id).sort()).toEqual(['a', 'b']);
    expect(await s.saga.get('zzz')).toBeUndefined();
  });

  it('applies every message of two saga instances (processes) sharing the store, none lost', async () => {
    const s = await setup();
    // A second "process": its own outbox on the same database, its own subscribers in the same group.
    const second = await createOutbox({
      store: new EventStore(s.backend, { logger: silentLogger }),
      bus: s.bus,
      clock: s.clock,
      logger: silentLogger,
    });
    closers.push(() => second.close());
    const one = await startSaga(tallySaga, {
      outbox: s.outbox,
      logger: silentLogger,
      subscribe: { concurrency: 4 },
    });
    const two = await startSaga(tallySaga, {
      outbox: second,
      logger: silentLogger,
      subscribe: { concurrency: 4 },
    });
    closers.push(
      () => one.close(),
      () => two.close(),
    );
    await s.bus.publish('tally.opened', { tallyId: 't' });
    await s.until('the tally', async () => (await one.get('t')) !== undefined);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.bus.publish('tally.add', { tallyId: 't', n: i + 1 })),
    );
    await s.until('20 additions', async () => (await two.get('t'))?.data.count === 20);
    expect(await one.get('t')).toMatchObject({ data: { total: 210, count: 20 }, version: 21 });
    expect(await s.bus.listDeadLetters({ group: 'saga-tally' })).toEqual([]);
  });

  it('reruns a message that keeps losing the race on its instance far past the outbox maxRetries, until its time limit', async () => {
    // The system clock: the handler's time limit is what ends the reruns here.
    const bus = await createBus({
      url: `memory://saga-${uuidv7()}`,
      service: 'shop',
      logger: silentLogger,
      contracts: tallyContracts,
    });
    closers.push(() => bus.close());
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
    closers.push(() => store.close());
    const outbox = await createOutbox({ store, bus, logger: silentLogger, maxRetries: 3 });
    closers.push(() => outbox.close());
    let runs = 0;
    const stuck = defineSaga({
      name: 'stuck',
      contracts: tallyContracts,
      startedBy: ['tally.opened'],
      initial: () => ({ status: 'open', data: {} }),
      id: { 'tally.opened': (m) => m.data.tallyId },
      // As if another message of the instance committed first, every time.
      started: () => {
        runs++;
        throw new SagaConcurrencyError('stuck', 't', 0);
      },
      states: { open: {} },
    });
    const running = await startSaga(stuck, {
      outbox,
      logger: silentLogger,
      subscribe: { handlerTimeoutMs: 500, maxAttempts: 1 },
    });
    closers.push(() => running.close());
    await bus.publish('tally.opened', { tallyId: 't' });
    await waitFor(
      async () => (await bus.listDeadLetters({ group: 'saga-stuck' })).length === 1,
      'the dead letter',
    );
    const [dead] = await bus.listDeadLetters({ group: 'saga-stuck' });
    expect(dead!.reason.kind).toBe('timeout');
    // More reruns than the outbox's maxRetries (3) would allow…
    expect(runs).toBeGreaterThan(4);
    // …and none after the attempt timed out: the unit of work is not left retrying in the background.
    const atTimeout = runs;
    await sleep(400);
    expect(runs).toBe(atTimeout);
  });
});

describe('a running saga’s get', () => {
  it.each(['memory', 'sqlite'])(
    'refuses an id that is not a string with INVALID_OPTIONS and finds nothing by an id no instance can have, on %s',
    async (url) => {
      // On SQLite a symbol, an object or an array reached the driver: raw TypeError or RangeError.
      const bus = await createBus({
        url: `memory://saga-get-${uuidv7()}`,
        service: 'shop',
        logger: silentLogger,
      });
      closers.push(() => bus.close());
      const path = join(tmpdir(), `ferry-saga-get-${uuidv7()}.db`);
      closers.push(async () => {
        for (const suffix of ['', '-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
      });
      const store = await createEventStore({
        url: url === 'memory' ? `memory://saga-get-${uuidv7()}` : `sqlite:${path}`,
      });
      closers.push(() => store.close());
      const outbox = await createOutbox({ store, bus, logger: silentLogger });
      closers.push(() => outbox.close());
      const saga = await startSaga(orderSaga, { outbox, logger: silentLogger });
      closers.push(() => saga.close());
      for (const id of [Symbol('s'), Object.create(null), { a: 1 }, [1, 2], 5, undefined]) {
        await expect(saga.get(id as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      }
      for (const id of ['o-\u0000', 'o-\uD800', 'unknown']) expect(await saga.get(id)).toBeUndefined();
    },
  );
});

describe("an instance's turn", () => {
  const contracts = {
    'tab.opened': z.object({ tabId: z.string(), total: z.number() }),
    'tab.add': z.object({ tabId: z.string(), n: z.number() }),
  };
  /** Added to by `tab.add` handlers, each of which waits for `gate` first. */
  const gates: { open: () => void; opened: Promise<void> }[] = [];
  let addRuns = 0;
  const tabSaga = defineSaga({
    name: 'tab',
    contracts,
    startedBy: ['tab.opened'],
    initial: (m) => ({ status: 'open', data: { total: m.data.total, added: [] as number[] } }),
    id: { 'tab.opened': (m) => m.data.tabId, 'tab.add': (m) => m.data.tabId },
    states: {
      open: {
        'tab.add': async (saga, m) => {
          addRuns++;
          await gates[0]?.opened;
          saga.set({ ...saga.state.data, added: [...saga.state.data.added, m.data.n] });
        },
      },
    },
  });

  async function tabService(closeTimeoutMs = 10_000) {
    const url = `memory://saga-turn-${uuidv7()}`;
    const bus = await createBus({ url, service: 'shop', logger: silentLogger, contracts, closeTimeoutMs });
    closers.push(() => bus.close());
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
    closers.push(() => store.close());
    const outbox = await createOutbox({ store, bus, logger: silentLogger });
    closers.push(() => outbox.close());
    return { url, bus, store, outbox };
  }

  it('comes in the order messages reach the saga, whatever its subscription middleware takes', async () => {
    // The turn was taken inside the subscription's middleware: one that took longer for the first
    // start message than for the second (a cache miss, then a hit) let the second start the instance.
    const { bus, outbox } = await tabService();
    const saga = await startSaga(tabSaga, {
      outbox,
      logger: silentLogger,
      subscribe: {
        middleware: [
          (next) => async (m) =>
            sleep((m.data as { total?: number }).total === 1 ? 20 : 1).then(() => next(m)),
        ],
      },
    });
    closers.push(() => saga.close());
    const ids = Array.from({ length: 10 }, (_, i) => `tab-${i}`);
    for (const tabId of ids) {
      await bus.publish('tab.opened', { tabId, total: 1 });
      await bus.publish('tab.opened', { tabId, total: 2 });
    }
    await waitFor(async () => (await saga.instances()).length === ids.length, 'every tab opened');
    await sleep(50);
    for (const tabId of ids) expect((await saga.get(tabId))?.data.total).toBe(1);
  });

  it('never comes, once the saga is closed, for a message close gave up on: it is handed back and handled by the next runner', async () => {
    // Must not happen: a message handed back at close handled afterwards by the closed runner.
    const { bus, outbox } = await tabService(200);
    let open!: () => void;
    gates.splice(0, gates.length, { open: () => open(), opened: new Promise<void>((r) => (open = r)) });
    addRuns = 0;
    const first = await startSaga(tabSaga, { outbox, logger: silentLogger });
    await bus.publish('tab.opened', { tabId: 't', total: 0 });
    await waitFor(async () => (await first.get('t')) !== undefined, 'the tab opened');
    for (let n = 1; n <= 3; n++) await bus.publish('tab.add', { tabId: 't', n });
    await waitFor(() => addRuns === 1, 'the first addition to run');
    // Its handler is held: the other two wait for their turn when close gives up on all three.
    await first.close();
    gates[0]?.open();
    await sleep(50);
    expect(addRuns).toBe(1);
    const next = await startSaga(tabSaga, { outbox, logger: silentLogger });
    closers.push(() => next.close());
    await waitFor(async () => (await next.get('t'))?.data.added.length === 3, 'every addition, once');
    expect((await next.get('t'))?.data.added).toEqual([1, 2, 3]);
  });

  it('ends with the attempt’s time limit, even when a middleware inside ignores its signal: the instance goes on', async () => {
    // The turn was held as long as the middleware ran: for good when it never returned, and with it
    // the instance's later messages (and, through their slots, other instances').
    const { bus, outbox } = await tabService();
    gates.splice(0);
    const saga = await startSaga(tabSaga, {
      outbox,
      logger: silentLogger,
      subscribe: {
        handlerTimeoutMs: 200,
        backoff: { initialDelayMs: 10, maxDelayMs: 10 },
        middleware: [
          (next) => (m) =>
            (m.data as { n?: number }).n === 2 && m.attempt === 1 ? new Promise<void>(() => {}) : next(m),
        ],
      },
    });
    closers.push(() => saga.close());
    await bus.publish('tab.opened', { tabId: 't', total: 0 });
    for (let n = 1; n <= 3; n++) await bus.publish('tab.add', { tabId: 't', n });
    await waitFor(async () => (await saga.get('t'))?.data.added.length === 3, 'every addition', 5_000);
    expect((await saga.get('t'))?.data.added).toEqual([1, 3, 2]);
  });

  it('never comes for a message its bus’s close gave up on, the runner left open', async () => {
    // Closing the bus (not the runner) handed the waiting messages back, then the runner handled them.
    const { url, bus, store, outbox } = await tabService(200);
    let open!: () => void;
    gates.splice(0, gates.length, { open: () => open(), opened: new Promise<void>((r) => (open = r)) });
    addRuns = 0;
    const first = await startSaga(tabSaga, { outbox, logger: silentLogger });
    closers.push(() => first.close());
    await bus.publish('tab.opened', { tabId: 't', total: 0 });
    await waitFor(async () => (await first.get('t')) !== undefined, 'the tab opened');
    for (let n = 1; n <= 3; n++) await bus.publish('tab.add', { tabId: 't', n });
    await waitFor(() => addRuns === 1, 'the first addition to run');
    await bus.close();
    gates[0]?.open();
    await sleep(50);
    expect(addRuns).toBe(1);
    const nextBus = await createBus({ url, service: 'shop', logger: silentLogger, contracts });
    closers.push(() => nextBus.close());
    const nextOutbox = await createOutbox({ store, bus: nextBus, logger: silentLogger });
    closers.push(() => nextOutbox.close());
    const next = await startSaga(tabSaga, { outbox: nextOutbox, logger: silentLogger });
    closers.push(() => next.close());
    await waitFor(async () => (await next.get('t'))?.data.added.length === 3, 'every addition, once');
    expect((await next.get('t'))?.data.added).toEqual([1, 2, 3]);
  });
});
