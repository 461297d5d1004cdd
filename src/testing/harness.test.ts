import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { isFerryError } from '../errors/ferry-error.js';
import { isHandlerTimeoutError } from '../messaging/handler-timeouts.js';
import { VirtualClock } from '../time/clock.js';
import { createTestHarness, type TestHarness, type TestHarnessOptions } from './harness.js';
import { isSelectTimeoutError } from './message-list.js';

const contracts = {
  'order.placed': z.object({ orderId: z.string() }),
  'order.confirmed': z.object({ orderId: z.string() }),
  'order.reminder': z.object({ orderId: z.string() }),
  'payment.captured': z.object({ orderId: z.string() }),
};
type C = typeof contracts;

const harnesses: TestHarness<C>[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.close();
});

async function start(options: Omit<TestHarnessOptions<C>, 'service' | 'contracts'> = {}) {
  const harness = await createTestHarness<C>({ service: 'orders', contracts, ...options });
  harnesses.push(harness);
  return harness;
}

describe('createTestHarness', () => {
  it('retries a handler through the default backoff (1 s, 2 s) in virtual time, and records every run', async () => {
    let runs = 0;
    const harness = await start({
      setup: async ({ bus }) => {
        await bus.subscribe('order.placed', () => {
          runs++;
          if (runs <= 2) throw new Error(`inventory busy (${runs})`);
        });
      },
    });
    const begin = harness.clock.now();
    await harness.bus.publish('order.placed', { orderId: '1' });

    const consumed = await harness.consumed.select('order.placed');

    expect(consumed).toMatchObject({ group: 'orders', pattern: 'order.placed', message: { attempt: 3 } });
    expect(harness.failed.count('order.placed')).toBe(2);
    expect(harness.failed.all().map((f) => (f.error as Error).message)).toEqual([
      'inventory busy (1)',
      'inventory busy (2)',
    ]);
    // The wait moved time exactly to the second retry: one timer at a time, stopping when found.
    expect(harness.clock.now() - begin).toBe(3_000);
  });

  it('records a message dead-lettered after maxAttempts, with its reason', async () => {
    const harness = await start({
      setup: async ({ bus }) => {
        await bus.subscribe(
          'order.placed',
          () => {
            throw new Error('no such customer');
          },
          { maxAttempts: 3 },
        );
      },
    });
    await harness.bus.publish('order.placed', { orderId: '2' });

    const dead = await harness.deadLettered.select('order.placed');

    expect(dead).toMatchObject({
      group: 'orders',
      attempts: 3,
      reason: { kind: 'handler-error', message: 'no such customer' },
      message: { data: { orderId: '2' } },
    });
    expect(harness.failed.count('order.placed')).toBe(3);
    expect(harness.consumed.none('order.placed')).toBe(true);
    expect(await harness.bus.listDeadLetters()).toHaveLength(1);
  });

  it('publishes an outbox message scheduled 30 s ahead once the test advances 30 s, and not before', async () => {
    const harness = await start({
      setup: async ({ bus }) => {
        await bus.subscribe('order.reminder', () => undefined);
      },
    });
    await harness.outbox.unitOfWork((work) =>
      work.schedule('order.reminder', { orderId: '3' }, { delayMs: 30_000 }),
    );

    await harness.advance(29_999);
    expect(harness.published.none('order.reminder')).toBe(true);
    expect(await harness.outbox.scheduled()).toHaveLength(1);

    await harness.advance(1);
    expect(harness.published.all('order.reminder').map((p) => p.message.data)).toEqual([{ orderId: '3' }]);
    expect(harness.consumed.count('order.reminder')).toBe(1);
  });

  it('settle runs what is in flight without moving time', async () => {
    const harness = await start({
      setup: async ({ bus, outbox }) => {
        await bus.subscribe(
          'order.placed',
          async (msg, { work }) => {
            await work.publish('order.confirmed', { orderId: msg.data.orderId });
          },
          { unitOfWork: outbox },
        );
      },
    });
    const before = harness.clock.now();
    await harness.bus.publish('order.placed', { orderId: '4' });

    await harness.settle();

    expect(harness.consumed.count('order.placed')).toBe(1);
    // Sent by the relay after the handler's unit of work committed.
    expect(harness.published.all('order.confirmed').map((p) => p.message.data)).toEqual([{ orderId: '4' }]);
    expect(harness.clock.now()).toBe(before);
  });

  it('a select that times out says what it waited for and lists what was seen', async () => {
    const harness = await start();
    await harness.bus.publish('order.placed', { orderId: '5' });
    const begin = harness.clock.now();

    const error = await harness.published.select('order.confirmed', { timeoutMs: 5_000 }).catch((e) => e);

    expect(isSelectTimeoutError(error)).toBe(true);
    expect(error.message).toContain('"order.confirmed" within 5000 ms of virtual time, found 0');
    expect(error.message).toContain("order.placed, data { orderId: '5' }");
    expect(harness.clock.now() - begin).toBeLessThanOrEqual(5_000);
  });

  it('two harnesses do not see each other’s messages', async () => {
    const seen: string[] = [];
    const setup: TestHarnessOptions<C>['setup'] = async ({ bus }) => {
      await bus.subscribe('order.placed', (msg) => {
        seen.push(msg.data.orderId);
      });
    };
    const first = await start({ setup });
    const second = await start({ setup });

    await first.bus.publish('order.placed', { orderId: 'first' });
    await first.consumed.select('order.placed');
    await second.settle();

    expect(second.published.all()).toEqual([]);
    expect(second.consumed.all()).toEqual([]);
    expect(seen).toEqual(['first']);
    expect(first.url).not.toBe(second.url);
  });

  it('moves time past a handler time limit while the handler waits for it', async () => {
    const harness = await start({
      setup: async ({ bus }) => {
        await bus.subscribe('order.placed', () => new Promise<void>(() => undefined), {
          maxAttempts: 1,
          handlerTimeoutMs: 30_000,
        });
      },
    });
    const begin = harness.clock.now();
    await harness.bus.publish('order.placed', { orderId: '6' });

    const dead = await harness.deadLettered.select('order.placed');

    expect(dead.reason.kind).toBe('timeout');
    expect(harness.clock.now() - begin).toBe(30_000);
  });

  // Past handlerTimeoutMs the attempt fails whether or not the handler heeds its signal; it is one
  // failed record with the HandlerTimeoutError, and what the handler does later changes nothing.
  it.each([
    ['heeds its signal', 'heeds'],
    ['ignores its signal', 'ignores'],
    ['ignores its signal, then finishes', 'finishes-late'],
    ['ignores its signal, then throws', 'throws-late'],
  ] as const)('records each timed-out attempt once in failed when the handler %s', async (_, mode) => {
    const harness = await start({
      subscriptionDefaults: { handlerTimeoutMs: 30_000, maxAttempts: 2 },
      setup: async ({ bus, clock }) => {
        await bus.subscribe('order.placed', (_msg, { signal }) => {
          return new Promise<void>((resolve, reject) => {
            if (mode === 'heeds') signal.addEventListener('abort', () => reject(signal.reason));
            if (mode === 'finishes-late') clock.setTimeout(resolve, 40_000);
            if (mode === 'throws-late') clock.setTimeout(() => reject(new Error('late')), 40_000);
          });
        });
      },
    });
    await harness.bus.publish('order.placed', { orderId: '6b' });

    const dead = await harness.deadLettered.select('order.placed', { timeoutMs: 120_000 });
    expect(dead).toMatchObject({ attempts: 2, reason: { kind: 'timeout' } });
    expect(harness.failed.all().map((f) => [f.message.attempt, isHandlerTimeoutError(f.error)])).toEqual([
      [1, true],
      [2, true],
    ]);
    // The late ends of both attempts pass; they were failed already.
    await harness.advance(60_000);
    expect(harness.failed.count()).toBe(2);
    expect(harness.consumed.none('order.placed')).toBe(true);
  });

  it('a select that gives up while a handler still waits for virtual time rejects with its own timeout, naming it', async () => {
    const harness = await start({
      realTimeoutMs: 300,
      subscriptionDefaults: { handlerTimeoutMs: 30_000, maxAttempts: 2 },
      setup: async ({ bus }) => {
        await bus.subscribe(
          'order.placed',
          (_msg, { signal }) =>
            new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
        );
      },
    });
    await harness.bus.publish('order.placed', { orderId: '6c' });
    const begin = harness.clock.now();

    // Attempt 1 times out at 30 s, attempt 2 starts at 31 s and would time out at 61 s.
    const error = await harness.deadLettered.select('order.placed', { timeoutMs: 45_000 }).catch((e) => e);

    expect(isFerryError(error) && error.code).toBe('SELECT_TIMEOUT');
    expect(error.message).toContain('"order.placed" within 45000 ms of virtual time, found 0');
    expect(error.message).toContain('deadLettered holds nothing');
    expect(error.message).toContain('still in flight: order.placed (attempt 2) in group orders');
    expect(harness.clock.now() - begin).toBeLessThanOrEqual(45_000);

    const eventually = await harness
      .eventually(() => harness.deadLettered.count() > 0, { timeoutMs: 1_000, what: 'a dead letter' })
      .catch((e) => e);
    expect(isFerryError(eventually) && eventually.code).toBe('HARNESS_TIMEOUT');
    expect(eventually.message).toContain('still in flight: order.placed (attempt 2) in group orders');

    // Nothing was lost: a longer wait sees attempt 2 time out.
    const dead = await harness.deadLettered.select('order.placed');
    expect(dead).toMatchObject({ attempts: 2, reason: { kind: 'timeout' } });
    expect(harness.clock.now() - begin).toBe(61_000);
  });

  // The known limit the README states: the harness cannot tell real I/O from a wait for virtual time,
  // so past stallMs it moves time, past the handler's own limit too; a longer stallMs avoids it.
  it.each([
    ['the default stallMs (100 ms) times it out and retries it', undefined],
    ['a stallMs longer than the I/O (1 s) lets it run once', 1_000],
  ] as const)('a handler awaiting 600 ms of real I/O: %s', async (_, stallMs) => {
    let runs = 0;
    const harness = await start({
      ...(stallMs === undefined ? {} : { stallMs }),
      subscriptionDefaults: { handlerTimeoutMs: 30_000, maxAttempts: 2 },
      setup: async ({ bus }) => {
        await bus.subscribe('order.placed', async (msg) => {
          runs++;
          await new Promise((resolve) => setTimeout(resolve, 600));
          await bus.publish('order.confirmed', { orderId: msg.data.orderId });
        });
      },
    });
    await harness.bus.publish('order.placed', { orderId: '6d' });
    await harness.published.select('order.confirmed');
    await harness.advance(60_000);
    await harness.settle();

    if (stallMs === undefined) {
      expect(harness.failed.all().map((f) => isHandlerTimeoutError(f.error))).toEqual([true, true]);
      expect(runs).toBe(2);
    } else {
      expect(harness.failed.count()).toBe(0);
      expect(runs).toBe(1);
      expect(harness.published.count('order.confirmed')).toBe(1);
    }
  });

  it('settle does not move time, so it reports a handler waiting for virtual time', async () => {
    const harness = await start({
      realTimeoutMs: 200,
      setup: async ({ bus, clock }) => {
        await bus.subscribe(
          'order.placed',
          () => new Promise<void>((resolve) => clock.setTimeout(resolve, 10_000)),
        );
      },
    });
    await harness.bus.publish('order.placed', { orderId: '7' });

    const error = await harness.settle().catch((e) => e);
    expect(isFerryError(error) && error.code).toBe('HARNESS_STALLED');
    expect(error.message).toContain('order.placed (attempt 1) in group orders');

    await harness.advance(10_000);
    expect(harness.consumed.count('order.placed')).toBe(1);
  });

  it('accepts messages nobody in the harness subscribes to, unless acceptUnrouted is false', async () => {
    const harness = await start();
    await harness.bus.publish('order.confirmed', { orderId: '8' });
    expect(harness.published.count('order.*')).toBe(1);

    const strict = await start({ acceptUnrouted: false });
    await expect(strict.bus.publish('order.confirmed', { orderId: '8' })).rejects.toMatchObject({
      code: 'UNROUTABLE',
    });
    expect(strict.published.all()).toEqual([]);
  });

  it('refuses acceptUnrouted or setup of the wrong type rather than take them as set', async () => {
    // 'no' is truthy: the harness accepted every unrouted message the test meant to see refused.
    await expect(start({ acceptUnrouted: 'no' as never })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: 'acceptUnrouted must be true or false, not "no"',
    });
    await expect(start({ setup: {} as never })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/^setup must be a function/),
    });
    // null was taken for the silent default, and a broken logger was named as createBus's.
    for (const logger of [null, {}]) {
      await expect(start({ logger: logger as never })).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(
          /^createTestHarness logger must have debug, info, warn, error functions/,
        ),
      });
    }
  });

  it("refuses a stallMs or realTimeoutMs past a Node timer's longest (2 ** 31 fired at once: every handler timed out)", async () => {
    for (const name of ['stallMs', 'realTimeoutMs'] as const) {
      await expect(start({ [name]: 2 ** 31 })).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: `${name} must be a positive integer of ms, at most 2147483647, got 2147483648`,
      });
    }
  });

  it('consumed lists handler runs: a re-sent message the inbox drops as a duplicate is not one', async () => {
    let runs = 0;
    const harness = await start({
      setup: async ({ bus, outbox }) => {
        await bus.subscribe(
          'order.placed',
          async (m, { work }) => {
            runs++;
            await work.publish('order.confirmed', { orderId: m.data.orderId });
          },
          { unitOfWork: outbox },
        );
      },
    });
    await harness.bus.publish('order.placed', { orderId: '1' }, { id: 'same-id' });
    await harness.bus.publish('order.placed', { orderId: '1' }, { id: 'same-id' });
    await harness.bus.publish('order.placed', { orderId: '2' }, { id: 'other-id' });
    await harness.settle();

    expect(runs).toBe(2);
    expect(harness.consumed.all('order.placed').map((c) => c.message.id)).toEqual(['same-id', 'other-id']);
    expect(harness.published.count('order.confirmed')).toBe(2);
    expect(harness.failed.count()).toBe(0);
    expect(harness.deadLettered.count()).toBe(0);
  });

  it('selectAll waits for several records; a predicate selects by content', async () => {
    const harness = await start({
      setup: async ({ bus }) => {
        await bus.subscribe('order.placed', () => undefined);
      },
    });
    for (const orderId of ['a', 'b', 'c']) await harness.bus.publish('order.placed', { orderId });

    const all = await harness.consumed.selectAll('order.placed', { count: 3 });
    expect(all.map((c) => c.message.data)).toEqual([{ orderId: 'a' }, { orderId: 'b' }, { orderId: 'c' }]);
    const b = await harness.consumed.select((c) => (c.message.data as { orderId: string }).orderId === 'b');
    expect(b.message.data).toEqual({ orderId: 'b' });
  });

  it('lists saga instances by status, and waits for one with eventually', async () => {
    const harness = await start();
    const save = (id: string, status: 'active' | 'completed', version: number) =>
      harness.outbox.unitOfWork((work) =>
        work.tx.saveSaga(
          {
            saga: 'checkout',
            id,
            state: JSON.stringify({ status: status === 'active' ? 'awaiting-payment' : 'confirmed' }),
            version,
            status,
            updatedAt: harness.clock.now(),
          },
          version - 1,
        ),
      );
    await save('o-1', 'active', 1);
    await save('o-2', 'active', 1);
    harness.clock.setTimeout(() => void save('o-2', 'completed', 2), 5_000);

    await harness.eventually(async () => (await harness.sagaInstances('checkout', 'completed')).length === 1);

    expect((await harness.sagaInstances('checkout', 'active')).map((s) => s.id)).toEqual(['o-1']);
    expect(await harness.sagaInstances('checkout', 'completed')).toMatchObject([
      { id: 'o-2', version: 2, state: { status: 'confirmed' } },
    ]);
  });

  it('uses the clock it is given', async () => {
    const clock = new VirtualClock({ start: Date.UTC(2030, 0, 1) });
    const harness = await start({ clock });
    await harness.bus.publish('order.placed', { orderId: '9' });
    const published = await harness.published.select('order.placed');
    expect(published.message.time).toBe('2030-01-01T00:00:00.000Z');
  });

  it('refuses an option it does not read, naming it; undefined takes the default', async () => {
    // A misspelt stallMs would otherwise leave the default 100 ms, and handlers doing slower real
    // I/O timed out without a word.
    await expect(
      createTestHarness<C>({ service: 'orders', contracts, stallMS: 2_000 } as never),
    ).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/createTestHarness has no option "stallMS": it takes service, /),
    });
    // Left unset (an environment variable read into it) is left out: the default applies.
    const harness = await start({ stallMs: undefined, realTimeoutMs: undefined } as never);
    await harness.bus.publish('order.placed', { orderId: '1' });

    // A misspelt timeout waited the default 60 s of virtual time instead of the one meant.
    await expect(harness.published.select('order.placed', { timeout: 5 } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/published.select has no option "timeout": it takes timeoutMs/),
    });
    await expect(harness.consumed.selectAll('order.placed', { cuont: 2 } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/consumed.selectAll has no option "cuont"/),
    });
    await expect(harness.eventually(() => true, { timeout: 5 } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/eventually has no option "timeout": it takes timeoutMs, what/),
    });
    expect((await harness.published.select('order.placed')).message.data).toEqual({ orderId: '1' });
  });

  it.each([Number.NaN, Number.POSITIVE_INFINITY, -1, '5'])(
    'eventually refuses timeoutMs %s rather than waiting for ever',
    async (timeoutMs) => {
      const harness = await start();
      const waited = harness.eventually(() => false, { timeoutMs: timeoutMs as number });
      await expect(waited).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    },
  );
});

