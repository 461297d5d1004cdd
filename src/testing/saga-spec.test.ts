import { AssertionError } from 'node:assert';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { isMessageValidationError } from '../messaging/errors.js';
import { defineSaga } from '../saga/define-saga.js';
import {
  isSagaDefinitionError,
  isSagaTransitionError,
  isSagaUnknownInstanceError,
  type SagaDefinitionError,
} from '../saga/errors.js';
import { orderSaga } from '../saga/fixtures/order-saga.js';
import { sloppySaga } from '../saga/fixtures/retry-saga.js';
import { undoMessageId } from '../saga/saga-state.js';
import { sagaSpec } from './saga-spec.js';

const placed = { type: 'order.placed', data: { orderId: 'o-1', total: 40 } } as const;
const reserved = { type: 'stock.reserved', data: { orderId: 'o-1' } } as const;

describe('sagaSpec', () => {
  it('checks a start: status, data and the first command', async () => {
    await sagaSpec(orderSaga)
      .given([])
      .when(placed)
      .then({
        status: 'reserving',
        data: { total: 40, notes: [] },
        completed: false,
        published: [{ type: 'stock.reserve', data: { orderId: 'o-1' } }],
        scheduled: [],
      });
  });

  it('checks a transition with a step recorded and a timeout scheduled', async () => {
    await sagaSpec(orderSaga)
      .given([placed])
      .when(reserved)
      .then({
        status: 'charging',
        published: [{ type: 'payment.charge', data: { orderId: 'o-1', amount: 40 } }],
        scheduled: [{ type: 'saga.order.timeout', data: { sagaId: 'o-1', name: 'payment' } }],
        timeouts: ['payment'],
        steps: ['stock'],
      });
  });

  it('fires a pending timeout: compensation in reverse, then completion', async () => {
    await sagaSpec(orderSaga)
      .given([placed, reserved])
      .when({ timeout: 'payment' })
      .then({
        status: 'cancelled',
        completed: true,
        published: [
          { type: 'stock.release', data: { orderId: 'o-1' } },
          { type: 'order.cancelled', data: { orderId: 'o-1', reason: 'payment timed out' } },
        ],
        timeouts: [],
        steps: [],
      });
  });

  it('fires a timeout due at once (delayMs 0, an at past), pending until it is delivered', async () => {
    // It was pending (`timeouts`), yet `when({ timeout })` failed: "is not in the outbox".
    for (const when of [{ delayMs: 0 }, { at: new Date(Date.now() - 60_000) }]) {
      const reminder = defineSaga({
        name: 'reminder',
        contracts: { 'reminder.set': z.object({ id: z.string() }) },
        startedBy: ['reminder.set'],
        initial: () => ({ status: 'waiting', data: {} }),
        started: (saga) => {
          saga.schedule('ring', when);
        },
        id: { 'reminder.set': (m) => m.data.id },
        states: {
          waiting: {
            'saga.reminder.timeout': (saga, timeout) => {
              saga.to('rang', { rang: timeout.data.name }).complete();
            },
          },
          rang: {},
        },
      });
      const set = { type: 'reminder.set', data: { id: 'r-1' } } as const;
      await sagaSpec(reminder)
        .given([])
        .when(set)
        .then({ status: 'waiting', timeouts: ['ring'] });
      await sagaSpec(reminder)
        .given([set])
        .when({ timeout: 'ring' })
        .then({ status: 'rang', data: { rang: 'ring' }, completed: true, timeouts: [] });
    }
  });

  it('ignores a timeout cancelled by the reply, and a duplicate start', async () => {
    // The reply cancelled it: a timeout arriving after, as the runner would get one, is ignored as stale.
    await sagaSpec(orderSaga)
      .given([placed, reserved, { type: 'payment.charged', data: { orderId: 'o-1' } }])
      .when({ timeout: 'payment' })
      .thenIgnored('stale-timeout');
    // A name never scheduled alike (the saga ignores it); with no instance at all, there is nothing to time out.
    await sagaSpec(orderSaga).given([placed]).when({ timeout: 'never-set' }).thenIgnored('stale-timeout');
    await expect(sagaSpec(orderSaga).given([]).when({ timeout: 'payment' }).thenIgnored()).rejects.toThrow(
      /no instance of "order" to time out/,
    );
    await sagaSpec(orderSaga).given([placed]).when(placed).thenIgnored('duplicate-start');
    await sagaSpec(orderSaga)
      .given([placed, { type: 'stock.unavailable', data: { orderId: 'o-1' } }])
      .when(reserved)
      .thenIgnored('completed');
    // A reason no saga gives (a typo) is a mistake in the spec, not an unmet expectation.
    await expect(
      sagaSpec(orderSaga)
        .given([placed])
        .when(placed)
        .thenIgnored('duplicate' as never),
    ).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/^thenIgnored takes one of duplicate-start/),
    });
  });

  it('checks the errors of invalid transitions and unknown instances', async () => {
    await sagaSpec(orderSaga)
      .given([placed])
      .when({ type: 'payment.charged', data: { orderId: 'o-1' } })
      .thenThrows(isSagaTransitionError);
    await sagaSpec(orderSaga)
      .given([])
      .when(reserved)
      .thenThrows(/saga "order" has no instance "o-1"/);
    await sagaSpec(orderSaga).given([]).when(reserved).thenThrows(isSagaUnknownInstanceError);
    // An error code, as the README's errors name them.
    await sagaSpec(orderSaga)
      .given([placed])
      .when({ type: 'payment.charged', data: { orderId: 'o-1' } })
      .thenThrows('SAGA_INVALID_TRANSITION');
    await expect(
      sagaSpec(orderSaga).given([]).when(reserved).thenThrows('SAGA_INVALID_TRANSITION'),
    ).rejects.toThrow(/which does not match the code "SAGA_INVALID_TRANSITION"/);
  });

  it('refuses a matcher of no known kind with INVALID_OPTIONS, before running anything', async () => {
    for (const matcher of [42, {}, null, '']) {
      await expect(
        sagaSpec(orderSaga)
          .given([])
          .when(placed)
          .thenThrows(matcher as never),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it('refuses a misspelt expectation or message key with INVALID_OPTIONS, naming it', async () => {
    // Expected undefined under a misspelt key, the key was compared with nothing and the spec passed.
    await expect(
      sagaSpec(orderSaga)
        .given([])
        .when(placed)
        .then({ complted: undefined } as never),
    ).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(
        /^sagaSpec then has no option "complted": it takes status, data, completed, /,
      ),
    });
    // A misspelt `id` was dropped and a new id used, so a duplicate was not one.
    expect(() =>
      sagaSpec(orderSaga)
        .given([])
        .when({ ...placed, ID: 'm-1' } as never),
    ).toThrow(
      expect.objectContaining({
        code: 'INVALID_OPTIONS',
        message: 'sagaSpec when has no option "ID": it takes type, data, id',
      }),
    );
    expect(() => sagaSpec(orderSaga).given([placed, { timeout: 'payment', id: 'x' } as never])).toThrow(
      expect.objectContaining({
        code: 'INVALID_OPTIONS',
        message: 'sagaSpec given[1] has no option "id": it takes timeout',
      }),
    );
    expect(() => sagaSpec(orderSaga).given(placed as never)).toThrow(
      expect.objectContaining({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(/^sagaSpec given takes an array/),
      }),
    );
  });

  it('fails with an AssertionError when the saga is not as expected', async () => {
    const wrong = sagaSpec(orderSaga).given([placed]).when(reserved).then({ status: 'confirmed' });
    await expect(wrong).rejects.toThrow(AssertionError);
    await expect(wrong).rejects.toThrow(/the saga is not as expected/);
    await expect(sagaSpec(orderSaga).given([placed]).when(reserved).thenIgnored()).rejects.toThrow(
      /but it applied it/,
    );
    await expect(sagaSpec(orderSaga).given([]).when(placed).thenThrows(Error)).rejects.toThrow(
      /but it applied the message/,
    );
    // Awaiting the spec instead of ending it rejects instead of hanging.
    await expect(
      (async () => {
        // @ts-expect-error: the compiler refuses it too (a `then` that is not a promise's)
        await sagaSpec(orderSaga).given([]).when(placed);
      })(),
    ).rejects.toThrow(/not a promise/);
  });

  it('refuses data that would not survive JSON, and gives undo messages ids of their own', async () => {
    const contracts = { 'clock.started': z.object({ id: z.string() }) };
    const dated = defineSaga({
      name: 'dated',
      contracts,
      startedBy: ['clock.started'],
      initial: () => ({ status: 'on', data: { at: new Date() } }),
      id: { 'clock.started': (m) => m.data.id },
      states: { on: {} },
    });
    await sagaSpec(dated)
      .given([])
      .when({ type: 'clock.started', data: { id: 'c' } })
      .thenThrows(isSagaDefinitionError);
    await sagaSpec(dated)
      .given([])
      .when({ type: 'clock.started', data: { id: 'c' } })
      .thenThrows(/data\.at \(a Date\)/);
    const a = undoMessageId('order', 'o-1', 'stock', 1);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(undoMessageId('order', 'o-1', 'stock', 1)).toBe(a);
    // Another instance, another step, the same step recorded again, a step stored without a recording.
    expect(
      new Set([
        a,
        undoMessageId('order', 'o-2', 'stock', 1),
        undoMessageId('order', 'o-1', 'payment', 1),
        undoMessageId('order', 'o-1', 'stock', 2),
        undoMessageId('order', 'o-1', 'stock'),
      ]).size,
    ).toBe(5);
  });

  it('refuses a step recorded with an undo message that could not be sent, as the runtime does', async () => {
    const withUndo = sloppySaga;
    const given = [{ type: 'order.placed', data: { orderId: 'o-1', total: 40 } }] as const;
    // Data its contract refuses (orderId must be a string), a type the bus refuses.
    await sagaSpec(withUndo({ type: 'stock.release', data: { orderId: 42 } }))
      .given(given)
      .when(reserved)
      .thenThrows(
        (error: unknown) =>
          isSagaDefinitionError(error) &&
          isMessageValidationError((error as SagaDefinitionError).cause) &&
          /undo message of step "stock" could not be sent/.test(error.message),
      );
    await sagaSpec(withUndo({ type: 'Stock Release!', data: { orderId: 'o-1' } }))
      .given(given)
      .when(reserved)
      .thenThrows(isSagaDefinitionError);
    // A valid one is accepted.
    await sagaSpec(withUndo({ type: 'stock.release', data: { orderId: 'o-1' } }))
      .given(given)
      .when(reserved)
      .then({ status: 'charging', steps: ['stock'] });
  });

  it('checks what was published as consumers receive it: its JSON form, as createTestHarness records it', async () => {
    const contracts = {
      'order.placed': z.object({ orderId: z.string() }),
      'stock.reserve': z.looseObject({ orderId: z.string() }),
    };
    const dated = defineSaga({
      name: 'dated-send',
      contracts,
      startedBy: ['order.placed'],
      initial: () => ({ status: 'reserving', data: {} }),
      started: (saga) =>
        saga.send('stock.reserve', { orderId: saga.id, requestedAt: new Date(0), note: undefined }),
      id: { 'order.placed': (m) => m.data.orderId },
      states: { reserving: {} },
    });
    const when = sagaSpec(dated)
      .given([])
      .when({ type: 'order.placed', data: { orderId: 'o-1' } });
    await when.then({
      published: [
        { type: 'stock.reserve', data: { orderId: 'o-1', requestedAt: '1970-01-01T00:00:00.000Z' } },
      ],
    });
    // The object the saga passed is not what is sent.
    await expect(
      when.then({
        published: [
          { type: 'stock.reserve', data: { orderId: 'o-1', requestedAt: new Date(0), note: undefined } },
        ],
      }),
    ).rejects.toThrow(AssertionError);
  });
});
