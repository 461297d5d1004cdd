import type { z } from 'zod';
import { createBus } from '../connect/create-bus.js';
import { currentContext } from '../context/context.js';
import { CommandHandler, type EventAppender } from '../eventstore/command-handler.js';
import type { Decider } from '../eventstore/decider.js';
import { isConcurrencyError } from '../eventstore/errors.js';
import type { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { type Logger, silentLogger } from '../logging/logger.js';
import { Bus } from '../messaging/bus.js';
import type { Envelope, Message } from '../messaging/envelope.js';
import { UnroutableError } from '../messaging/errors.js';
import type { Transport } from '../messaging/transport.js';
import { isDuplicateMessageIdError } from '../outbox/errors.js';
import { createOutbox } from '../outbox/outbox.js';
import type { UnitOfWork } from '../outbox/unit-of-work.js';
import { VirtualClock } from '../time/clock.js';
import { vitest, zod } from './vitest-api.js';
import { waitFor } from './wait.js';

/** What the outbox contract suite needs: a fresh, empty, open store per call. */
export interface OutboxHarness {
  createStore(): Promise<EventStore>;
}

/**
 * The outbox contract: units of work, the relay, scheduled and failed messages, command handlers in a
 * unit of work and the transactional inbox, on a store of the backend under test with the memory
 * bus. Every backend (memory, SQLite, PostgreSQL) must pass it.
 */
export function testOutbox(name: string, harness: OutboxHarness): void {
  const { afterEach, describe, expect, it } = vitest('testOutbox');
  const schema = zod('testOutbox').z;
  describe(`outbox contract: ${name}`, () => {
    const closers: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const close of closers.splice(0).reverse()) await close();
    });

    async function setup(
      options: {
        clock?: VirtualClock;
        transport?: (t: Transport) => Transport;
        maxAttempts?: number;
        inboxRetentionMs?: number;
        publishTimeoutMs?: number;
        pollIntervalMs?: number;
        leaseMs?: number;
        holdUntilSettled?: boolean;
        settleOnCloseMs?: number;
        logger?: Logger;
        /** `false`: the outbox writes without relaying. */
        relay?: false;
      } = {},
    ) {
      const base = await createBus({
        url: `memory://outbox-${uuidv7()}`,
        service: 'orders',
        logger: silentLogger,
        contracts: { 'order.placed': schema.object({ orderId: schema.string() }) },
      });
      closers.push(() => base.close());
      const bus: Bus<{ 'order.placed': z.ZodObject<{ orderId: z.ZodString }> }> =
        options.transport === undefined
          ? base
          : new Bus(options.transport(base.transport), {
              service: 'orders',
              logger: silentLogger,
              contracts: { 'order.placed': schema.object({ orderId: schema.string() }) },
            });
      const store = await harness.createStore();
      closers.push(() => store.close());
      const outbox = await createOutbox({
        store,
        bus,
        logger: options.logger ?? silentLogger,
        ...(options.clock === undefined ? {} : { clock: options.clock }),
        ...(options.inboxRetentionMs === undefined ? {} : { inboxRetentionMs: options.inboxRetentionMs }),
        relay: options.relay ?? {
          retryDelayMs: 10,
          maxAttempts: options.maxAttempts ?? 3,
          ...(options.publishTimeoutMs === undefined ? {} : { publishTimeoutMs: options.publishTimeoutMs }),
          ...(options.pollIntervalMs === undefined ? {} : { pollIntervalMs: options.pollIntervalMs }),
          ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }),
          ...(options.holdUntilSettled === undefined ? {} : { holdUntilSettled: options.holdUntilSettled }),
          ...(options.settleOnCloseMs === undefined ? {} : { settleOnCloseMs: options.settleOnCloseMs }),
        },
      });
      closers.push(() => outbox.close());
      const received: Message[] = [];
      await base.subscribe(
        '#',
        (m) => {
          received.push(m);
        },
        { group: 'audit' },
      );
      return { bus: base, store, outbox, received };
    }

    /** The calls of a unit of work the forgotten-await test leaves unawaited. */
    type ForgottenCalls = Pick<
      UnitOfWork<{ 'order.placed': z.ZodObject<{ orderId: z.ZodString }> }>,
      'lock' | 'schedule' | 'cancel' | 'readStream' | 'publish'
    >;

    describe('outbox', () => {
      it('publishes what a unit of work committed, with its envelope fixed in the unit of work', async () => {
        const { store, outbox, received } = await setup();
        const id = await outbox.unitOfWork(async (work) => {
          await work.append('order-1', [{ type: 'OrderPlaced', data: { total: 5 } }], {
            expectedVersion: 'no_stream',
          });
          return work.publish('order.placed', { orderId: '1' }, { correlationId: 'corr-1', key: 'order-1' });
        });
        await waitFor(() => received.length === 1, 'the expected deliveries');
        expect(received[0]).toMatchObject({
          id,
          type: 'order.placed',
          source: 'orders',
          correlationid: 'corr-1',
          data: { orderId: '1' },
        });
        expect(await store.readStream('order-1')).toHaveLength(1);
        // Deleted once confirmed, or (memory bus) once its subscriptions settled it.
        // (Received does not mean settled: the relay may still hold the row, or not yet have held it.)
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return pending === 0 && awaitingSettlement === 0;
        }, 'the row deleted');
        expect(await outbox.backlog()).toEqual({
          pending: 0,
          awaitingSettlement: 0,
          failed: 0,
          scheduled: 0,
          oldestAgeMs: 0,
        });
      });

      it('publishes nothing and keeps nothing of a unit of work that throws', async () => {
        const { store, outbox, received } = await setup();
        await expect(
          outbox.unitOfWork(async (work) => {
            await work.append('order-2', [{ type: 'OrderPlaced', data: {} }]);
            await work.publish('order.placed', { orderId: '2' });
            throw new Error('payment service said no');
          }),
        ).rejects.toThrow('payment service said no');
        await outbox.flush();
        expect(received).toEqual([]);
        expect(await store.readStream('order-2')).toEqual([]);
      });

      it('rolls back a unit of work one of whose writes failed, even if the work caught the error', async () => {
        const { store, outbox, received } = await setup();
        await store.append('order-9', [{ type: 'OrderPlaced', data: {} }]);
        const error = await outbox
          .unitOfWork(async (work) => {
            await work.publish('order.placed', { orderId: '9' });
            await work
              .append('order-9', [{ type: 'Again', data: {} }], { expectedVersion: 'no_stream' })
              .catch(() => {});
            // Every later write rejects at once, naming the first failure, on every backend.
            const later = await work.publish('order.placed', { orderId: '9b' }).catch((e: unknown) => e);
            expect(later).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK' });
            expect(isConcurrencyError((later as Error).cause)).toBe(true);
          })
          .catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK' });
        expect(isConcurrencyError((error as Error).cause)).toBe(true);
        await outbox.flush();
        expect(received).toEqual([]);
        expect(await store.readStream('order-9')).toHaveLength(1);
      });

      it('commits the calls a unit of work did not await with it (a forgotten await), and rolls back on one that failed', async () => {
        // Must not happen: the state committed and the message of a forgotten `await` refused after
        // the commit (lost for good, an unhandled rejection its only trace), or backends that differ.
        const { store, outbox, received } = await setup();
        const result = await outbox.unitOfWork(async (work) => {
          void work.append('order-u1', [{ type: 'OrderPlaced', data: {} }], { expectedVersion: 'no_stream' });
          // A call made by a call the callback did not await either.
          void work.readStream('order-u1').then(() => work.publish('order.placed', { orderId: 'u1' }));
          return 'done';
        });
        expect(result).toBe('done');
        await waitFor(() => received.length === 1, 'the message of the forgotten await');
        expect(received[0]).toMatchObject({ type: 'order.placed', data: { orderId: 'u1' } });
        expect(await store.readStream('order-u1')).toHaveLength(1);

        // One of them fails where the callback cannot see it: nothing of the unit is kept, and the
        // unit of work says why (its cause the call's error), not an unhandled rejection.
        const error = await outbox
          .unitOfWork(async (work) => {
            await work.append('order-u2', [{ type: 'OrderPlaced', data: {} }], {
              expectedVersion: 'no_stream',
            });
            void work.publish('order.placed', { orderId: 42 } as never);
          })
          .catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK', cause: { code: 'MESSAGE_INVALID' } });
        expect(String((error as Error).message)).toMatch(
          /one of its calls failed \(caught, chained or not awaited\)/,
        );
        expect(await store.readStream('order-u2')).toEqual([]);
        await outbox.flush();
        expect(received).toHaveLength(1);

        // A call not awaited whose arguments are refused at once, before the callback returns: seen by
        // nobody, it rolls the unit back too (it went by as an unhandled rejection after the commit).
        for (const [name, refused] of [
          ['lock', (work: ForgottenCalls) => work.lock('')],
          [
            'schedule',
            (work: ForgottenCalls) => work.schedule('order.placed', { orderId: 'x' }, { delayMs: -5 }),
          ],
          ['cancel', (work: ForgottenCalls) => work.cancel(123 as never)],
          ['readStream', (work: ForgottenCalls) => work.readStream('', {})],
        ] as const) {
          const early = await outbox
            .unitOfWork(async (work) => {
              await work.append(`order-early-${name}`, [{ type: 'OrderPlaced', data: {} }]);
              void refused(work);
            })
            .catch((e: unknown) => e);
          expect(early, name).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK' });
          expect(await store.readStream(`order-early-${name}`), name).toEqual([]);
        }
        // The same failure seen by the callback and caught, or passed into a promise of the callback's
        // own (a `.then` chain, `Promise.all`) while it awaits something else: rolled back all the same,
        // as a write that failed dooms the unit (a chain committed the append without its message).
        const pause = () => new Promise((resolve) => setTimeout(resolve, 20));
        for (const [name, failing] of [
          ['caught', (work: ForgottenCalls) => work.lock('').catch(() => {})],
          [
            'then',
            (work: ForgottenCalls) =>
              void work
                .publish('order.placed', { orderId: 5 } as never)
                .then(() => work.publish('order.placed', { orderId: 'then' }))
                .catch(() => {}),
          ],
          [
            'all',
            (work: ForgottenCalls) =>
              void Promise.all([
                work.publish('order.placed', { orderId: 'all' }),
                work.publish('order.placed', { orderId: 6 } as never),
              ]).catch(() => {}),
          ],
        ] as const) {
          const seen = await outbox
            .unitOfWork(async (work) => {
              await work.append(`order-seen-${name}`, [{ type: 'OrderPlaced', data: {} }]);
              await failing(work);
              await pause();
            })
            .catch((e: unknown) => e);
          expect(seen, name).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK' });
          expect(await store.readStream(`order-seen-${name}`), name).toEqual([]);
        }
        await outbox.flush();
        expect(received).toHaveLength(1);

        // A chain of calls none of which was awaited, its last one failing: all of it rolled back.
        const chained = await outbox
          .unitOfWork(async (work) => {
            void work
              .append('order-u4', [{ type: 'OrderPlaced', data: {} }], { expectedVersion: 'no_stream' })
              .then(() => work.publish('order.placed', { orderId: 'u4' }))
              .then(() => work.publish('order.placed', { orderId: 4 } as never))
              // The chain is the callback's own promise: the unit of work cannot mark it handled.
              .catch(() => {});
          })
          .catch((e: unknown) => e);
        expect(chained).toMatchObject({
          code: 'UNIT_OF_WORK_ROLLED_BACK',
          cause: { code: 'MESSAGE_INVALID' },
        });
        expect(await store.readStream('order-u4')).toEqual([]);
        // The same chain, its last call valid: every call of it belongs to the commit, on every store.
        await outbox.unitOfWork(async (work) => {
          void work
            .append('order-u5', [{ type: 'OrderPlaced', data: {} }], { expectedVersion: 'no_stream' })
            .then(() => work.publish('order.placed', { orderId: 'u5' }))
            .then(() => work.append('order-u5', [{ type: 'OrderPaid', data: {} }], { expectedVersion: 0 }));
        });
        expect((await store.readStream('order-u5')).map((e) => e.type)).toEqual(['OrderPlaced', 'OrderPaid']);
        await waitFor(() => received.length === 2, 'the chained message');
        expect(received[1]).toMatchObject({ data: { orderId: 'u5' } });

        // A callback that throws with a call still under way: the unit rejects with its error, and the
        // call, refused once the unit ended, is no unhandled rejection (it ended the process).
        await expect(
          outbox.unitOfWork(async (work) => {
            void work.publish('order.placed', { orderId: 'u3' });
            void work.lock(''); // refused at once, never looked at
            throw new Error('changed my mind');
          }),
        ).rejects.toThrow('changed my mind');
        await outbox.flush();
        expect(received).toHaveLength(2);

        // A refused call not looked at while the callback awaits something else (a timer, a read):
        // the unit rejects with it, and it is no unhandled rejection meanwhile (that ended the process).
        const unhandled: unknown[] = [];
        const onUnhandled = (reason: unknown) => void unhandled.push(reason);
        process.on('unhandledRejection', onUnhandled);
        try {
          for (const meanwhile of [
            () => new Promise((resolve) => setTimeout(resolve, 20)),
            (work: { readStream(id: string): Promise<unknown> }) => work.readStream('order-u5'),
          ]) {
            await expect(
              outbox.unitOfWork(async (work) => {
                void work.lock('');
                await meanwhile(work);
                await new Promise((resolve) => setTimeout(resolve, 20));
              }),
            ).rejects.toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK', cause: { code: 'INVALID_OPTIONS' } });
          }
          await new Promise((resolve) => setTimeout(resolve, 20));
        } finally {
          process.off('unhandledRejection', onUnhandled);
        }
        expect(unhandled).toEqual([]);

        // A call after the unit ended is refused, with a rejection (query threw at the call).
        let lateCalls: (() => Promise<unknown>)[] = [];
        await outbox.unitOfWork(async (work) => {
          lateCalls = [() => work.publish('order.placed', { orderId: 'late' }), () => work.query('SELECT 1')];
        });
        for (const late of lateCalls) {
          let call: Promise<unknown> | undefined;
          expect(() => {
            call = late();
          }).not.toThrow();
          await expect(call).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        }
        // Not looked at, it is its caller's unhandled rejection, never swallowed: the message it was
        // to send is lost, and the process must hear of it (it went by without a trace).
        const heard: unknown[] = [];
        const others = process.listeners('unhandledRejection');
        process.removeAllListeners('unhandledRejection');
        process.on('unhandledRejection', (reason) => void heard.push(reason));
        try {
          void lateCalls[0]?.();
          await new Promise((resolve) => setTimeout(resolve, 20));
        } finally {
          process.removeAllListeners('unhandledRejection');
          for (const listener of others) process.on('unhandledRejection', listener);
        }
        expect(heard).toMatchObject([{ code: 'INVALID_OPTIONS' }]);
      });

      it('dooms a unit of work at its first failed call, caught or not: later calls reject at once, that failure is the cause, and it is not run again', async () => {
        const { store, outbox } = await setup();
        await store.append('order-doom', [{ type: 'OrderPlaced', data: {} }]);
        let runs = 0;
        const later: unknown[] = [];
        const doomed = await outbox
          .unitOfWork(async (work) => {
            runs++;
            await work.publish('order.placed', { orderId: 42 } as never).catch(() => {});
            // A write after it would have lost a race (version 5 of a stream at 0): that would make
            // the unit look worth running again. It is refused at once instead, reaching no store.
            await work
              .append('order-doom', [{ type: 'Late', data: {} }], { expectedVersion: 5 })
              .catch((e: unknown) => later.push(e));
            await work.readStream('order-doom').catch((e: unknown) => later.push(e));
          })
          .catch((e: unknown) => e);
        expect(doomed).toMatchObject({
          code: 'UNIT_OF_WORK_ROLLED_BACK',
          cause: { code: 'MESSAGE_INVALID' },
        });
        expect(later).toMatchObject([
          { code: 'UNIT_OF_WORK_ROLLED_BACK', cause: { code: 'MESSAGE_INVALID' } },
          { code: 'UNIT_OF_WORK_ROLLED_BACK', cause: { code: 'MESSAGE_INVALID' } },
        ]);
        expect(runs).toBe(1);
        expect(await store.readStream('order-doom')).toHaveLength(1);
      });

      it('refuses a message its contract refuses, in the unit of work', async () => {
        const { outbox } = await setup();
        await expect(
          outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 42 } as never)),
        ).rejects.toMatchObject({ code: 'MESSAGE_INVALID' });
      });

      it('runs a unit of work again after it lost a race, up to maxRetries', async () => {
        const { store, outbox } = await setup();
        await store.append('order-3', [{ type: 'OrderPlaced', data: {} }]);
        // Read before another writer appended: the first run decides on a stale version.
        const stale = (await store.readStream('order-3')).length - 1;
        await store.append('order-3', [{ type: 'Interloper', data: {} }]);
        let runs = 0;
        await outbox.unitOfWork(async (work) => {
          runs++;
          const version = runs === 1 ? stale : (await store.readStream('order-3')).length - 1;
          await work.append('order-3', [{ type: 'Confirmed', data: {} }], { expectedVersion: version });
        });
        expect(runs).toBe(2);
        expect((await store.readStream('order-3')).map((e) => e.type)).toEqual([
          'OrderPlaced',
          'Interloper',
          'Confirmed',
        ]);
        const error = await outbox
          .unitOfWork((work) => work.append('order-3', [{ type: 'Late', data: {} }], { expectedVersion: 0 }))
          .catch((e: unknown) => e);
        expect(isConcurrencyError(error)).toBe(true);
      });

      it('appends and publishes atomically with outbox.append, sharing commits between callers', async () => {
        const { store, outbox, received } = await setup();
        const results = await Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            outbox.append(`order-a${i}`, [{ type: 'OrderPlaced', data: { i } }], {
              expectedVersion: 'no_stream',
              messages: [{ type: 'order.placed', data: { orderId: `a${i}` }, options: { key: `a${i}` } }],
            }),
          ),
        );
        expect(results.every((r) => r.nextExpectedVersion === 0 && r.messageIds.length === 1)).toBe(true);
        await waitFor(() => received.length === 30, 'the 30 messages');
        expect(new Set(received.map((m) => m.id))).toEqual(new Set(results.map((r) => r.messageIds[0])));
        expect(await store.readStream('order-a7')).toHaveLength(1);
      });

      it('publishes nothing for an append refused, or retried with the same event ids', async () => {
        const { store, outbox, received } = await setup();
        const id = uuidv7();
        const message = { type: 'order.placed' as const, data: { orderId: 'b' } };
        const first = await outbox.append('order-b', [{ id, type: 'OrderPlaced', data: {} }], {
          messages: [message],
        });
        const conflict = await outbox
          .append('order-b', [{ type: 'OrderPlaced', data: {} }], {
            expectedVersion: 'no_stream',
            messages: [message],
          })
          .catch((e: unknown) => e);
        expect(isConcurrencyError(conflict)).toBe(true);
        const retry = await outbox.append('order-b', [{ id, type: 'OrderPlaced', data: {} }], {
          messages: [message],
        });
        expect(retry.nextExpectedVersion).toBe(0);
        // The retry names the message its first call wrote, not a new one that is never sent.
        expect(retry.messageIds).toEqual(first.messageIds);
        await outbox.flush();
        await waitFor(() => received.length >= 1, 'the first message');
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(received).toHaveLength(1);
        expect(received[0]!.id).toBe(first.messageIds[0]);
        expect(await store.readStream('order-b')).toHaveLength(1);
        await expect(
          outbox.append('order-c', [{ type: 'OrderPlaced', data: {} }], {
            messages: [{ type: 'order.placed', data: { orderId: 1 } as never }],
          }),
        ).rejects.toMatchObject({ code: 'MESSAGE_INVALID' });
        expect(await store.readStream('order-c')).toEqual([]);
      });

      it('does not publish a message again while its first publish is still in flight', async () => {
        // A broker that takes its time: the relay's attempt times out, the transport still holds the
        // publish. Retrying must wait for it, not hand the transport one more copy per attempt.
        let release!: () => void;
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        const calls: string[] = [];
        const { outbox, received } = await setup({
          publishTimeoutMs: 30,
          transport: (t) =>
            aroundPublish(t, (envelope, send) => {
              calls.push(envelope.id);
              return calls.length === 1 ? gate.then(send) : send();
            }),
        });
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'slow' }));
        await waitFor(
          async () => (await outbox.backlog()).pending === 1 && calls.length === 1,
          'the first attempt',
        );
        await new Promise((resolve) => setTimeout(resolve, 700));
        release();
        await waitFor(() => received.length === 1, 'the message');
        // Settled (memory bus) while its row waited for the next attempt: deleted all the same.
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return pending === 0 && awaitingSettlement === 0;
        }, 'the outbox to empty');
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(calls).toHaveLength(1);
        expect(received).toHaveLength(1);
      });

      it('treats a retried work.append (every event id stored) as store.append does: a no-op', async () => {
        const { store, outbox } = await setup();
        const id = uuidv7();
        const first = await outbox.unitOfWork((work) =>
          work.append('order-r', [{ id, type: 'OrderPlaced', data: {} }], { expectedVersion: 'no_stream' }),
        );
        let runs = 0;
        const again = await outbox.unitOfWork(async (work) => {
          runs++;
          return work.append('order-r', [{ id, type: 'OrderPlaced', data: {} }]);
        });
        expect(runs).toBe(1);
        expect(again.nextExpectedVersion).toBe(first.nextExpectedVersion);
        expect(await store.readStream('order-r')).toHaveLength(1);
      });

      it('a work.append sent again returns the events as stored, whatever order or data they come in again', async () => {
        const { store, outbox } = await setup();
        const [a, b, c] = [uuidv7(), uuidv7(), uuidv7()];
        const sent = [
          { id: a, type: 'OrderPlaced', data: { n: 1 } },
          { id: b, type: 'OrderPaid', data: { n: 2 } },
        ];
        const first = await outbox.unitOfWork((work) =>
          work.append('order-again', sent, { expectedVersion: 'no_stream' }),
        );
        const again = await outbox.unitOfWork(async (work) => {
          // Committed before this unit, sent again in another order and with other data.
          const committed = await work.append('order-again', [
            { id: b, type: 'OrderPaid', data: { n: 5 } },
            { id: a, type: 'OrderPlaced', data: { n: 6 } },
          ]);
          // Appended in this unit, then sent again in it.
          await work.append('order-again', [{ id: c, type: 'OrderShipped', data: { n: 3 } }]);
          const own = await work.append('order-again', [{ id: c, type: 'OrderShipped', data: { n: 7 } }]);
          return { committed, own };
        });
        const stored = await store.readStream('order-again');
        const asStored = (ids: string[]) =>
          stored
            .filter((e) => ids.includes(e.id))
            .map((e) => ({ version: e.version, id: e.id, type: e.type, data: e.data }));
        expect(first.events.map((e) => e.version)).toEqual([0, 1]);
        expect(again.committed.nextExpectedVersion).toBe(first.nextExpectedVersion);
        expect(again.committed.events).toMatchObject(asStored([a, b]));
        expect(again.committed.events.map((e) => e.data)).toEqual([{ n: 1 }, { n: 2 }]);
        expect(again.own.events).toMatchObject(asStored([c]));
        expect(again.own.events[0]?.data).toEqual({ n: 3 });
        expect(stored.map((e) => e.id)).toEqual([a, b, c]);
      });

      it('a work.append of ids stored already, earlier in the same unit or before it, returns what their append returned', async () => {
        const { store, outbox } = await setup();
        const [a, b, c] = [uuidv7(), uuidv7(), uuidv7()];
        const first = await outbox.unitOfWork((work) =>
          work.append('order-u', [{ id: a, type: 'OrderPlaced', data: {} }], {
            expectedVersion: 'no_stream',
          }),
        );
        const seen = await outbox.unitOfWork(async (work) => {
          const second = await work.append('order-u', [{ id: b, type: 'OrderPaid', data: {} }]);
          const third = await work.append('order-u', [{ id: c, type: 'OrderShipped', data: {} }]);
          // Again, in this unit: a (committed before it), b and c (its own), in another order.
          return {
            second,
            third,
            a: await work.append('order-u', [{ id: a, type: 'OrderPlaced', data: {} }]),
            b: await work.append('order-u', [{ id: b, type: 'OrderPaid', data: {} }]),
            cb: await work.append('order-u', [
              { id: c, type: 'OrderShipped', data: {} },
              { id: b, type: 'OrderPaid', data: {} },
            ]),
          };
        });
        expect(seen.a.nextExpectedVersion).toBe(first.nextExpectedVersion);
        expect(seen.a.position).toBe(first.position);
        expect(seen.b.nextExpectedVersion).toBe(seen.second.nextExpectedVersion);
        expect(seen.cb.nextExpectedVersion).toBe(seen.third.nextExpectedVersion);
        expect((await store.readStream('order-u')).map((e) => e.id)).toEqual([a, b, c]);
      });

      it.each(['COMMIT', 'ROLLBACK'])(
        'fails a unit of work whose own SQL runs %s with UNIT_OF_WORK_OUTCOME_UNKNOWN, writing nothing of it after that, not even when it throws',
        async (sql) => {
          const { store, outbox, received } = await setup();
          const later: unknown[] = [];
          const outcome = await outbox
            .unitOfWork(async (work) => {
              await work.append('order-sql', [{ type: 'OrderPlaced', data: {} }], {
                expectedVersion: 'no_stream',
              });
              await work.publish('order.placed', { orderId: 'before' });
              later.push(await work.query(sql).catch((e: unknown) => e));
              // PostgreSQL ran these in autocommit after the caller's COMMIT, kept though the unit threw.
              later.push(
                await work
                  .append('order-after', [{ type: 'OrderPlaced', data: {} }])
                  .catch((e: unknown) => e),
              );
              later.push(await work.publish('order.placed', { orderId: 'after' }).catch((e: unknown) => e));
              throw new Error('the caller gives up');
            })
            .catch((e: unknown) => e);
          if ((later[0] as { code?: string }).code === 'UNIT_OF_WORK_UNSUPPORTED') {
            // The memory backend runs no SQL: the unit of work is refused whole.
            expect(await store.readStream('order-sql')).toEqual([]);
            return;
          }
          expect(outcome).toMatchObject({ code: 'UNIT_OF_WORK_OUTCOME_UNKNOWN', reason: 'own-sql' });
          expect(later).toEqual([outcome, outcome, outcome]);
          expect(await store.readStream('order-after')).toEqual([]);
          // What came before the statement: kept by a COMMIT, not by a ROLLBACK.
          expect(await store.readStream('order-sql')).toHaveLength(sql === 'COMMIT' ? 1 : 0);
          await outbox.flush();
          await new Promise((resolve) => setTimeout(resolve, 100));
          expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual(
            sql === 'COMMIT' ? ['before'] : [],
          );
        },
      );

      it('store.close() waits for the units of work called before it; later calls, outbox reads included, reject with EVENT_STORE_CLOSED', async () => {
        // PostgreSQL cut units still waiting for a pooled connection; SQLite rolled back the batch
        // open at close(), its units rejecting with nothing kept. Both now let them end as they would.
        const { store, outbox } = await setup();
        // 12: more than a PostgreSQL pool holds by default, so that some wait for a connection.
        const units = Array.from({ length: 12 }, (_, i) =>
          outbox.unitOfWork(async (work) => {
            await work.append(`u-${i}`, [{ type: 'OrderPlaced', data: {} }], {
              expectedVersion: 'no_stream',
            });
            await work.publish('order.placed', { orderId: `u-${i}` });
            await new Promise((resolve) => setTimeout(resolve, 30));
          }),
        );
        const settled = units.map(() => false);
        for (const [i, unit] of units.entries()) {
          const mark = () => {
            settled[i] = true;
          };
          void unit.then(mark, mark);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
        // Every unit called before it has settled by then (the memory backend's close() did not wait).
        const closing = store.close().then(() => [...settled]);
        // Called in the turn of close() they would still go in (on their way, as appends are); later, not.
        await new Promise((resolve) => setTimeout(resolve, 10));
        const late = await Promise.allSettled([
          outbox.unitOfWork((work) => work.append('late', [{ type: 'OrderPlaced', data: {} }])),
          outbox.append('late-append', [{ type: 'OrderPlaced', data: {} }]),
        ]);
        expect(await closing).toEqual(Array(12).fill(true));
        expect((await Promise.allSettled(units)).map((r) => r.status)).toEqual(Array(12).fill('fulfilled'));
        expect(late).toEqual([
          { status: 'rejected', reason: expect.objectContaining({ code: 'EVENT_STORE_CLOSED' }) },
          { status: 'rejected', reason: expect.objectContaining({ code: 'EVENT_STORE_CLOSED' }) },
        ]);
        for (const read of [() => outbox.backlog(), () => outbox.failed(), () => outbox.scheduled()]) {
          await expect(read()).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
        }
      });

      it('store.close() lets a unit of work called before it run again after a lost race, and commit', async () => {
        // Before, SQLite and PostgreSQL refused the retry (EVENT_STORE_CLOSED): the unit was lost.
        const { store, outbox } = await setup();
        await store.append('race', [{ type: 'OrderPlaced', data: {} }], { expectedVersion: 'no_stream' });
        let runs = 0;
        let firstRun!: () => void;
        const ran = new Promise<void>((resolve) => {
          firstRun = resolve;
        });
        const unit = outbox.unitOfWork(async (work) => {
          runs++;
          if (runs === 1) firstRun();
          // Its first run read the stream before another writer's append: it expects no stream.
          await work.append('race', [{ type: 'OrderPlaced', data: { mine: true } }], {
            expectedVersion: runs === 1 ? 'no_stream' : 0,
          });
          return runs;
        });
        await ran;
        const closing = store.close();
        expect(await unit).toBe(2);
        await closing;
        await expect(outbox.flush()).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
      });

      it("after store.close(), the store's inbox refuses to begin and to complete with EVENT_STORE_CLOSED", async () => {
        // Before, the memory backend's inbox (shared by every store on it) went on working.
        const { store } = await setup();
        const inbox = store.inbox();
        const held = await inbox.begin('held-at-close');
        expect(held).not.toBeNull();
        await store.close();
        await expect(inbox.begin('after-close')).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
        await expect(held!.complete()).rejects.toMatchObject({ code: 'EVENT_STORE_CLOSED' });
        expect(() => held!.abandon()).not.toThrow();
      });

      it('store.close() lets a subscription handler in progress use the store and run its unit of work; other calls meanwhile are refused', async () => {
        const { store, outbox } = await setup();
        let entered!: () => void;
        const inHandler = new Promise<void>((resolve) => {
          entered = resolve;
        });
        const done: string[] = [];
        store.subscribe({ name: 'projection', from: 'start' }, async (event) => {
          if (event.streamId !== 's-1') return;
          entered();
          await new Promise((resolve) => setTimeout(resolve, 100));
          // It may still read the store and write through the outbox.
          expect(await store.readStream('s-1')).toHaveLength(1);
          await outbox.unitOfWork((work) =>
            work.append('projected-s-1', [{ type: 'OrderPlaced', data: {} }]),
          );
          done.push(event.streamId);
        });
        await store.append('s-1', [{ type: 'OrderPlaced', data: {} }]);
        await inHandler;
        const closing = store.close();
        // Calls from anywhere else, made while close() waits for that handler, are refused.
        await new Promise((resolve) => setTimeout(resolve, 20));
        const late = await Promise.allSettled([
          outbox.unitOfWork((work) => work.append('late', [{ type: 'OrderPlaced', data: {} }])),
          outbox.append('late-append', [{ type: 'OrderPlaced', data: {} }]),
          store.readStream('s-1'),
        ]);
        expect(
          late.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : r.status)),
        ).toEqual(['EVENT_STORE_CLOSED', 'EVENT_STORE_CLOSED', 'EVENT_STORE_CLOSED']);
        await closing;
        expect(done).toEqual(['s-1']);
      });

      it('refuses store.close() inside one of its units of work, closing nothing', async () => {
        // Before, on SQLite and PostgreSQL, it waited for that very unit of work: forever.
        const { store, outbox } = await setup();
        const refusal = await outbox.unitOfWork(() => store.close()).catch((e: unknown) => e);
        expect(refusal).toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
        expect(store.closed).toBe(false);
        await outbox.unitOfWork((work) => work.append('after', [{ type: 'OrderPlaced', data: {} }]));
        expect(await store.readStream('after')).toHaveLength(1);
      });

      it('refuses a unit of work opened inside another on the same store, and one after close', async () => {
        const { store, outbox, received } = await setup();
        const inner = await outbox
          .unitOfWork(async (work) => {
            await work.append('order-n', [{ type: 'OrderPlaced', data: {} }]);
            const nested = await outbox
              .unitOfWork((w) => w.publish('order.placed', { orderId: 'inner' }))
              .catch((e: unknown) => e);
            await work.publish('order.placed', { orderId: 'outer' });
            return nested;
          })
          .catch((e: unknown) => e);
        expect(inner).toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
        const appendInside = await outbox
          .unitOfWork(() => outbox.append('order-n2', [{ type: 'OrderPlaced', data: {} }]))
          .catch((e: unknown) => e);
        expect(appendInside).toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
        expect(await store.readStream('order-n2')).toEqual([]);
        // store.append would commit apart from the unit of work (PostgreSQL, memory) or wait for its
        // lock (SQLite): refused on every backend, and the unit of work that goes on to fail keeps nothing.
        let storeAppend: unknown;
        const failed = await outbox
          .unitOfWork(async (work) => {
            storeAppend = await store
              .append('order-n3', [{ type: 'OrderPlaced', data: {} }])
              .catch((e: unknown) => e);
            await work.append('order-n4', [{ type: 'OrderPlaced', data: {} }]);
            throw new Error('business rule failed: roll back');
          })
          .catch((e: unknown) => e);
        expect(storeAppend).toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
        expect(failed).toMatchObject({ message: 'business rule failed: roll back' });
        expect(await store.readStream('order-n3')).toEqual([]);
        expect(await store.readStream('order-n4')).toEqual([]);
        // close() from inside waited for that very unit of work to end: forever.
        const closeInside = await outbox.unitOfWork(() => outbox.close()).catch((e: unknown) => e);
        expect(closeInside).toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
        await waitFor(() => received.length === 1, 'the outer message');
        expect((received[0]!.data as { orderId: string }).orderId).toBe('outer');
        expect(await store.readStream('order-n')).toHaveLength(1);
        // After the outer one ended, a new unit of work is fine, even from code it started.
        await outbox.unitOfWork((w) => w.publish('order.placed', { orderId: 'after' }));
        await outbox.close();
        await expect(outbox.unitOfWork(async () => {})).rejects.toMatchObject({ code: 'OUTBOX_CLOSED' });
        await expect(outbox.append('order-n', [{ type: 'X', data: {} }])).rejects.toMatchObject({
          code: 'OUTBOX_CLOSED',
        });
        await expect(outbox.redrive(['x'])).rejects.toMatchObject({ code: 'OUTBOX_CLOSED' });
        await expect(outbox.discard(['x'])).rejects.toMatchObject({ code: 'OUTBOX_CLOSED' });
      });

      it('refuses at once an append repeating an event id this unit of work appended', async () => {
        const { store, outbox } = await setup();
        const id = uuidv7();
        const error = await outbox
          .unitOfWork(async (work) => {
            await work.append('order-d', [{ id, type: 'OrderPlaced', data: {} }]);
            const second = await work
              .append('order-d', [
                { id, type: 'OrderPlaced', data: {} },
                { type: 'Extra', data: {} },
              ])
              .catch((e: unknown) => e);
            expect(second).toMatchObject({ code: 'DUPLICATE_EVENT_ID' });
          })
          .catch((e: unknown) => e);
        expect(error).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK' });
        expect(await store.readStream('order-d')).toEqual([]);
      });

      it('holds at most 65,536 events in a unit of work, as PostgreSQL does: the append past it is refused and nothing is kept', async () => {
        const { store, outbox } = await setup();
        const events = (n: number) => Array.from({ length: n }, () => ({ type: 'Counted', data: {} }));
        const fill = async (work: Pick<UnitOfWork, 'append'>, streamId: string, last: number) => {
          for (let i = 0; i < 6; i++) await work.append(streamId, events(10_000));
          return work.append(streamId, events(last));
        };
        const refused = await outbox
          .unitOfWork(async (work) => {
            const over = await fill(work, 'count-over', 5_537).catch((e: unknown) => e);
            expect(over).toMatchObject({ code: 'INVALID_EVENT' });
            expect(String(over)).toContain(
              'at most 65536 events: this one has 60000, and the append brings 5537',
            );
            throw over;
          })
          .catch((e: unknown) => e);
        expect(refused).toMatchObject({ code: 'INVALID_EVENT' });
        expect(await store.readStream('count-over', { limit: 1 })).toEqual([]);
        await outbox.unitOfWork(async (work) => {
          await fill(work, 'count-full', 5_536);
        });
        const [last] = await store.readStream('count-full', { direction: 'backward', limit: 1 });
        expect(last?.version).toBe(65_535);
      }, 60_000);

      it('publishes a scheduled message when it falls due, not at the next safety poll', async () => {
        const { outbox, received } = await setup({ pollIntervalMs: 60_000 });
        // Let the relay go idle first, sleeping until its (long) poll.
        await outbox.flush();
        const scheduledAt = Date.now();
        await outbox.unitOfWork((work) =>
          work.schedule('order.placed', { orderId: 'timer' }, { delayMs: 200 }),
        );
        await waitFor(() => received.length === 1, 'the scheduled message', 5000);
        expect(Date.now() - scheduledAt).toBeGreaterThanOrEqual(195);
      });

      it('keeps the commit order of one key', async () => {
        const { outbox, received } = await setup();
        // Units of work run concurrently and overlap (on PostgreSQL they commit in any order). Two
        // commits acknowledged at nearly the same moment have no observable order, but when one unit
        // of work's commit was acknowledged before another had even asked to commit, the first
        // committed first, and its message must go out first. A logical clock orders those moments.
        let tick = 0;
        const asked = new Map<string, number>();
        const acknowledged = new Map<string, number>();
        const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
        await Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const orderId = String(i);
            await pause((i * 7) % 23);
            await outbox.unitOfWork(async (work) => {
              await work.publish('order.placed', { orderId }, { key: 'same' });
              await pause((i * 5) % 11);
              asked.set(orderId, tick++);
            });
            acknowledged.set(orderId, tick++);
          }),
        );
        await waitFor(() => received.length === 40, 'the expected deliveries');
        const delivered = received.map((m) => (m.data as { orderId: string }).orderId);
        expect([...delivered].sort()).toEqual([...asked.keys()].sort());
        const position = new Map(delivered.map((id, index) => [id, index]));
        const outOfOrder: string[] = [];
        let ordered = 0;
        for (const [first, ackedAt] of acknowledged)
          for (const [second, askedAt] of asked)
            if (ackedAt < askedAt) {
              ordered += 1;
              if (position.get(first)! > position.get(second)!) outOfOrder.push(`${first} before ${second}`);
            }
        expect(outOfOrder).toEqual([]);
        // The schedule above makes many such pairs; a check of none would prove nothing.
        expect(ordered).toBeGreaterThan(100);
      });

      it('publishes scheduled messages when due by the clock, and not cancelled ones', async () => {
        const clock = new VirtualClock({ start: Date.now() });
        const { outbox, received } = await setup({ clock });
        const [soon, cancelled] = await outbox.unitOfWork(async (work) => [
          await work.schedule('order.placed', { orderId: 'soon' }, { delayMs: 5000 }),
          await work.schedule('order.placed', { orderId: 'cancelled' }, { delayMs: 6000 }),
        ]);
        expect((await outbox.scheduled()).map((s) => s.id)).toEqual([soon, cancelled]);
        expect(await outbox.unitOfWork((work) => work.cancel([cancelled!]))).toEqual([cancelled]);
        await clock.advance(4999);
        await outbox.flush();
        expect(received).toEqual([]);
        await clock.advance(1);
        await waitFor(() => received.length === 1, 'the expected deliveries');
        expect(received[0]!.id).toBe(soon);
        await clock.advance(10_000);
        await outbox.flush();
        expect(received).toHaveLength(1);
      });

      it('sends a message at once behind a timer of its key not yet due, and the timer in its place once due', async () => {
        // The timer held its key: `order.paid` went out after `order.expired`, three seconds late,
        // while flush() resolved and the readiness check blamed the relay.
        const clock = new VirtualClock({ start: Date.now() });
        const { outbox, received } = await setup({ clock });
        const expiry = await outbox.unitOfWork((work) =>
          work.schedule('order.placed', { orderId: 'expired' }, { delayMs: 3000, key: 'o-1' }),
        );
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'paid' }, { key: 'o-1' }));
        await outbox.flush();
        expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual(['paid']);
        expect(await outbox.backlog()).toMatchObject({ pending: 0, scheduled: 1 });
        await clock.advance(3000);
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'after' }, { key: 'o-1' }));
        await waitFor(() => received.length === 3, 'the timer and the message after it');
        expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual([
          'paid',
          'expired',
          'after',
        ]);
        expect(received[1]!.id).toBe(expiry);
      });

      it('cancels a scheduled message never attempted whatever its due time (delayMs 0, an at past), never a plain one', async () => {
        // Due when written, it looked like a plain message: cancel left it out, and it went out later.
        const { bus, store, outbox, received } = await setup({ relay: false });
        const [now, past, soon, plain] = await outbox.unitOfWork(async (work) => [
          await work.schedule('order.placed', { orderId: 'now' }, { delayMs: 0 }),
          await work.schedule('order.placed', { orderId: 'past' }, { at: new Date(Date.now() - 60_000) }),
          await work.schedule('order.placed', { orderId: 'soon' }, { delayMs: 1 }),
          await work.publish('order.placed', { orderId: 'plain' }),
        ]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        // In the unit of work that wrote it too.
        const inUnit = await outbox.unitOfWork(async (work) =>
          work.cancel([await work.schedule('order.placed', { orderId: 'same unit' }, { delayMs: 0 })]),
        );
        expect(inUnit).toHaveLength(1);
        const cancelled = await outbox.unitOfWork((work) => work.cancel([now!, past!, soon!, plain!]));
        expect(cancelled.sort()).toEqual([now!, past!, soon!].sort());
        const relay = await createOutbox({ store, bus, logger: silentLogger });
        closers.push(() => relay.close());
        await relay.flush();
        await waitFor(() => received.length === 1, 'the plain message');
        await relay.flush();
        expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual(['plain']);
      });

      it('counts the ttlMs of a scheduled message from its due time, not from when it was scheduled', async () => {
        // Counted from the schedule, a ttlMs below the delay expired the message before it went out.
        const clock = new VirtualClock({ start: Date.now() });
        const { outbox, received } = await setup({ clock });
        const start = clock.now();
        const later = await outbox.unitOfWork((work) =>
          work.schedule('order.placed', { orderId: 'later' }, { delayMs: 5000, ttlMs: 1000 }),
        );
        const at = await outbox.unitOfWork((work) =>
          work.schedule('order.placed', { orderId: 'at' }, { at: new Date(start + 7000), ttlMs: 500 }),
        );
        // An at past is due now: its time to live counts from now.
        const past = await outbox.unitOfWork((work) =>
          work.schedule('order.placed', { orderId: 'past' }, { at: new Date(start - 60_000), ttlMs: 2000 }),
        );
        await waitFor(() => received.length === 1, 'the message due at once');
        await clock.advance(7000);
        await waitFor(() => received.length === 3, 'the scheduled messages');
        const expiry = new Map(received.map((m) => [m.id, m.expiresat]));
        expect(expiry.get(later)).toBe(new Date(start + 6000).toISOString());
        expect(expiry.get(at)).toBe(new Date(start + 7500).toISOString());
        expect(expiry.get(past)).toBe(new Date(start + 2000).toISOString());
        // Its time stays when it was scheduled (the bus's clock: real time here, as the virtual start).
        for (const m of received) expect(Math.abs(Date.parse(m.time) - start)).toBeLessThan(60_000);
        // expiresAt and ttlMs together are refused as by publish, and so is a bad ttlMs.
        await expect(
          outbox.unitOfWork((work) =>
            work.schedule('order.placed', { orderId: 'x' }, { delayMs: 1, ttlMs: 1, expiresAt: new Date() }),
          ),
        ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        await expect(
          outbox.unitOfWork((work) =>
            work.schedule('order.placed', { orderId: 'x' }, { delayMs: 1, ttlMs: -1 }),
          ),
        ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      });

      it('refuses flush, redrive and discard inside a unit of work on the same store, at once (UNIT_OF_WORK_UNSUPPORTED)', async () => {
        // On SQLite flush waited forever for the relay, whose round waited for the unit's write lock;
        // redrive and discard failed with STORE_BUSY after 5 s; memory and PostgreSQL went on.
        const { outbox, received } = await setup();
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'first' }));
        const refused = await outbox.unitOfWork(async (work) => {
          await work.publish('order.placed', { orderId: 'second' });
          return Promise.all([
            outbox.flush().catch((e: unknown) => e),
            outbox.redrive(['x']).catch((e: unknown) => e),
            outbox.discard(['x']).catch((e: unknown) => e),
          ]);
        });
        expect(refused).toEqual([
          expect.objectContaining({ code: 'UNIT_OF_WORK_UNSUPPORTED' }),
          expect.objectContaining({ code: 'UNIT_OF_WORK_UNSUPPORTED' }),
          expect.objectContaining({ code: 'UNIT_OF_WORK_UNSUPPORTED' }),
        ]);
        // The unit of work committed all the same.
        await outbox.flush();
        await waitFor(() => received.length === 2, 'both messages');
      });

      it('sets aside a message the broker keeps refusing, lets other keys flow, and redrives it', async () => {
        let refuse = true;
        const { outbox, received } = await setup({
          maxAttempts: 2,
          transport: (t) =>
            aroundPublish(t, (envelope, send) =>
              refuse && (envelope.data as { orderId: string }).orderId === 'poison'
                ? Promise.reject(new UnroutableError(envelope.type, envelope.id))
                : send(),
            ),
        });
        const poison = await outbox.unitOfWork((work) =>
          work.publish('order.placed', { orderId: 'poison' }, { key: 'k' }),
        );
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'behind' }, { key: 'k' }));
        await outbox.unitOfWork((work) =>
          work.publish('order.placed', { orderId: 'other' }, { key: 'other' }),
        );
        await waitFor(async () => (await outbox.failed()).length === 1, 'the expected deliveries');
        const [failed] = await outbox.failed();
        expect(failed).toMatchObject({ id: poison, key: 'k', type: 'order.placed', attempts: 2 });
        expect(failed!.error).toMatch(/no subscription matches/);
        await waitFor(() => received.length === 1, "the other key's message");
        expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual(['other']);
        // 'other' leaves the pending ones once the relay has marked it published.
        await waitFor(async () => (await outbox.backlog()).pending === 1, 'the other key marked');
        expect(await outbox.backlog()).toMatchObject({ failed: 1, pending: 1 });
        await expect(outbox.healthCheck()()).rejects.toThrow(/1 outbox message\(s\) failed/);
        await expect(outbox.healthCheck()()).rejects.toMatchObject({
          code: 'OUTBOX_UNHEALTHY',
          failed: 1,
          pending: 1,
        });
        await outbox.healthCheck({ maxFailed: 1 })();
        refuse = false;
        expect(await outbox.redrive([poison])).toBe(1);
        await waitFor(() => received.length === 3, 'the expected deliveries');
        expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual([
          'other',
          'poison',
          'behind',
        ]);
      });
    });

    describe('what no backend can keep', () => {
      it('refuses a message type with NUL, as bus.publish does, before anything is written', async () => {
        const { bus, store, outbox } = await setup();
        const type = 'order\u0000placed' as 'order.placed';
        await expect(bus.publish(type, { orderId: '1' })).rejects.toMatchObject({ code: 'INVALID_TOPIC' });
        await expect(
          outbox.unitOfWork(async (work) => {
            await work.append('order-nul', [{ type: 'OrderPlaced', data: {} }]);
            await work.publish(type, { orderId: '1' });
          }),
        ).rejects.toMatchObject({ code: 'INVALID_TOPIC' });
        await expect(
          outbox.append('order-nul', [{ type: 'OrderPlaced', data: {} }], {
            messages: [{ type, data: { orderId: '1' } }],
          }),
        ).rejects.toMatchObject({ code: 'INVALID_TOPIC' });
        expect(await store.readStream('order-nul')).toEqual([]);
        expect(await outbox.backlog()).toMatchObject({ pending: 0, failed: 0, scheduled: 0 });
      });

      it('refuses data JSON cannot encode (a BigInt, a cycle, a function or symbol as the data), as bus.publish does, before anything is written', async () => {
        const { bus, store, outbox } = await setup();
        const type = 'order.noted' as 'order.placed';
        const cyclic: Record<string, unknown> = {};
        cyclic.self = cyclic;
        for (const [name, data] of Object.entries({
          bigint: { n: 1n },
          cycle: cyclic,
          fn: () => 1,
          sym: Symbol('s'),
        })) {
          await expect(bus.publish(type, data as never), name).rejects.toMatchObject({
            code: 'MESSAGE_NOT_SERIALIZABLE',
          });
          await expect(
            outbox.unitOfWork(async (work) => {
              await work.append(`noted-${name}`, [{ type: 'Noted', data: {} }]);
              await work.publish(type, data as never);
            }),
            name,
          ).rejects.toMatchObject({ code: 'MESSAGE_NOT_SERIALIZABLE' });
          expect(await store.readStream(`noted-${name}`), name).toEqual([]);
        }
        expect(await outbox.backlog()).toMatchObject({ pending: 0, failed: 0, scheduled: 0 });
      });

      it('refuses NUL in a message id or key with INVALID_OPTIONS, as bus.publish refuses it in an id', async () => {
        const { bus, store, outbox } = await setup();
        await expect(bus.publish('order.placed', { orderId: '1' }, { id: 'x\u0000y' })).rejects.toMatchObject(
          {
            code: 'INVALID_OPTIONS',
          },
        );
        for (const options of [{ id: 'x\u0000y' }, { key: 'a\u0000b' }, { correlationId: '\u0000' }]) {
          await expect(
            outbox.unitOfWork(async (work) => {
              await work.append('order-nul', [{ type: 'OrderPlaced', data: {} }]);
              await work.publish('order.placed', { orderId: '1' }, options);
            }),
          ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
          await expect(
            outbox.append('order-nul', [{ type: 'OrderPlaced', data: {} }], {
              messages: [{ type: 'order.placed', data: { orderId: '1' }, options }],
            }),
          ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        }
        expect(await store.readStream('order-nul')).toEqual([]);
        expect(await outbox.backlog()).toMatchObject({ pending: 0, failed: 0, scheduled: 0 });
      });

      it('finds nothing by an id or key holding NUL, alike on every store: no message has one', async () => {
        // PostgreSQL rejected these lookups with its raw "invalid byte sequence" (and a unit of work
        // cancelling such an id was lost), where memory and SQLite found nothing.
        const { store, outbox } = await setup();
        const ids = ['a\u0000b'];
        expect(await outbox.redrive(ids)).toBe(0);
        expect(await outbox.discard(ids)).toBe(0);
        expect(await outbox.scheduled({ key: 'a\u0000b' })).toEqual([]);
        const cancelled = await outbox.unitOfWork(async (work) => {
          await work.append('order-nul-lookup', [{ type: 'OrderPlaced', data: {} }]);
          return work.cancel(ids);
        });
        expect(cancelled).toEqual([]);
        expect((await store.readStream('order-nul-lookup')).map((e) => e.type)).toEqual(['OrderPlaced']);
        await expect(outbox.redrive([undefined] as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        // biome-ignore lint/suspicious/noSparseArray: the hole is the point
        await expect(outbox.discard([, 'x'] as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        await expect(outbox.scheduled({ key: 5 as never })).rejects.toMatchObject({
          code: 'INVALID_OPTIONS',
        });
      });

      it('finds nothing by an id or key holding a lone surrogate, and refuses such a key: not the message whose id holds U+FFFD', async () => {
        // PostgreSQL took 'sid-\uD800' as 'sid-\uFFFD': work.cancel deleted that message and
        // resolved [], scheduled({ key }) listed it; memory and SQLite found nothing.
        const { outbox } = await setup();
        const id = await outbox.unitOfWork((work) =>
          work.schedule(
            'order.placed',
            { orderId: 'replacement' },
            { delayMs: 60_000, id: 'sid-\uFFFD', key: 'key-\uFFFD' },
          ),
        );
        expect(await outbox.scheduled({ key: 'key-\uD800' })).toEqual([]);
        expect(await outbox.unitOfWork((work) => work.cancel(['sid-\uD800']))).toEqual([]);
        expect(await outbox.redrive(['sid-\uDBFF'])).toBe(0);
        expect(await outbox.discard(['sid-\uDBFF'])).toBe(0);
        expect((await outbox.scheduled()).map((s) => [s.id, s.key])).toEqual([[id, 'key-\uFFFD']]);
        await expect(
          outbox.unitOfWork((work) => work.publish('order.placed', { orderId: '1' }, { key: 'key-\uD800' })),
        ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        // The transactional inbox: PostgreSQL took 'm-\uD800' as the handled 'm-\uFFFD' and skipped it.
        let runs = 0;
        expect(await outbox.runHandler('c', 'm-\uFFFD', async () => void runs++)).toBe(true);
        for (const [consumer, messageId] of [
          ['c', 'm-\uD800'],
          ['c', 'm-\u0000'],
          ['c-\uDBFF', 'm-1'],
        ] as const) {
          await expect(outbox.runHandler(consumer, messageId, async () => void runs++)).rejects.toMatchObject(
            {
              code: 'INVALID_OPTIONS',
            },
          );
        }
        expect(runs).toBe(1);
      });

      it('refuses a message id the outbox holds with DUPLICATE_MESSAGE_ID, keeping nothing; accepts it again once sent', async () => {
        const { store, outbox, received } = await setup();
        const id = uuidv7();
        // Twice in one unit of work: nothing of it is kept.
        const twice = await outbox
          .unitOfWork(async (work) => {
            await work.append('order-dup', [{ type: 'OrderPlaced', data: {} }]);
            await work.publish('order.placed', { orderId: 'd1' }, { id });
            await work.publish('order.placed', { orderId: 'd2' }, { id });
          })
          .catch((e: unknown) => e);
        expect(isDuplicateMessageIdError(twice)).toBe(true);
        expect(twice).toMatchObject({ code: 'DUPLICATE_MESSAGE_ID', id });
        // Caught by the work: the unit of work is rolled back all the same.
        const caught = await outbox
          .unitOfWork(async (work) => {
            await work.append('order-dup', [{ type: 'OrderPlaced', data: {} }]);
            await work.publish('order.placed', { orderId: 'd1' }, { id });
            await work.publish('order.placed', { orderId: 'd2' }, { id }).catch(() => {});
          })
          .catch((e: unknown) => e);
        expect(caught).toMatchObject({
          code: 'UNIT_OF_WORK_ROLLED_BACK',
          cause: { code: 'DUPLICATE_MESSAGE_ID' },
        });
        // The same, through outbox.append.
        await expect(
          outbox.append('order-dup', [{ type: 'OrderPlaced', data: {} }], {
            messages: [
              { type: 'order.placed', data: { orderId: 'd1' }, options: { id } },
              { type: 'order.placed', data: { orderId: 'd2' }, options: { id } },
            ],
          }),
        ).rejects.toMatchObject({ code: 'DUPLICATE_MESSAGE_ID', id });
        expect(await store.readStream('order-dup')).toEqual([]);
        await outbox.flush();
        expect(received).toEqual([]);
        // While its row is in the outbox (here scheduled), in a later unit of work or append.
        const scheduled = uuidv7();
        await outbox.unitOfWork((work) =>
          work.schedule('order.placed', { orderId: 's' }, { id: scheduled, delayMs: 3_600_000 }),
        );
        await expect(
          outbox.unitOfWork(async (work) => {
            await work.append('order-dup', [{ type: 'OrderPlaced', data: {} }]);
            await work.publish('order.placed', { orderId: 'again' }, { id: scheduled });
          }),
        ).rejects.toMatchObject({ code: 'DUPLICATE_MESSAGE_ID', id: scheduled });
        await expect(
          outbox.append('order-dup', [{ type: 'OrderPlaced', data: {} }], {
            messages: [{ type: 'order.placed', data: { orderId: 'again' }, options: { id: scheduled } }],
          }),
        ).rejects.toMatchObject({ code: 'DUPLICATE_MESSAGE_ID', id: scheduled });
        expect(await store.readStream('order-dup')).toEqual([]);
        expect(await outbox.backlog()).toMatchObject({ pending: 0, scheduled: 1 });
        // Once published and its row deleted, the id is accepted again. (Whether the memory bus then
        // delivers a second message of a settled id is the relay's matter, not this check's.)
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'first' }, { id }));
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return received.length === 1 && pending === 0 && awaitingSettlement === 0;
        }, 'the first message sent and its row deleted');
        expect(
          await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'second' }, { id })),
        ).toBe(id);
      });

      it('sets aside a message refused with NUL in the error text, and deletes the other keys once sent', async () => {
        // PostgreSQL refused to record such a refusal, forever: the message was never set aside,
        // flush() never resolved, and the rows of other keys sent meanwhile were never deleted.
        const { outbox, received } = await setup({
          maxAttempts: 2,
          transport: (t) =>
            aroundPublish(t, (envelope, send) =>
              (envelope.data as { orderId: string }).orderId === 'poison'
                ? Promise.reject(new Error('refused: "order\u0000placed"'))
                : send(),
            ),
        });
        const poison = await outbox.unitOfWork((work) =>
          work.publish('order.placed', { orderId: 'poison' }, { key: 'k' }),
        );
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'other' }));
        await outbox.flush();
        await waitFor(async () => (await outbox.failed()).length === 1, 'the message set aside');
        const [failed] = await outbox.failed();
        expect(failed).toMatchObject({ id: poison, attempts: 2, error: 'refused: "order\uFFFDplaced"' });
        await waitFor(() => received.length === 1, "the other key's message");
        await waitFor(async () => (await outbox.backlog()).pending === 0, 'the other key deleted');
        expect(await outbox.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 0, failed: 1 });
      });
    });

    describe('messages held until settled (memory bus)', () => {
      // The memory bus holds messages in process memory only: a row deleted at the confirm would be
      // lost with the process if it died before the handlers ran. So the row stays until every
      // subscription the message reached settled it (and goes out again after a crash).
      const orderId = (m: Message) => (m.data as { orderId: string }).orderId;

      /** Another outbox on `store` and `bus`, as after a restart: short leases, quick polls. */
      async function nextRelay(
        store: EventStore,
        bus: Bus<{ 'order.placed': z.ZodObject<{ orderId: z.ZodString }> }>,
      ) {
        const next = await createOutbox({
          store,
          bus,
          logger: silentLogger,
          relay: { leaseMs: 300, pollIntervalMs: 50 },
        });
        closers.push(() => next.close());
        return next;
      }

      /** A subscription of group `inventory` whose handler waits at `slow` until released. */
      async function slowInventory(bus: Bus<{ 'order.placed': z.ZodObject<{ orderId: z.ZodString }> }>) {
        let release!: () => void;
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        const entered: string[] = [];
        await bus.subscribe(
          'order.placed',
          async (m) => {
            entered.push(m.data.orderId);
            if (m.data.orderId === 'slow') await gate;
          },
          { group: 'inventory', concurrency: 4 },
        );
        return { entered, release };
      }

      it('keeps a published row until its handlers are done, while other keys and its own key go on', async () => {
        const { bus, outbox, received } = await setup();
        const { entered, release } = await slowInventory(bus);
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'slow' }, { key: 'k' }));
        await waitFor(() => entered.includes('slow'), 'the slow handler');
        await waitFor(async () => (await outbox.backlog()).awaitingSettlement === 1, 'the row held');
        // A round of the relay later (one that deletes what was settled), it is still there.
        await outbox.flush();
        expect(await outbox.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 1, oldestAgeMs: 0 });
        await outbox.healthCheck({ maxAgeMs: 1 })();

        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'other' }, { key: 'o' }));
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'behind' }, { key: 'k' }));
        await waitFor(
          () => entered.includes('other') && entered.includes('behind'),
          'the other messages handled while the slow one is not',
        );
        expect(received.map(orderId)).toEqual(['slow', 'other', 'behind']);
        await waitFor(
          async () => (await outbox.backlog()).awaitingSettlement === 1,
          'only the slow one held',
        );

        release();
        // (Received does not mean settled: the relay may still hold the row, or not yet have held it.)
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return pending === 0 && awaitingSettlement === 0;
        }, 'the row deleted');
        expect(await outbox.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 0, failed: 0 });
      });

      it('keeps a row whose handler failed and waits for a retry; a dead letter or a deleted queue settles it', async () => {
        const { bus, outbox } = await setup();
        const backoff = { initialDelayMs: 600_000, factor: 1, maxDelayMs: 600_000 };
        const failures: string[] = [];
        const retrying = await bus.subscribe(
          'order.placed',
          async (m) => {
            if (m.data.orderId !== 'retry') return;
            failures.push(m.data.orderId);
            throw new Error('not yet');
          },
          { group: 'retrying', maxAttempts: 2, backoff },
        );
        await bus.subscribe(
          'order.placed',
          async (m) => {
            if (m.data.orderId === 'poison') throw new Error('never');
          },
          { group: 'strict', maxAttempts: 1 },
        );

        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'poison' }));
        await waitFor(
          async () => (await bus.listDeadLetters({ group: 'strict' })).length === 1,
          'the dead letter',
        );
        // Gone from the outbox: a row published but not yet held counts as pending, not awaiting.
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return pending === 0 && awaitingSettlement === 0;
        }, 'the dead letter settled');

        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'retry' }));
        await waitFor(() => failures.length === 1, 'the first attempt');
        await waitFor(async () => (await outbox.backlog()).awaitingSettlement === 1, 'the row held');
        await outbox.flush();
        // Waiting for its retry (10 minutes away): not settled.
        expect(await outbox.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 1 });

        await retrying.close();
        expect(
          await bus.deleteSubscription('order.placed', { group: 'retrying', maxAttempts: 2, backoff }),
        ).toBe(1);
        // (Received does not mean settled: the relay may still hold the row, or not yet have held it.)
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return pending === 0 && awaitingSettlement === 0;
        }, 'the row deleted');
        expect(await outbox.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 0, failed: 0 });
      });

      it('delivers a message reusing the id of one settled before, and deletes its row', async () => {
        // PublishOptions.id makes a re-publish recognisable as a duplicate: the broker delivers it
        // (RabbitMQ does), the consumers' inboxes drop it. It must not be taken for the first one.
        const { outbox, received } = await setup();
        const id = uuidv7();
        const empty = async () => {
          const { pending, awaitingSettlement } = await outbox.backlog();
          return pending === 0 && awaitingSettlement === 0;
        };
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'first' }, { id }));
        await waitFor(() => received.length === 1, 'the first message');
        await waitFor(empty, 'the first row deleted');
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'again' }, { id }));
        await waitFor(() => received.length === 2, 'the message reusing its id');
        await waitFor(empty, 'its row deleted');
        expect(received.map((m) => [m.id, orderId(m)])).toEqual([
          [id, 'first'],
          [id, 'again'],
        ]);
      });

      it('waits at close for what its relay published to be settled, and deletes those rows', async () => {
        // An orderly close must not leave handled messages in the outbox: the next start would send
        // them again, which RabbitMQ (a durable broker: rows deleted at the confirm) does not.
        const { bus, store, outbox, received } = await setup({ leaseMs: 300 });
        await bus.subscribe('order.placed', () => new Promise<void>((resolve) => setTimeout(resolve, 200)), {
          group: 'inventory',
        });
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'before' }));
        await waitFor(() => received.length === 1, 'the first message');
        // A unit of work in flight when close is called (units run one at a time here).
        let release!: () => void;
        const gate = new Promise<void>((resolve) => {
          release = resolve;
        });
        const unit = outbox.unitOfWork(async (work) => {
          await work.publish('order.placed', { orderId: 'in-flight' });
          await gate;
        });
        await new Promise((resolve) => setTimeout(resolve, 20));
        const closing = outbox.close();
        release();
        await unit;
        await closing;
        // What the last round sent (the unit's message, if it went before the stop) was handled.
        expect(await outbox.backlog()).toMatchObject({ awaitingSettlement: 0 });

        const next = await nextRelay(store, bus);
        // Past the lease of any row left held: each message is delivered once.
        await new Promise((resolve) => setTimeout(resolve, 700));
        await next.flush();
        await waitFor(() => received.length >= 2, 'both messages');
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(received.map(orderId)).toEqual(['before', 'in-flight']);
      });

      it('leaves a row not yet settled in the outbox at close, for the next relay once its lease ends', async () => {
        const warnings: string[] = [];
        const logger: Logger = { ...silentLogger, warn: (message: string) => warnings.push(message) };
        const { bus, store, outbox, received } = await setup({ leaseMs: 300, settleOnCloseMs: 200, logger });
        const { entered, release } = await slowInventory(bus);
        const id = await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'slow' }));
        await waitFor(() => entered.includes('slow'), 'the slow handler');
        await waitFor(async () => (await outbox.backlog()).awaitingSettlement === 1, 'the row held');
        const closing = Date.now();
        await outbox.close();
        // Waited for settlements up to settleOnCloseMs, not for the handler that does not end.
        expect(Date.now() - closing).toBeGreaterThanOrEqual(190);
        expect(Date.now() - closing).toBeLessThan(2000);
        expect(await outbox.backlog()).toMatchObject({ awaitingSettlement: 1 });
        expect(warnings.filter((w) => w.includes('not settled'))).toHaveLength(1);

        const next = await nextRelay(store, bus);
        await waitFor(() => received.filter((m) => m.id === id).length === 2, 'the message sent again');
        release();
        await waitFor(async () => {
          const { pending, awaitingSettlement } = await next.backlog();
          return pending === 0 && awaitingSettlement === 0;
        }, 'the row deleted');
        expect(await next.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 0 });
      });

      it('deletes rows at the confirm with holdUntilSettled: false', async () => {
        const { bus, outbox } = await setup({ holdUntilSettled: false });
        const { entered, release } = await slowInventory(bus);
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: 'slow' }));
        await waitFor(() => entered.includes('slow'), 'the slow handler');
        await outbox.flush();
        expect(await outbox.backlog()).toMatchObject({ pending: 0, awaitingSettlement: 0 });
        release();
      });
    });

    describe('outbox health', () => {
      it('fails the readiness check once the oldest message due waited past maxAgeMs', async () => {
        const clock = new VirtualClock({ start: Date.now() });
        const bus = await createBus({
          url: `memory://outbox-${uuidv7()}`,
          service: 'orders',
          logger: silentLogger,
        });
        closers.push(() => bus.close());
        const store = await harness.createStore();
        closers.push(() => store.close());
        // No relay in this process: nothing publishes.
        const outbox = await createOutbox({ store, bus, clock, relay: false, logger: silentLogger });
        closers.push(() => outbox.close());
        await outbox.unitOfWork((work) => work.publish('order.placed', { orderId: '1' }));
        const check = outbox.healthCheck({ maxAgeMs: 60_000 });
        await clock.advance(60_000);
        await check();
        await clock.advance(1);
        await expect(check()).rejects.toThrow(/waited 60001 ms \(1 pending\)/);
      });
    });

    describe('command handlers in a unit of work', () => {
      type Event = { type: 'Added'; data: { n: number } };
      const counter = commandHandlerFor<{ type: 'Add'; n: number }, Event, { total: number }>({
        initialState: () => ({ total: 0 }),
        evolve: (state, event) => ({ total: state.total + event.data.n }),
        decide: (command) => ({ type: 'Added', data: { n: command.n } }),
      });

      it('appends the decided events and publishes with them, atomically, retried as one unit', async () => {
        const { store, outbox, received } = await setup();
        await counter(store).handle('counter-1', { type: 'Add', n: 1 });
        await store.append('counter-1', [{ type: 'Added', data: { n: 10 } }]);
        // The first load misses the last append (as if it was read just before another writer's
        // commit): the append expecting that version fails in the database and the unit runs again.
        const handler = counter(store);
        let runs = 0;
        const total = await outbox.unitOfWork(async (work) => {
          runs++;
          const result = await handler.handleIn(runs === 1 ? staleReads(work) : work, 'counter-1', {
            type: 'Add',
            n: 2,
          });
          await work.publish('order.placed', { orderId: `total-${result.state.total}` });
          return result.state.total;
        });
        expect(runs).toBe(2);
        expect(total).toBe(13);
        await waitFor(() => received.length === 1, 'the message');
        expect(received.map((m) => (m.data as { orderId: string }).orderId)).toEqual(['total-13']);
        expect((await handler.load('counter-1')).state.total).toBe(13);
      });

      it('reads in the unit of work: committed events and its own appends, unseen outside until commit', async () => {
        const { store, outbox } = await setup();
        await store.append('order-rs', [{ type: 'OrderPlaced', data: { n: 1 } }]);
        await outbox.unitOfWork(async (work) => {
          await work.append('order-rs', [{ type: 'ItemAdded', data: { n: 2 } }], { expectedVersion: 0 });
          const inside = await work.readStream('order-rs');
          expect(inside.map((e) => [e.version, e.type, e.data])).toEqual([
            [0, 'OrderPlaced', { n: 1 }],
            [1, 'ItemAdded', { n: 2 }],
          ]);
          expect(
            (await work.readStream('order-rs', { direction: 'backward', limit: 1 })).map((e) => e.type),
          ).toEqual(['ItemAdded']);
          expect(await store.readStream('order-rs')).toHaveLength(1);
        });
        expect(await store.readStream('order-rs')).toHaveLength(2);
        await expect(
          outbox.unitOfWork((work) => work.readStream('order-rs', { limit: -1 })),
        ).rejects.toMatchObject({
          code: 'INVALID_EVENT',
        });
      });

      it('runs many command handlers in concurrent units of work without a second connection each', async () => {
        // On PostgreSQL a unit of work holds a pooled connection; loading through the store would take
        // another, and as many units as connections would wait for each other until the pool gives up.
        const { store, outbox } = await setup();
        const handler = counter(store);
        const totals = await Promise.all(
          Array.from({ length: 24 }, (_, i) =>
            outbox.unitOfWork(
              async (work) =>
                (await handler.handleIn(work, `counter-c${i}`, { type: 'Add', n: i })).state.total,
            ),
          ),
        );
        expect(totals).toEqual(Array.from({ length: 24 }, (_, i) => i));
      });

      it('makes units of work that lock the same key take turns: none loses a race, none is rerun', async () => {
        // Each reads the stream, waits (other units run meanwhile wherever they can), then appends at
        // the version it read. Without the lock, on PostgreSQL, all but one would lose the race.
        const { store, outbox } = await setup();
        await store.append('hot-1', [{ type: 'Opened', data: {} }]);
        let runs = 0;
        let inside = 0;
        let most = 0;
        await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            outbox.unitOfWork(
              async (work) => {
                runs++;
                await work.lock('hot-1', 'hot-1', `other-${i}`);
                inside++;
                most = Math.max(most, inside);
                const version = (await work.readStream('hot-1')).length - 1;
                await new Promise((resolve) => setTimeout(resolve, 5));
                await work.append('hot-1', [{ type: 'Taken', data: { i } }], { expectedVersion: version });
                inside--;
              },
              { maxRetries: 0 },
            ),
          ),
        );
        expect(runs).toBe(12);
        expect(most).toBe(1);
        expect(await store.readStream('hot-1')).toHaveLength(13);
        // Keys that are not strings, or none at all, are refused before anything is locked (PostgreSQL
        // text cannot hold NUL: refused alike on every backend, never a raw driver error).
        for (const keys of [[], [''], [42], ['x'.repeat(1001)], ['a\u0000b']] as string[][]) {
          await expect(
            outbox.unitOfWork((work) => work.lock(...(keys as [string])).then(() => 'locked')),
            JSON.stringify(keys),
          ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        }
        await outbox.unitOfWork(async (work) => {
          await work.lock('x'.repeat(1000), 'é ☃ \u{1F600}');
        });
      });

      it('appends nothing when the unit of work rolls back', async () => {
        const { store, outbox } = await setup();
        const handler = counter(store);
        await expect(
          outbox.unitOfWork(async (work) => {
            await handler.handleIn(work, 'counter-2', { type: 'Add', n: 5 });
            throw new Error('no');
          }),
        ).rejects.toThrow('no');
        expect((await handler.load('counter-2')).version).toBe(-1);
      });
    });

    /** `store`, whose first `readStream` misses the stream's last event. */
    /** `work`, whose reads miss the stream's last event. */
    function staleReads(work: EventAppender): EventAppender {
      return {
        append: (streamId, events, options) => work.append(streamId, events, options),
        readStream: async (streamId, options) => (await work.readStream!(streamId, options)).slice(0, -1),
      };
    }

    /** A CommandHandler factory for a decider, per store. */
    function commandHandlerFor<C, E extends { type: string }, S>(decider: Decider<C, E, S>) {
      return (store: EventStore) => new CommandHandler(store, decider);
    }

    describe('transactional inbox', () => {
      it('runs a redelivered message with no effect at all', async () => {
        const { bus, store, outbox, received } = await setup();
        let runs = 0;
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            if (message.data.orderId.endsWith('-next')) return;
            runs++;
            await work.append(`stock-${message.data.orderId}`, [{ type: 'Reserved', data: {} }]);
            await work.publish('order.placed', { orderId: `${message.data.orderId}-next` });
          },
          { group: 'inventory', unitOfWork: outbox },
        );
        // The same message twice (a re-send after a crash between confirm and mark).
        const id = uuidv7();
        await bus.publish('order.placed', { orderId: 'a' }, { id });
        await bus.publish('order.placed', { orderId: 'a' }, { id });
        await waitFor(
          () => received.filter((m) => (m.data as { orderId: string }).orderId === 'a-next').length === 1,
          'the handler to publish once',
        );
        await outbox.flush();
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(runs).toBe(1);
        expect(await store.readStream('stock-a')).toHaveLength(1);
        const next = received.find((m) => (m.data as { orderId: string }).orderId === 'a-next');
        expect(next?.causationid).toBe(id);
      });

      it('takes a synchronous handler, as its type allows (it failed every attempt)', async () => {
        const { bus, outbox } = await setup();
        const runs: string[] = [];
        await bus.subscribe(
          'order.placed',
          (message) => {
            runs.push(message.data.orderId);
          },
          { group: 'inventory', unitOfWork: outbox },
        );
        // Its unit of work commits, with its mark: the same message again has no effect.
        const id = uuidv7();
        await bus.publish('order.placed', { orderId: 'sync' }, { id });
        await waitFor(() => runs.length === 1, 'the synchronous handler to run');
        await new Promise((resolve) => setTimeout(resolve, 50));
        await bus.publish('order.placed', { orderId: 'sync' }, { id });
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(runs).toEqual(['sync']);
      });

      it('forgets marks past inboxRetentionMs, deleting them in the background', async () => {
        const clock = new VirtualClock({ start: Date.now() });
        const { bus, outbox } = await setup({ clock, inboxRetentionMs: 10_000 });
        const runs: string[] = [];
        await bus.subscribe(
          'order.placed',
          async (message) => {
            runs.push(message.data.orderId);
          },
          { group: 'inventory', unitOfWork: outbox },
        );
        const id = uuidv7();
        await bus.publish('order.placed', { orderId: 'first' }, { id });
        await waitFor(() => runs.length === 1, 'the first run');
        await bus.publish('order.placed', { orderId: 'within retention' }, { id });
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(runs).toEqual(['first']);
        // The cleanup runs every 60 s of the outbox's clock and deletes marks older than retention.
        await clock.advance(70_000);
        await waitFor(async () => {
          await bus.publish('order.placed', { orderId: 'after retention' }, { id });
          await new Promise((resolve) => setTimeout(resolve, 20));
          return runs.length === 2;
        }, 'the run after retention');
        expect(runs).toEqual(['first', 'after retention']);
      });

      it('runs each handler in its own message context, however many share a transaction', async () => {
        // SQLite and memory run the units of work called in one turn in one transaction.
        const { bus, outbox, received } = await setup();
        const seen: [string, string | undefined][] = [];
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            if (message.data.orderId.endsWith('-next')) return;
            seen.push([message.id, currentContext()?.messageId]);
            await work.publish('order.placed', { orderId: `${message.data.orderId}-next` });
          },
          { group: 'inventory', unitOfWork: outbox, concurrency: 10 },
        );
        const sent = Array.from({ length: 10 }, () => uuidv7());
        await Promise.all(
          sent.map((id, n) =>
            bus.publish('order.placed', { orderId: `c${n}` }, { id, correlationId: `corr-${n}` }),
          ),
        );
        await waitFor(
          () =>
            received.filter((m) => (m.data as { orderId: string }).orderId.endsWith('-next')).length === 10,
          'every handler to publish',
        );
        expect(seen.every(([id, contextId]) => id === contextId)).toBe(true);
        for (let n = 0; n < 10; n++) {
          const next = received.find((m) => (m.data as { orderId: string }).orderId === `c${n}-next`);
          expect([next?.causationid, next?.correlationid]).toEqual([sent[n], `corr-${n}`]);
        }
      });

      it('times a handler from the start of its unit of work: waiting for its turn does not count', async () => {
        // SQLite and memory run units of work one at a time per process: with ten handlers of 100 ms
        // delivered at once, the last waits 900 ms for its turn, more than its 400 ms limit.
        const { bus, store, outbox } = await setup();
        let runs = 0;
        const budgets: number[] = [];
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            runs++;
            // The context's deadline, which calls made by the handler honour, moves with the limit.
            budgets.push((currentContext()?.deadline ?? 0) - Date.now());
            await work.append(`stock-${message.data.orderId}`, [{ type: 'Reserved', data: {} }]);
            await new Promise((resolve) => setTimeout(resolve, 100));
          },
          { group: 'inventory', unitOfWork: outbox, concurrency: 10, handlerTimeoutMs: 400, maxAttempts: 1 },
        );
        for (let n = 0; n < 10; n++) await bus.publish('order.placed', { orderId: `t${n}` });
        await waitFor(
          async () =>
            (await Promise.all(Array.from({ length: 10 }, (_, n) => store.readStream(`stock-t${n}`)))).every(
              (e) => e.length === 1,
            ),
          'every handler to commit',
          10_000,
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(runs).toBe(10);
        expect(await bus.listDeadLetters({ group: 'inventory' })).toEqual([]);
        expect(Math.min(...budgets)).toBeGreaterThan(300);
      });

      it('rolls back the unit of work of a handler that ran past its limit: a dead letter means not done', async () => {
        const { bus, store, outbox } = await setup();
        let finished = 0;
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            await work.append(`stock-${message.data.orderId}`, [{ type: 'Reserved', data: {} }]);
            // Ignores its signal, and ends after its limit.
            await new Promise((resolve) => setTimeout(resolve, 300));
            finished++;
          },
          { group: 'inventory', unitOfWork: outbox, handlerTimeoutMs: 100, maxAttempts: 1 },
        );
        await bus.publish('order.placed', { orderId: 'late' });
        await waitFor(
          async () => (await bus.listDeadLetters({ group: 'inventory' })).length === 1,
          'the dead letter',
        );
        await waitFor(() => finished === 1, 'the handler to end');
        await outbox.flush();
        expect(await store.readStream('stock-late')).toEqual([]);
        const [dead] = await bus.listDeadLetters({ group: 'inventory' });
        expect(dead?.reason.kind).toBe('timeout');
      });

      it('frees the slot of a handler past its limit for the next messages, which run and commit', async () => {
        // The next deliveries ran in the open unit of work's context and were refused as nested.
        const { bus, store, outbox } = await setup();
        const ran: string[] = [];
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            const { orderId } = message.data;
            ran.push(orderId);
            await work.append(`stock-${orderId}`, [{ type: 'Reserved', data: {} }]);
            if (orderId === 'slow') await new Promise((resolve) => setTimeout(resolve, 800)); // ignores its signal
          },
          { group: 'inventory', unitOfWork: outbox, concurrency: 1, handlerTimeoutMs: 300, maxAttempts: 1 },
        );
        for (const orderId of ['slow', 'b', 'c']) await bus.publish('order.placed', { orderId });
        await waitFor(
          async () =>
            (await store.readStream('stock-c')).length === 1 &&
            (await store.readStream('stock-b')).length === 1,
          'b and c to commit',
        );
        expect(ran).toEqual(['slow', 'b', 'c']);
        const dead = await bus.listDeadLetters({ group: 'inventory' });
        expect(
          dead.map((d) => [(d.envelope?.data as { orderId?: string } | undefined)?.orderId, d.reason.kind]),
        ).toEqual([['slow', 'timeout']]);
        expect(await store.readStream('stock-slow')).toEqual([]);
      });

      it('rolls back at its limit the unit of work of a handler that never ends, freeing the store for the others', async () => {
        const { bus, store, outbox } = await setup();
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            await work.append(`stock-${message.data.orderId}`, [{ type: 'Reserved', data: {} }]);
            await new Promise(() => {}); // never ends, never looks at its signal
          },
          { group: 'inventory', unitOfWork: outbox, handlerTimeoutMs: 200, maxAttempts: 1 },
        );
        await bus.publish('order.placed', { orderId: 'hung' });
        await waitFor(
          async () => (await bus.listDeadLetters({ group: 'inventory' })).length === 1,
          'the dead letter',
        );
        // SQLite and memory run one unit of work at a time: the hung one held every other.
        await outbox.unitOfWork((work) => work.append('after', [{ type: 'Later', data: {} }]));
        expect(await store.readStream('after')).toHaveLength(1);
        expect(await store.readStream('stock-hung')).toEqual([]);
      });

      it('never times out a handler that returned within its limit, whatever its commit waits for', async () => {
        // On SQLite the units delivered together share a commit: a slow one delayed the fast one's,
        // which was then dead-lettered as a timeout while its effects committed.
        const { bus, store, outbox } = await setup();
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            await work.append(`stock-${message.data.orderId}`, [{ type: 'Reserved', data: {} }]);
            if (message.data.orderId === 'slow') await new Promise((resolve) => setTimeout(resolve, 250));
          },
          { group: 'inventory', unitOfWork: outbox, concurrency: 2, handlerTimeoutMs: 100, maxAttempts: 1 },
        );
        await Promise.all(['fast', 'slow'].map((orderId) => bus.publish('order.placed', { orderId })));
        await waitFor(
          async () => (await bus.listDeadLetters({ group: 'inventory' })).length === 1,
          'the dead letter',
        );
        await new Promise((resolve) => setTimeout(resolve, 400));
        const dead = await bus.listDeadLetters({ group: 'inventory' });
        expect(dead.map((d) => (d.envelope?.data as { orderId?: string } | undefined)?.orderId)).toEqual([
          'slow',
        ]);
        expect(await store.readStream('stock-fast')).toHaveLength(1);
        expect(await store.readStream('stock-slow')).toEqual([]);
      });

      it('rolls the mark back with the handler, so the retry runs it again', async () => {
        const { bus, store, outbox } = await setup();
        let runs = 0;
        await bus.subscribe(
          'order.placed',
          async (message, { work }) => {
            runs++;
            await work.append(`stock-${message.data.orderId}`, [{ type: 'Reserved', data: {} }]);
            if (runs === 1) throw new Error('first attempt fails');
          },
          {
            group: 'inventory',
            unitOfWork: outbox,
            backoff: { initialDelayMs: 10, factor: 1, maxDelayMs: 10 },
          },
        );
        await bus.publish('order.placed', { orderId: 'b' });
        await waitFor(() => runs === 2, 'the expected deliveries');
        await waitFor(
          async () => (await store.readStream('stock-b')).length === 1,
          'the expected deliveries',
        );
      });
    });
  });
}

/**
 * `t` with each publish, tracked ones (`publishTracked`) too, going through `around`, which calls
 * `send` to hand the message to `t`.
 */
function aroundPublish(
  t: Transport,
  around: (envelope: Envelope, send: () => Promise<void>) => Promise<void>,
): Transport {
  const wrapped = Object.create(t) as Transport;
  wrapped.publish = (envelope) => around(envelope, () => t.publish(envelope));
  if (t.publishTracked !== undefined) {
    wrapped.publishTracked = (envelope) => {
      let settle!: () => void;
      const settled = new Promise<void>((resolve) => {
        settle = resolve;
      });
      const confirmed = around(envelope, () => {
        const tracked = t.publishTracked!(envelope);
        void tracked.settled.then(settle);
        return tracked.confirmed;
      });
      return { confirmed, settled };
    };
  }
  return wrapped;
}
