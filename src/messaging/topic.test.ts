import { describe, expect, it } from 'vitest';
import { InvalidTopicError, isInvalidTopicError } from './errors.js';
import { assertGroup, assertMessageType, assertPattern, compilePattern } from './topic.js';

function matching(pattern: string, types: readonly string[]): string[] {
  const matches = compilePattern(pattern);
  return types.filter((type) => matches(type));
}

function thrown(fn: () => void): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

describe('compilePattern', () => {
  const types = ['a', 'a.b', 'a.c', 'a.b.c', 'a.x.b', 'a.x.y.b', 'b', 'x.a.b', 'a.b.b'];

  it('matches an exact pattern against that type only', () => {
    expect(matching('a.b', types)).toEqual(['a.b']);
    expect(matching('a', types)).toEqual(['a']);
  });

  it('makes * match exactly one word', () => {
    expect(matching('a.*', types)).toEqual(['a.b', 'a.c']);
    expect(matching('*', types)).toEqual(['a', 'b']);
    expect(matching('*.b', types)).toEqual(['a.b']);
    expect(matching('a.*.b', types)).toEqual(['a.x.b', 'a.b.b']);
    expect(matching('*.*', types)).toEqual(['a.b', 'a.c']);
  });

  it('makes # alone match every type', () => {
    expect(matching('#', types)).toEqual(types);
  });

  it('makes a trailing # match zero or more words', () => {
    expect(matching('a.#', types)).toEqual(['a', 'a.b', 'a.c', 'a.b.c', 'a.x.b', 'a.x.y.b', 'a.b.b']);
  });

  it('makes a leading # match zero or more words', () => {
    expect(matching('#.b', types)).toEqual(['a.b', 'a.x.b', 'a.x.y.b', 'b', 'x.a.b', 'a.b.b']);
  });

  it('makes a # in the middle match zero or more words', () => {
    expect(matching('a.#.b', types)).toEqual(['a.b', 'a.x.b', 'a.x.y.b', 'a.b.b']);
  });

  it('treats consecutive #s like one', () => {
    expect(matching('a.#.#.b', types)).toEqual(matching('a.#.b', types));
    expect(matching('#.#', types)).toEqual(types);
  });

  it('combines * and #', () => {
    expect(matching('*.#', types)).toEqual(types);
    expect(matching('#.*.b', types)).toEqual(['a.b', 'a.x.b', 'a.x.y.b', 'x.a.b', 'a.b.b']);
    expect(matching('a.*.#', types)).toEqual(['a.b', 'a.c', 'a.b.c', 'a.x.b', 'a.x.y.b', 'a.b.b']);
  });

  it('does not match a word by prefix', () => {
    expect(compilePattern('order.*')('orders.created')).toBe(false);
    expect(compilePattern('order.#')('orders')).toBe(false);
    expect(compilePattern('order')('order.created')).toBe(false);
  });

  it('rejects an invalid pattern', () => {
    expect(() => compilePattern('a..b')).toThrow(InvalidTopicError);
  });
});

describe('assertMessageType', () => {
  it('accepts dot-separated words', () => {
    expect(() => assertMessageType('order.created')).not.toThrow();
    expect(() => assertMessageType('order')).not.toThrow();
    expect(() => assertMessageType('Order-v2.created_at.üñí')).not.toThrow();
  });

  it.each([
    ['empty', ''],
    ['an empty word in the middle', 'a..b'],
    ['a leading dot', '.a'],
    ['a trailing dot', 'a.'],
    ['a * wildcard', 'order.*'],
    ['a # wildcard', 'order.#'],
    ['a wildcard inside a word', 'order.cre*ted'],
    ['a space', 'order created'],
    ['a tab', 'order.\tcreated'],
    ['a newline', 'order.created\n'],
    ['NUL', 'order\u0000placed'],
    ['more than 255 bytes', `a.${'b'.repeat(254)}`],
    ['more than 255 bytes of multi-byte characters', 'é'.repeat(128)],
  ])('rejects %s with INVALID_TOPIC', (_, type) => {
    const error = thrown(() => assertMessageType(type));
    expect(error).toBeInstanceOf(InvalidTopicError);
    expect(isInvalidTopicError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'INVALID_TOPIC', topic: type });
  });

  it('accepts exactly 255 bytes', () => {
    expect(() => assertMessageType('a'.repeat(255))).not.toThrow();
  });

  it('rejects a non-string from untyped callers', () => {
    expect(() => assertMessageType(42 as unknown as string)).toThrow(InvalidTopicError);
  });
});

describe('assertPattern', () => {
  it('accepts words, * and #', () => {
    for (const pattern of ['order.created', 'order.*', '#', 'a.#.b', '*.*', '#.#', 'a.#.#.b']) {
      expect(() => assertPattern(pattern)).not.toThrow();
    }
  });

  it.each([
    ['empty', ''],
    ['an empty word', 'a..b'],
    ['a trailing dot', 'a.#.'],
    ['a wildcard inside a word', 'order.cre*'],
    ['# glued to a word', 'order#'],
    ['**', 'a.**'],
    ['whitespace', 'a. b'],
    ['NUL', 'order.\u0000'],
    ['more than 255 bytes', `#.${'x'.repeat(254)}`],
  ])('rejects %s with INVALID_TOPIC', (_, pattern) => {
    const error = thrown(() => assertPattern(pattern));
    expect(error).toBeInstanceOf(InvalidTopicError);
    expect(error).toMatchObject({ code: 'INVALID_TOPIC', topic: pattern });
  });
});

describe('assertGroup', () => {
  it('accepts letters, digits, _ and -, up to 100 characters', () => {
    for (const group of ['orders', 'Order_Service-2', 'x', 'g'.repeat(100)]) {
      expect(() => assertGroup(group)).not.toThrow();
    }
  });

  it.each([
    ['empty', ''],
    ['a colon', 'orders:audit'],
    ['a dot', 'orders.audit'],
    ['a space', 'orders audit'],
    ['a trailing newline', 'orders\n'],
    ['a wildcard', 'orders*'],
    ['more than 100 characters', 'g'.repeat(101)],
  ])('rejects %s with INVALID_TOPIC', (_, group) => {
    const error = thrown(() => assertGroup(group));
    expect(error).toBeInstanceOf(InvalidTopicError);
    expect(error).toMatchObject({ code: 'INVALID_TOPIC' });
  });
});
