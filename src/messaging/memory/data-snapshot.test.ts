import { describe, expect, it } from 'vitest';
import { copyOfSnapshot, jsonOfSnapshot, snapshotData } from './data-snapshot.js';
import { roundTrip, shape } from './fixtures/json-round-trip.js';

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
}

const CASES: [string, unknown][] = [
  ['flat object', { a: 'x', b: 2, c: true, d: null }],
  ['nested arrays and objects', { items: [{ sku: 'a', qty: 1 }, [1, [2, { z: 3 }]]], total: 9.5 }],
  ['symbol keys beside plain members', { a: 1, [Symbol('k')]: 2, nested: { [Symbol.for('n')]: 3, b: 4 } }],
  ['only a symbol key', { [Symbol('only')]: 1 }],
  ['symbol, function and undefined members', { s: Symbol('s'), f: () => 1, u: undefined, keep: 1 }],
  ['the same in an array', [Symbol('s'), () => 1, undefined, 2]],
  ['NaN, Infinity and -0', { n: Number.NaN, i: Number.POSITIVE_INFINITY, z: -0, list: [-0, Number.NaN] }],
  [
    'Date, Map, Set and a class instance',
    { at: new Date(0), m: new Map([[1, 2]]), s: new Set([1]), p: new Point(1, 2) },
  ],
  ['null prototype', Object.assign(Object.create(null) as object, { a: 1 })],
  ['own __proto__ key', JSON.parse('{"__proto__": {"x": 1}, "a": 1}')],
  ['toJSON', { a: { toJSON: () => 'replaced' } }],
  ['numeric-like keys keep JSON order', { b: 1, 2: 'two', a: 3, 1: 'one' }],
  ['lone surrogates and NUL', { s: 'a\uD800b\u0000c' }],
  ['a string at the top', 'plain'],
  ['undefined at the top', undefined],
  ['deep nesting', JSON.parse(`${'{"a":'.repeat(100)}1${'}'.repeat(100)}`)],
];

describe('data snapshots (memory transport) decode as the JSON encoding would', () => {
  it.each(CASES)('%s', (_name, data) => {
    const snapshot = snapshotData('t.x', data);
    const expected = roundTrip(data);
    const copy = copyOfSnapshot(snapshot);
    expect(copy).toEqual(expected);
    expect(shape(copy)).toEqual(shape(expected));
    expect(JSON.parse(jsonOfSnapshot(snapshot))).toEqual(expected);
  });

  it('reads an array length once, as JSON does, when an element getter grows or shrinks the array', () => {
    const shrinking = () => {
      const list: unknown[] = ['x', 1, 2];
      Object.defineProperty(list, 0, {
        enumerable: true,
        get: () => {
          list.length = 1;
          return 'x';
        },
      });
      return { a: list };
    };
    const growing = () => {
      const list: unknown[] = ['x', 2];
      Object.defineProperty(list, 0, {
        enumerable: true,
        get: () => {
          list.push(7, 8);
          return 'x';
        },
      });
      return { a: list };
    };
    for (const make of [shrinking, growing]) {
      const expected = roundTrip(make());
      // Many publishes, so that the per-shape copier is compiled and used too.
      for (let i = 0; i < 40; i++) expect(copyOfSnapshot(snapshotData('t.getter', make()))).toEqual(expected);
    }
  });

  it('leaves out keys a polluted Object.prototype lends, as JSON does', () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto.pollutedForTest = { leaked: true };
    try {
      const copy = copyOfSnapshot(snapshotData('t.x', { a: { b: 1 } }));
      expect(Object.hasOwn(copy as object, 'pollutedForTest')).toBe(false);
      expect(Object.hasOwn((copy as { a: object }).a, 'pollutedForTest')).toBe(false);
      expect(Reflect.ownKeys(copy as object)).toEqual(['a']);
    } finally {
      delete proto.pollutedForTest;
    }
  });

  it('gives every delivery its own copy, untouched by the publisher or by earlier deliveries', () => {
    const data = { items: [{ qty: 1 }], total: 1 };
    const snapshot = snapshotData('t.x', data);
    data.items[0]!.qty = 99;
    data.total = 99;
    const first = copyOfSnapshot(snapshot) as typeof data;
    first.items[0]!.qty = 5;
    first.items.push({ qty: 7 });
    expect(copyOfSnapshot(snapshot)).toEqual({ items: [{ qty: 1 }], total: 1 });
  });

  it('rejects at publish what no transport could send', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => snapshotData('t.x', { n: 1n })).toThrow(
      expect.objectContaining({ code: 'MESSAGE_NOT_SERIALIZABLE' }),
    );
    expect(() => snapshotData('t.x', cyclic)).toThrow(
      expect.objectContaining({ code: 'MESSAGE_NOT_SERIALIZABLE' }),
    );
  });
});
