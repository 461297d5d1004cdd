import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical-json.js';

const canonical = (text: string) => canonicalJson(JSON.parse(text));

describe('canonicalJson', () => {
  it('spells the same data one way: members sorted at every level, no whitespace', () => {
    expect(canonical('{"userId":"u","items":[{"quantity":1,"productId":"tea"}]}')).toBe(
      '{"items":[{"productId":"tea","quantity":1}],"userId":"u"}',
    );
    expect(canonical(' { "b" : 1.0 , "a" : "\\u0041" } ')).toBe('{"a":"A","b":1}');
    expect(canonical('{"b":{"d":[],"c":{}},"a":null}')).toBe('{"a":null,"b":{"c":{},"d":[]}}');
    for (const scalar of ['null', 'true', '0', '-1.5e-7', '"x"', '[]', '{}']) {
      expect(canonical(scalar)).toBe(JSON.stringify(JSON.parse(scalar)));
    }
  });

  it('keeps arrays in their order, and tells any other difference apart', () => {
    expect(canonical('[1,2]')).not.toBe(canonical('[2,1]'));
    expect(canonical('{"items":[{"id":"a"},{"id":"b"}]}')).not.toBe(
      canonical('{"items":[{"id":"b"},{"id":"a"}]}'),
    );
    expect(canonical('{"a":1}')).not.toBe(canonical('{"a":"1"}'));
    expect(canonical('{"a":1}')).not.toBe(canonical('{"a":1,"b":null}'));
    expect(canonical('{"a":[1]}')).not.toBe(canonical('{"a":1}'));
    // Names and strings are escaped: no member can pass for two.
    expect(canonical('{"a\\",\\"b":1}')).not.toBe(canonical('{"a":",","b":1}'));
  });

  it('keeps a member named __proto__ as data', () => {
    expect(canonical('{"__proto__":{"x":1},"a":2}')).toBe('{"__proto__":{"x":1},"a":2}');
  });

  it('reads a body nested far deeper than the stack would allow', () => {
    const depth = 100_000;
    const nested = JSON.parse(`${'{"a":['.repeat(depth)}1${']}'.repeat(depth)}`);
    const text = canonicalJson(nested);
    expect(text?.length).toBe(depth * 8 + 1);
    expect(text?.startsWith('{"a":[{"a":[')).toBe(true);
  });

  it('is undefined for what JSON.parse never makes', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const shared = { x: 1 };
    for (const value of [
      undefined,
      () => 1,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      10n,
      Symbol('s'),
      new Date(0),
      Buffer.from('{}'),
      new Map(),
      { a: undefined },
      [1, undefined],
      new Array(3),
      cycle,
      [shared, shared],
    ]) {
      expect(canonicalJson(value)).toBeUndefined();
    }
    expect(canonicalJson(Object.assign(Object.create(null), { b: 1, a: 2 }))).toBe('{"a":2,"b":1}');
  });
});
