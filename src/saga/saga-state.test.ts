import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { sagaSpec } from '../testing/saga-spec.js';
import { defineSaga } from './define-saga.js';
import { isSagaDefinitionError } from './errors.js';
import { SagaContext } from './saga-context.js';
import { jsonProblem, parseSagaState, undoMessageId } from './saga-state.js';

describe('jsonProblem: saga data must read back deeply equal from JSON', () => {
  it('accepts plain JSON data', () => {
    const data = { a: 1, b: [0, -1.5, 'x', null, true, { c: [] }], d: {}, e: '' };
    expect(jsonProblem(data, 'data')).toBeUndefined();
    expect(jsonProblem(null, 'data')).toBeUndefined();
  });

  it('refuses an undefined member (JSON drops it) and -0 (JSON reads 0), naming where', () => {
    expect(jsonProblem({ u: undefined }, 'data')).toMatch(/^data\.u \(undefined/);
    expect(jsonProblem({ n: { m: -0 } }, 'data')).toMatch(/^data\.n\.m \(-0/);
    expect(jsonProblem([1, -0], 'data')).toMatch(/^data\[1\] \(-0/);
    expect(jsonProblem(-0, 'data')).toMatch(/^data \(-0/);
  });

  it('refuses what comes back different for any other reason', () => {
    const withExtra = Object.assign([1, 2], { extra: true });
    expect(jsonProblem({ list: withExtra }, 'data')).toBe('data (does not read back equal from JSON)');
    expect(jsonProblem({ [Symbol('s')]: 1 }, 'data')).toBe('data (does not read back equal from JSON)');
    expect(jsonProblem({ o: Object.create(null) }, 'data')).toBe('data.o (an object without prototype)');
    expect(jsonProblem({ at: new Date(0) }, 'data')).toBe('data.at (a Date)');
    expect(jsonProblem({ x: Number.NaN }, 'data')).toBe('data.x (NaN)');
    expect(jsonProblem([1, undefined, 3], 'data')).toMatch(/^data\[1\] \(a undefined\)/);
  });

  it('refuses such data in a saga with SagaDefinitionError', async () => {
    const contracts = { 'thing.started': z.object({ id: z.string() }) };
    const sagaWith = (data: unknown) =>
      defineSaga({
        name: 'lossy',
        contracts,
        startedBy: ['thing.started'],
        initial: () => ({ status: 'on', data }),
        id: { 'thing.started': (m) => m.data.id },
        states: { on: {} },
      });
    const start = { type: 'thing.started', data: { id: 't' } } as const;
    await sagaSpec(sagaWith({ u: undefined }))
      .given([])
      .when(start)
      .thenThrows(isSagaDefinitionError);
    await sagaSpec(sagaWith({ n: -0 }))
      .given([])
      .when(start)
      .thenThrows(/data\.n \(-0/);
    await sagaSpec(sagaWith({ n: 0 }))
      .given([])
      .when(start)
      .then({ status: 'on', data: { n: 0 } });
  });
});

describe('undo message ids', () => {
  it('keeps the id of a step stored without a recording, and numbers the next recordings after it', () => {
    const stored = JSON.stringify({
      status: 'charging',
      data: {},
      timeouts: {},
      undo: [{ step: 'stock', type: 'stock.release', data: { orderId: 'o-1' } }],
    });
    const state = parseSagaState('order', 'o-1', stored);
    expect(state.recorded).toBe(0);
    const saga = new SagaContext('order', 'o-1', new Set(['charging']), state);
    saga.compensate().done('stock', { type: 'stock.release', data: { orderId: 'o-1' } } as never);
    expect(saga.effects).toMatchObject([{ options: { id: undoMessageId('order', 'o-1', 'stock') } }]);
    expect(saga.undo).toMatchObject([{ step: 'stock', recording: 1 }]);
    expect(saga.recorded).toBe(1);
  });
});
