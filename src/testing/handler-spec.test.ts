import { AssertionError } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createEventStore } from '../connect/create-event-store.js';
import type { EventStore } from '../eventstore/store.js';
import { handlerSpec, type SpecHandler } from './handler-spec.js';
import { createTestHarness } from './harness.js';

const contracts = {
  'payment.captured': z.object({ orderId: z.string() }),
  'order.confirmed': z.object({ orderId: z.string(), total: z.number() }),
};
type C = typeof contracts;

/** Confirms a placed order: reads its stream, appends OrderConfirmed and publishes order.confirmed, in one unit of work. */
const onPaymentCaptured =
  (store: EventStore): SpecHandler<C> =>
  async (message, { work }) => {
    if (message.type !== 'payment.captured') return;
    const stream = `order-${message.data.orderId}`;
    const events = await store.readStream(stream);
    const placed = events.find((e) => e.type === 'OrderPlaced');
    if (placed === undefined) throw new Error(`order ${message.data.orderId} was never placed`);
    await work.append(stream, [{ type: 'OrderConfirmed', data: {} }], { expectedVersion: events.length - 1 });
    const { total } = placed.data as { total: number };
    await work.publish('order.confirmed', { orderId: message.data.orderId, total });
  };

const spec = () => handlerSpec<C>(({ store }) => onPaymentCaptured(store), { contracts });

