import { describe, expect, it } from 'vitest';
import { copyOfSnapshot, jsonOfSnapshot, snapshotData } from './data-snapshot.js';
import { roundTrip, shape } from './fixtures/json-round-trip.js';

let types = 0;

/** A message type of its own, published with `sample` until its shape is surely planned. */
function plannedType(sample: () => unknown): string {
  const type = `plan.case${types++}`;
  for (let i = 0; i < 100; i++) snapshotData(type, sample());
  return type;
}

const order = () => ({
  orderId: 'o-1',
  customerId: 'c-7',
  items: [
    { sku: 'a', qty: 2 },
    { sku: 'b', qty: 1 },
  ],
  total: 59.9,
  note: null as unknown,
  paid: false,
});

const VARIANTS: [string, () => unknown][] = [
  ['the planned shape itself', order],
  ['a member left undefined (the copy finishes key by key)', () => ({ ...order(), customerId: undefined })],
  ['a function and a symbol member', () => ({ ...order(), orderId: () => 1, total: Symbol('t') })],
  ['a symbol key beside the planned keys', () => ({ ...order(), [Symbol('k')]: 1 })],
  ['symbol keys on nested objects', () => ({ ...order(), items: [{ sku: 'a', qty: 1, [Symbol('n')]: 2 }] })],
  [
    'keys in another order',
    () => {
      const { total, ...rest } = order();
      return { total, ...rest };
    },
  ],
  ['a key missing', () => ({ orderId: 'o', customerId: 'c', items: [], total: 1, note: null })],
  ['an extra key', () => ({ ...order(), extra: { deep: [1] } })],
  [
    'NaN, Infinity and -0 in number members',
    () => ({ ...order(), total: -0, items: [{ sku: 'a', qty: Number.NaN }] }),
  ],
  ['a container where the plan has a string', () => ({ ...order(), orderId: { id: 'x', at: [1, 2] } })],
  ['a primitive or null where the plan has a container', () => ({ ...order(), items: null })],
  [
    'elements of another shape',
    () => ({ ...order(), items: [{ sku: 'a', qty: 1 }, { other: { x: 1 } }, 3, null, [1]] }),
  ],
  [
    'a hole and undefined in an array of objects',
    () => {
      // A hole, which Biome would not let a literal hold.
      const items: unknown[] = [undefined];
      items[2] = { sku: 'a', qty: 1 };
      return { ...order(), items };
    },
  ],
  ['a Date where the plan has a string', () => ({ ...order(), orderId: new Date(0) })],
  ['a Date where the plan has a container', () => ({ ...order(), items: new Date(0) })],
  [
    'a class instance element',
    () => ({
      ...order(),
      items: [
        new (class Item {
          sku = 'a';
        })(),
      ],
    }),
  ],
  ['a null-prototype object', () => Object.assign(Object.create(null) as object, order())],
  ['an own toJSON', () => ({ ...order(), toJSON: () => 'replaced' })],
  [
    'an array with another prototype',
    () => ({ ...order(), items: Object.setPrototypeOf([1], Object.prototype) }),
  ],
  ['something else entirely', () => [1, 'two', { three: 3 }]],
  ['a string', () => 'plain'],
];