describe('createTestHarness, at its edges (outside review)', () => {
  it('refuses an async predicate, which matched every record, and a filter of another kind', async () => {
    const harness = await start();
    await harness.bus.publish('order.placed', { orderId: '1' });
    const never = async (r: { message: { data: unknown } }) =>
      (r.message.data as { orderId: string }).orderId === 'x';
    await expect(harness.published.select(never as never, { timeoutMs: 1_000 })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/predicate must return a boolean, not a promise/),
    });
    expect(() => harness.published.none(never as never)).toThrow(/not a promise/);
    expect(() => harness.published.count(42 as never)).toThrow(
      /a message type, a topic pattern or a predicate/,
    );
    // A plain predicate still selects by content.
    expect(harness.published.count((r) => (r.message.data as { orderId: string }).orderId === '1')).toBe(1);
  });

  it('refuses sagaInstances of a misspelt status or a saga never started, which answered []', async () => {
    const harness = await start();
    await harness.outbox.unitOfWork((work) =>
      work.tx.saveSaga(
        { saga: 'checkout', id: 'o-1', state: '{}', version: 1, status: 'active', updatedAt: 0 },
        0,
      ),
    );
    expect(await harness.sagaInstances('checkout', 'active')).toHaveLength(1);
    for (const status of ['actve', 'Active', 42]) {
      await expect(harness.sagaInstances('checkout', status as never)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(/'active' or 'completed'/),
      });
    }
    await expect(harness.sagaInstances('checkouts')).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/no saga named "checkouts" was started/),
    });
    await expect(harness.sagaInstances(42 as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });

  it('moves a day of virtual time in a few thousand steps: the relay polls once an hour, not every second', async () => {
    // Each step costs real time: a poll every second made a wait for a 2 h saga timeout take 15 s.
    const clock = new VirtualClock({ start: Date.now() });
    const harness = await start({ clock });
    let steps = 0;
    const advance = clock.advance.bind(clock);
    clock.advance = (ms) => {
      steps++;
      return advance(ms);
    };
    await harness.outbox.unitOfWork((work) =>
      work.schedule('order.reminder', { orderId: '1' }, { delayMs: 86_400_000 }),
    );
    await harness.published.select('order.reminder', { timeoutMs: 86_400_000 });
    // The inbox's prune runs every minute (1,440 a day); a poll every second made it 86,400 more.
    expect(steps).toBeLessThan(4_000);
    // A relay option given keeps the rest of the harness's defaults, and its own poll.
    const polling = await start({ relay: { pollIntervalMs: 1_000, batchSize: 10 } });
    const before = polling.clock.now();
    let polled = 0;
    const advancePolling = polling.clock.advance.bind(polling.clock);
    polling.clock.advance = (ms) => {
      if (ms > 0) polled++;
      return advancePolling(ms);
    };
    await polling.advance(10_000);
    expect(polling.clock.now() - before).toBe(10_000);
    expect(polled).toBeGreaterThanOrEqual(10);
  });

  it('runs advance calls made at once one after the other, each moving time by its own ms', async () => {
    const harness = await start();
    const begin = harness.clock.now();
    await Promise.all([harness.advance(1_000), harness.advance(1_000)]);
    expect(harness.clock.now() - begin).toBe(2_000);
    // A select moving time meanwhile may carry it past an advance's target: no error, no going back.
    harness.clock.setTimeout(() => void harness.bus.publish('order.confirmed', { orderId: '1' }), 5_000);
    await Promise.all([
      harness.published.select('order.confirmed', { timeoutMs: 10_000 }),
      harness.advance(3_000),
    ]);
    expect(harness.clock.now() - begin).toBeGreaterThanOrEqual(7_000);
    await expect(harness.advance(-1)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });

  it('hands out copies of its records: a test changing one changes nothing the list holds', async () => {
    const harness = await start();
    await harness.bus.publish('order.placed', { orderId: '1' });
    const selected = await harness.published.select('order.placed');
    (selected.message.data as { orderId: string }).orderId = 'changed';
    delete (selected.message as { id?: string }).id;
    const [again] = harness.published.all();
    expect(again!.message.data).toEqual({ orderId: '1' });
    expect(typeof again!.message.id).toBe('string');
  });

  it('ends a wait under way at close with HARNESS_CLOSED, not a timeout, and refuses waits after it', async () => {
    const harness = await createTestHarness<C>({ service: 'orders', contracts });
    const pending = harness.published
      .select('order.confirmed', { timeoutMs: 600_000 })
      .catch((e: unknown) => e);
    await harness.close();
    expect(await pending).toMatchObject({
      code: 'HARNESS_CLOSED',
      message: expect.stringMatching(/was closed/),
    });
    await expect(harness.published.select('order.confirmed')).rejects.toMatchObject({
      code: 'HARNESS_CLOSED',
    });
    await expect(harness.eventually(() => false)).rejects.toMatchObject({ code: 'HARNESS_CLOSED' });
    await expect(harness.advance(1)).rejects.toMatchObject({ code: 'HARNESS_CLOSED' });
    // An advance under way stops at close() too, rather than move time beside it.
    const other = await createTestHarness<C>({ service: 'orders', contracts });
    const advancing = other.advance(86_400_000).catch((e: unknown) => e);
    await other.close();
    expect(await advancing).toMatchObject({ code: 'HARNESS_CLOSED' });
    expect(other.clock.now() - Date.now()).toBeLessThan(3_600_000);
    // Reading what was recorded still works.
    expect(harness.published.all()).toEqual([]);
  });
});