describe('handlerSpec', () => {
  it('given events, when a message, then the messages published and the events appended', async () => {
    await spec()
      .given({ 'order-42': [{ type: 'OrderPlaced', data: { total: 5 } }] })
      .when({ type: 'payment.captured', data: { orderId: '42' } })
      .then({
        published: [{ type: 'order.confirmed', data: { orderId: '42', total: 5 } }],
        appended: { 'order-42': [{ type: 'OrderConfirmed', data: {} }] },
      });
  });

  it('runs the handler once, on the spec message: not again on a message of its type it publishes', async () => {
    // A follow-up of the handled type ran the handler a second time, and a spec crediting the run
    // with that second run's append passed.
    const installments = { 'installment.due': z.object({ orderId: z.string(), n: z.number() }) };
    const runs: unknown[] = [];
    const next = () =>
      handlerSpec<typeof installments>(
        () =>
          async (message, { work }) => {
            if (message.type !== 'installment.due') return;
            runs.push(message.data);
            await work.append(`order-${message.data.orderId}`, [{ type: 'InstallmentCharged', data: {} }]);
            await work.publish('installment.due', { orderId: '43', n: message.data.n + 1 });
          },
        { contracts: installments },
      ).when({ type: 'installment.due', data: { orderId: '42', n: 1 } });
    await next().then({
      published: [{ type: 'installment.due', data: { orderId: '43', n: 2 } }],
      appended: { 'order-42': [{ type: 'InstallmentCharged', data: {} }] },
    });
    expect(runs).toEqual([{ orderId: '42', n: 1 }]);
    const error = await next()
      .then({
        published: [{ type: 'installment.due', data: { orderId: '43', n: 2 } }],
        appended: {
          'order-42': [{ type: 'InstallmentCharged', data: {} }],
          'order-43': [{ type: 'InstallmentCharged', data: {} }],
        },
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AssertionError);
    expect((error as Error).message).toContain('the handler appended other events');
  });

  it('says the when message was dead-lettered before the handler ran, not that no run came', async () => {
    const error = await spec()
      .given({ 'order-42': [{ type: 'OrderPlaced', data: { total: 5 } }] })
      .when({ type: 'payment.captured', data: { orderId: '42' }, options: { expiresAt: new Date(0) } })
      .then({ published: [] })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/dead-lettered before the handler ran \(expired: /),
    });
  });

  it('fails with a diff when the handler published something else', async () => {
    const error = await spec()
      .given({ 'order-42': [{ type: 'OrderPlaced', data: { total: 5 } }] })
      .when({ type: 'payment.captured', data: { orderId: '42' } })
      .then({ published: [{ type: 'order.confirmed', data: { orderId: '42', total: 6 } }] })
      .catch((e) => e);
    expect(error).toBeInstanceOf(AssertionError);
    expect(error.message).toContain('the handler published other messages');
  });

  it('thenThrows: the handler threw, and nothing of its unit of work was kept', async () => {
    await spec()
      .when({ type: 'payment.captured', data: { orderId: '7' } })
      .thenThrows(/order 7 was never placed/);
    const error = await spec()
      .when({ type: 'payment.captured', data: { orderId: '7' } })
      .then({ published: [] })
      .catch((e) => e);
    expect(error).toBeInstanceOf(AssertionError);
    expect(error.message).toContain(
      'expected the handler to succeed, but it threw Error: order 7 was never placed',
    );
  });

  it('given a setup function; messages it set off are not part of the outcome', async () => {
    await spec()
      .given(async ({ store, outbox }) => {
        await outbox.unitOfWork(async (work) => {
          await work.append('order-1', [{ type: 'OrderPlaced', data: { total: 3 } }]);
          await work.publish('order.confirmed', { orderId: 'unrelated', total: 0 });
        });
        expect(await store.readStream('order-1')).toHaveLength(1);
      })
      .when({ type: 'payment.captured', data: { orderId: '1' } })
      .then({
        published: [{ type: 'order.confirmed', data: { orderId: '1', total: 3 } }],
        appended: { 'order-1': [{ type: 'OrderConfirmed', data: {} }] },
      });
  });

  it('refuses a misspelt or ill-typed expectation with INVALID_OPTIONS instead of passing without a check', async () => {
    const when = () =>
      spec()
        .given({ 'order-42': [{ type: 'OrderPlaced', data: { total: 5 } }] })
        .when({ type: 'payment.captured', data: { orderId: '42' } });
    // The handler published order.confirmed: a spec expecting nothing passed, the typo unread.
    await expect(when().then({ publshed: [] } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: 'handlerSpec then has no option "publshed": it takes published, appended',
    });
    await expect(when().then({ published: {} } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/^handlerSpec then: published must be an array/),
    });
    await expect(when().then({ appended: [] } as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/^handlerSpec then: appended must be events by stream id/),
    });
  });

  it('refuses misspelt or ill-typed options, given and when, naming them', () => {
    const build = ({ store }: { store: EventStore }) => onPaymentCaptured(store);
    const refused = (run: () => unknown, message: RegExp) =>
      expect(run).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS', message: expect.stringMatching(message) }),
      );
    refused(
      () => handlerSpec<C>(build, { contracts, servce: 'x' } as never),
      /^handlerSpec has no option "servce": it takes service, contracts, store, stallMs$/,
    );
    refused(
      () => handlerSpec<C>(build, { contracts, store: {} } as never),
      /^handlerSpec store must be a function/,
    );
    refused(() => handlerSpec<C>(undefined as never), /^handlerSpec needs a build\(parts\) function/);
    // A misspelt `options` (the message's id) was dropped, and a new id used.
    refused(
      () => spec().when({ type: 'payment.captured', data: { orderId: '1' }, option: { id: 'm-1' } } as never),
      /^handlerSpec when has no option "option": it takes type, data, options$/,
    );
    refused(() => spec().when(undefined as never), /^handlerSpec when needs a message/);
    // null was taken as no events at all; an event that is not in an array as stream characters.
    refused(
      () => spec().given(null as never),
      /^handlerSpec given takes events by stream id or a setup function/,
    );
    refused(
      () => spec().given({ 'order-1': { type: 'OrderPlaced', data: {} } } as never),
      /^handlerSpec given: the events of stream "order-1" must be an array/,
    );
  });

  it('takes a stallMs above the real I/O of the handler under test (without it, 300 ms of real I/O timed out)', async () => {
    // A handler awaiting real I/O (here a real timer, as an HTTP call or a database would).
    const slow = () =>
      handlerSpec<C>(
        () =>
          async (message, { work }) => {
            if (message.type !== 'payment.captured') return;
            await new Promise((resolve) => setTimeout(resolve, 300));
            await work.publish('order.confirmed', { orderId: message.data.orderId, total: 1 });
          },
        { contracts, stallMs: 1_000 },
      );
    await slow()
      .when({ type: 'payment.captured', data: { orderId: '7' } })
      .then({ published: [{ type: 'order.confirmed', data: { orderId: '7', total: 1 } }] });
    const withDefault = await handlerSpec<C>(
      () => async () => {
        await new Promise((resolve) => setTimeout(resolve, 300));
      },
      { contracts },
    )
      .when({ type: 'payment.captured', data: { orderId: '7' } })
      .then({ published: [] })
      .catch((e: unknown) => e);
    expect(String(withDefault)).toMatch(/HandlerTimeoutError/);
    // 2 ** 31 fired a Node timer at once: every handler timed out.
    for (const stallMs of [0, -1, 1.5, Number.NaN, '1000', 2 ** 31]) {
      expect(() => handlerSpec<C>(() => async () => {}, { contracts, stallMs: stallMs as number })).toThrow(
        /handlerSpec stallMs must be a positive integer of ms/,
      );
    }
  });

  it('refuses to be awaited without then', async () => {
    // As a test that forgot `.then(…)` would, past the type check that catches it at compile time.
    const when: unknown = spec().when({ type: 'payment.captured', data: { orderId: '1' } });
    await expect(async () => {
      await when;
    }).rejects.toThrow(/not a promise/);
  });
});

