import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { sagaSpec } from '../testing/saga-spec.js';
import { defineSaga } from './define-saga.js';
import { orderContracts, orderSaga } from './fixtures/order-saga.js';

const contracts = {
  'job.started': z.object({ jobId: z.string() }),
  'job.finished': z.object({ jobId: z.string(), ok: z.boolean() }),
};

describe('defineSaga', () => {
  it('takes one-line handlers that return the chained saga', async () => {
    const oneLiners = defineSaga({
      name: 'job',
      contracts,
      startedBy: ['job.started'],
      initial: (m) => ({ status: 'running', data: { jobId: m.data.jobId } }),
      started: (saga) => saga.schedule('finish', { delayMs: 1000 }),
      id: { 'job.started': (m) => m.data.jobId, 'job.finished': (m) => m.data.jobId },
      states: {
        running: { 'job.finished': (saga) => saga.cancelTimeout('finish').to('done').complete() },
        done: {},
      },
    });
    await sagaSpec(oneLiners)
      .given([{ type: 'job.started', data: { jobId: 'j-1' } }])
      .when({ type: 'job.finished', data: { jobId: 'j-1', ok: true } })
      .then({ status: 'done', completed: true, published: [] });
  });

  it('types statuses from states, data from initial, messages from contracts', () => {
    const saga = defineSaga({
      name: 'job',
      contracts,
      startedBy: ['job.started'],
      initial: (m) => ({ status: 'running', data: { jobId: m.data.jobId, tries: 0 } }),
      id: { 'job.started': (m) => m.data.jobId, 'job.finished': (m) => m.data.jobId },
      states: {
        running: {
          'job.finished': (saga, m) => {
            expectTypeOf(m.data).toEqualTypeOf<{ jobId: string; ok: boolean }>();
            expectTypeOf(saga.state.status).toEqualTypeOf<'running' | 'done'>();
            expectTypeOf(saga.state.data).toEqualTypeOf<{ jobId: string; tries: number }>();
            // @ts-expect-error: 'finished' is not a declared status
            saga.to('finished');
            // @ts-expect-error: 'job.cancelled' is not a message type of the contracts
            saga.publish('job.cancelled', { jobId: m.data.jobId });
            // @ts-expect-error: the data of 'job.finished' needs ok
            saga.publish('job.finished', { jobId: m.data.jobId });
            // @ts-expect-error: data keeps its type
            saga.set({ jobId: 'j', tries: 'many' });
            saga.to('done', { jobId: m.data.jobId, tries: 1 }).complete();
          },
          'saga.job.timeout': (_saga, m) => {
            expectTypeOf(m.data).toEqualTypeOf<{ readonly sagaId: string; readonly name: string }>();
          },
        },
        done: {},
      },
    });
    expect(saga.handledTypes).toEqual(['job.started', 'job.finished', 'saga.job.timeout']);
    // Compiled, never run: what the compiler refuses.
    const refused = () => [
      defineSaga({
        name: 'job',
        contracts,
        startedBy: ['job.started'],
        initial: () => ({ status: 'running', data: {} }),
        id: { 'job.started': (m) => m.data.jobId },
        states: {
          running: {
            // @ts-expect-error: a handler for a message type not in the contracts
            'job.vanished': () => {},
          },
        },
      }),
      defineSaga({
        name: 'job',
        contracts,
        // @ts-expect-error: a start type not in the contracts
        startedBy: ['job.queued'],
        // @ts-expect-error: the initial status must be declared in states
        initial: () => ({ status: 'pending', data: {} }),
        id: {},
        states: { running: {} },
      }),
    ];
    expect(typeof refused).toBe('function');
    expect(orderSaga.timeoutType).toBe('saga.order.timeout');
  });

  it('started by several types: the start message narrows by its type', async () => {
    const saga = defineSaga({
      name: 'job',
      contracts,
      startedBy: ['job.started', 'job.finished'],
      initial: (m) => {
        expectTypeOf(m.type).toEqualTypeOf<'job.started' | 'job.finished'>();
        // Without a distributive SagaMessage, m.data is a union not tied to m.type: `ok` would not compile.
        return m.type === 'job.finished'
          ? { status: m.data.ok ? 'done' : 'failed', data: { early: true } }
          : { status: 'running', data: { early: false } };
      },
      started: (s, m) => {
        if (m.type === 'job.finished') {
          expectTypeOf(m.data).toEqualTypeOf<{ jobId: string; ok: boolean }>();
          s.complete();
        }
      },
      id: { 'job.started': (m) => m.data.jobId, 'job.finished': (m) => m.data.jobId },
      states: { running: { 'job.finished': (s) => s.to('done').complete() }, done: {}, failed: {} },
    });
    await sagaSpec(saga)
      .given([])
      .when({ type: 'job.finished', data: { jobId: 'j-1', ok: false } })
      .then({ status: 'failed', data: { early: true }, completed: true });
    await sagaSpec(saga)
      .given([{ type: 'job.finished', data: { jobId: 'j-1', ok: true } }])
      .when({ type: 'job.started', data: { jobId: 'j-1' } })
      .thenIgnored('completed');
  });

  it('refuses a handled type without correlation, a bad name, an unknown policy', () => {
    const base = {
      name: 'job',
      contracts,
      startedBy: ['job.started'] as const,
      initial: () => ({ status: 'running' as const, data: {} }),
      states: { running: { 'job.finished': () => {} } },
    };
    expect(() => defineSaga({ ...base, id: { 'job.started': (m) => m.data.jobId } })).toThrow(
      /handles "job.finished" but has no id for it/,
    );
    const id = { 'job.started': () => 'x', 'job.finished': () => 'x' };
    expect(() => defineSaga({ ...base, id, name: 'has space' })).toThrow(/a saga name must be/);
    expect(() => defineSaga({ ...base, id, onUnknown: 'drop' as never })).toThrow(
      "onUnknown must be 'dead-letter' or 'ignore'",
    );
    expect(() => defineSaga({ ...base, id, startedBy: [] })).toThrow(/at least one message type/);
    expect(Object.keys(orderContracts)).toContain('stock.release');
  });

  it('refuses an option it does not read, naming it, rather than keep the default policy', () => {
    const base = {
      name: 'job',
      contracts,
      startedBy: ['job.started'] as const,
      initial: () => ({ status: 'running' as const, data: {} }),
      id: { 'job.started': () => 'x', 'job.finished': () => 'x' },
      states: { running: { 'job.finished': () => {} } },
    };
    // `onComplete` for onCompleted: a message for a completed instance was dropped, not dead-lettered.
    expect(() => defineSaga({ ...base, onComplete: 'dead-letter' } as never)).toThrow(
      expect.objectContaining({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(
          /^defineSaga has no option "onComplete": it takes name, contracts, startedBy, /,
        ),
      }),
    );
    expect(() => defineSaga({ ...base, id: { ...base.id, 'job.finshed': () => 'x' } } as never)).toThrow(
      /has an id for "job.finshed" but neither starts with nor handles it/,
    );
    expect(() => defineSaga({ ...base, started: 'send' } as never)).toThrow(/started must be a function/);
    expect(() => defineSaga({ ...base, id: undefined } as never)).toThrow(/needs id:/);
    expect(() => defineSaga(undefined as never)).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    );
  });
});