describe('copies made by shape plans (memory transport) decode as the JSON encoding would', () => {
  it.each(VARIANTS)('%s', (_name, variant) => {
    const type = plannedType(order);
    const snapshot = snapshotData(type, variant());
    const expected = roundTrip(variant());
    const first = copyOfSnapshot(snapshot);
    expect(first).toEqual(expected);
    expect(shape(first)).toEqual(shape(expected));
    expect(JSON.parse(jsonOfSnapshot(snapshot))).toEqual(expected);
    // Each delivery has its own copy all the way down: spoiling one leaves the next pristine.
    spoil(first);
    expect(shape(copyOfSnapshot(snapshot))).toEqual(shape(expected));
  });

  it('plans keys that need escaping in code, and copies them as they are', () => {
    const odd = () => ({
      'quote"and\\backslash': 1,
      'line\u2028separator\nnewline': { '\u0000nul': 'x', "'single'": [{ '`tick`': true }] },
      '${template}': null,
      'a b-c.d': 'e',
      constructor: 'c',
    });
    const original = globalThis.Function;
    let compiled = 0;
    globalThis.Function = new Proxy(original, {
      construct(target, args) {
        const made = Reflect.construct(target, args) as object;
        compiled++;
        return made;
      },
    });
    let type: string;
    try {
      type = plannedType(odd);
    } finally {
      globalThis.Function = original;
    }
    // The plan's code was made (not refused by the parser, which would leave the generic path).
    expect(compiled).toBe(1);
    const copy = copyOfSnapshot(snapshotData(type, odd()));
    expect(shape(copy)).toEqual(shape(roundTrip(odd())));
  });

  it('leaves the publisher out: changing the data after the snapshot changes no copy', () => {
    const type = plannedType(order);
    const data = order();
    const snapshot = snapshotData(type, data);
    data.items[0]!.qty = 99;
    data.orderId = 'changed';
    expect(copyOfSnapshot(snapshot)).toEqual(roundTrip(order()));
  });

  it('reads each member once, as the JSON encoding does', () => {
    const type = plannedType(order);
    let reads = 0;
    const data = {
      ...order(),
      get customerId() {
        reads++;
        return undefined;
      },
    };
    const snapshot = snapshotData(type, data);
    expect(reads).toBe(1);
    expect(copyOfSnapshot(snapshot)).toEqual(roundTrip({ ...order(), customerId: undefined }));
  });

  it('takes the generic path while Object.prototype is polluted', () => {
    const type = plannedType(order);
    const proto = Object.prototype as Record<string, unknown>;
    proto.pollutedForPlanTest = { leaked: true };
    try {
      const copy = copyOfSnapshot(snapshotData(type, order())) as Record<string, unknown>;
      expect(Reflect.ownKeys(copy)).toEqual(Object.keys(order()));
      expect(Reflect.ownKeys((copy.items as object[])[0]!)).toEqual(['sku', 'qty']);
    } finally {
      delete proto.pollutedForPlanTest;
    }
  });

  it('keeps rejecting what no transport could send', () => {
    const type = plannedType(order);
    const cyclic: Record<string, unknown> = order();
    cyclic.note = cyclic;
    expect(() => snapshotData(type, cyclic)).toThrow(
      expect.objectContaining({ code: 'MESSAGE_NOT_SERIALIZABLE' }),
    );
    expect(() => snapshotData(type, { ...order(), total: 1n })).toThrow(
      expect.objectContaining({ code: 'MESSAGE_NOT_SERIALIZABLE' }),
    );
  });

  it('compiles a shape once, keeps it through odd messages, and replans only after a run of another shape', () => {
    const original = globalThis.Function;
    let compilations = 0;
    globalThis.Function = new Proxy(original, {
      construct(target, args) {
        compilations++;
        return Reflect.construct(target, args) as object;
      },
    });
    try {
      const type = `plan.policy${types++}`;
      const other = () => ({ id: 'x', lines: [{ n: 1 }] });
      for (let i = 0; i < 200; i++) snapshotData(type, order());
      expect(compilations).toBe(1);
      for (let i = 0; i < 200; i++) snapshotData(type, i % 10 === 0 ? other() : order());
      expect(compilations).toBe(1);
      for (let i = 0; i < 200; i++) snapshotData(type, other());
      expect(compilations).toBe(2);
      expect(copyOfSnapshot(snapshotData(type, other()))).toEqual(other());
    } finally {
      globalThis.Function = original;
    }
  });

  it('stays right for a type whose shape keeps changing', () => {
    const type = `plan.changing${types++}`;
    for (let i = 0; i < 300; i++) {
      const data = {
        [`k${i % 7}`]: i,
        list: i % 3 === 0 ? [{ a: i }] : [i, String(i)],
        n: i % 5 ? null : { m: i },
      };
      expect(copyOfSnapshot(snapshotData(type, data))).toEqual(roundTrip(data));
    }
  });
});

/** Mutates every container of `value` in place. */
function spoil(value: unknown): void {
  if (typeof value !== 'object' || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) spoil(item);
    value.push('spoiled');
    return;
  }
  const object = value as Record<string, unknown>;
  for (const key of Object.keys(object)) {
    spoil(object[key]);
    object[key] = 'spoiled';
  }
  object.spoiled = true;
}