describe('handlerSpec on a store of your choosing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-handler-spec-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const stores: EventStore[] = [];
  const sqlite = async () => {
    const store = await createEventStore({ url: `sqlite:${join(dir, `${randomUUID()}.db`)}` });
    stores.push(store);
    return store;
  };

  /** The README's transactional inbox: its own SQL, then a message, in one unit of work. */
  const reserve: SpecHandler<C> = async (message, { work }) => {
    if (message.type !== 'payment.captured') return;
    await work.query('UPDATE stock SET reserved = reserved + 1 WHERE order_id = ?', [message.data.orderId]);
    const [row] = await work.query('SELECT reserved FROM stock WHERE order_id = ?', [message.data.orderId]);
    await work.publish('order.confirmed', { orderId: message.data.orderId, total: row?.reserved as number });
  };

  it('runs a handler that uses work.query on SQLite (the memory store has no SQL), and closes the store after', async () => {
    await handlerSpec<C>(() => reserve, { contracts, store: sqlite })
      .given(async ({ outbox }) => {
        await outbox.unitOfWork(async (work) => {
          await work.query('CREATE TABLE stock (order_id TEXT PRIMARY KEY, reserved INTEGER NOT NULL)');
          await work.query("INSERT INTO stock VALUES ('42', 0)");
        });
      })
      .when({ type: 'payment.captured', data: { orderId: '42' } })
      .then({ published: [{ type: 'order.confirmed', data: { orderId: '42', total: 1 } }], appended: {} });
    expect(stores).toHaveLength(1);
    expect(stores[0]!.closed).toBe(true);
    // createTestHarness takes an open store, and says so when given a function.
    await expect(
      createTestHarness({ service: 's', store: sqlite as unknown as EventStore }),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    // On the default memory store the same handler cannot run: it says why.
    await handlerSpec<C>(() => reserve, { contracts })
      .when({ type: 'payment.captured', data: { orderId: '42' } })
      .thenThrows('UNIT_OF_WORK_UNSUPPORTED');
  });
});

describe('handlerSpec, second outside review', () => {
  const invoices = {
    'invoice.due': z.object({ invoiceId: z.string() }),
    'invoice.sent': z.object({ invoiceId: z.string() }),
    'invoice.reminder': z.object({ invoiceId: z.string() }),
    'invoice.filed': z.object({ invoiceId: z.string() }),
  };
  type I = typeof invoices;

  it('lists what the handler published, not a timer given set that fell due meanwhile nor another subscription’s reply', async () => {
    const spec = () =>
      handlerSpec<I>(
        ({ clock }) =>
          async (message, { work }) => {
            if (message.type !== 'invoice.due') return;
            // Waits on the clock, long enough for the timer `given` set to fall due meanwhile.
            await new Promise<void>((resolve) => clock.setTimeout(() => resolve(), 5_000));
            await work.publish('invoice.sent', { invoiceId: message.data.invoiceId });
          },
        { contracts: invoices },
      )
        .given(async ({ bus, outbox }) => {
          await outbox.unitOfWork((work) =>
            work.schedule('invoice.reminder', { invoiceId: 'i-0' }, { delayMs: 1_000 }),
          );
          // Another service of the harness answering what the handler sends.
          await bus.subscribe(
            'invoice.sent',
            async (m) => {
              await bus.publish('invoice.filed', { invoiceId: m.data.invoiceId });
            },
            { group: 'filing' },
          );
        })
        .when({ type: 'invoice.due', data: { invoiceId: 'i-1' } });
    await spec().then({ published: [{ type: 'invoice.sent', data: { invoiceId: 'i-1' } }] });
    expect(
      await spec()
        .then({ published: [] })
        .catch((e: unknown) => e),
    ).toBeInstanceOf(AssertionError);
  });

  it('lists a message the handler published under the when message’s own id (as consumers’ inboxes want)', async () => {
    const spec = () =>
      handlerSpec<I>(
        () =>
          async (message, { work }) => {
            if (message.type !== 'invoice.due') return;
            await work.publish('invoice.sent', { invoiceId: message.data.invoiceId }, { id: message.id });
          },
        { contracts: invoices },
      ).when({ type: 'invoice.due', data: { invoiceId: 'i-1' } });
    await spec().then({ published: [{ type: 'invoice.sent', data: { invoiceId: 'i-1' } }] });
    expect(
      await spec()
        .then({ published: [] })
        .catch((e: unknown) => e),
    ).toBeInstanceOf(AssertionError);
  });
});