describe('createTestHarness, second outside review', () => {
  it('stops time where a select waiting beside an advance found its record', async () => {
    // The advance stepped on past it: the select resolved at +5000 for a record that came at +3000.
    const clock = new VirtualClock({ start: Date.now() });
    let handledAt = 0;
    const harness = await start({
      clock,
      setup: async ({ bus }) => {
        await bus.subscribe('order.reminder', () => {
          handledAt = clock.now();
        });
      },
    });
    const begin = clock.now();
    await harness.outbox.unitOfWork((work) =>
      work.schedule('order.reminder', { orderId: '1' }, { delayMs: 3_000 }),
    );
    let selectedAt = 0;
    let advancedTo = 0;
    await Promise.all([
      harness.advance(5_000).then(() => {
        advancedTo = clock.now() - begin;
      }),
      harness.consumed.select('order.reminder').then(() => {
        selectedAt = clock.now() - begin;
      }),
    ]);
    expect(handledAt - begin).toBe(3_000);
    expect(selectedAt).toBe(3_000);
    expect(advancedTo).toBe(5_000);
  });

  it('keeps its records frozen: a predicate changing one throws and changes nothing; copies keep class instances', async () => {
    const harness = await start();
    await harness.bus.publish('order.placed', { orderId: 'b' });
    expect(() =>
      harness.published.count((r) => {
        (r.message.data as { orderId: string }).orderId = 'changed';
        return true;
      }),
    ).toThrow(TypeError);
    expect(harness.published.count((r) => (r.message.data as { orderId: string }).orderId === 'b')).toBe(1);
    // A handed-out copy may be changed, and its class instances are the ones recorded, not plain objects.
    const [copy] = harness.published.all();
    (copy!.message.data as { orderId: string }).orderId = 'changed';
    expect(harness.published.all()[0]!.message.data).toEqual({ orderId: 'b' });
  });
});
