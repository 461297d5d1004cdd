import { describe, expect, it } from 'vitest';
import { describeValue } from './describe-value.js';

/** [1, <hole>, 3] */
function holey(): unknown[] {
  const array = [1, 2, 3];
  delete array[1];
  return array;
}

describe('describeValue', () => {
  it.each([
    ['a string, quoted', 'x', '"x"'],
    ['a string with a line break and NUL, escaped', 'a\n\u0000', '"a\\n\\u0000"'],
    ['a bigint', 10n, '10n'],
    ['a number', 1.5, '1.5'],
    ['NaN', Number.NaN, 'NaN'],
    ['a boolean', false, 'false'],
    ['null', null, 'null'],
    ['undefined', undefined, 'undefined'],
    ['an array, with its items', [200, 'x', null], '[200, "x", null]'],
    ['a hole in an array', holey(), '[1, empty, 3]'],
    ['an array in an array, by kind', [[1]], '[an array]'],
    ['an object', { password: 'secret' }, 'an object'],
    ['an object without a prototype', Object.create(null), 'an object'],
    [
      'an object whose toString throws',
      {
        toString: () => {
          throw new Error('boom');
        },
      },
      'an object',
    ],
    [
      'a function, without its text',
      function secret() {
        return 'secret';
      },
      'a function',
    ],
    ['a symbol', Symbol('s'), 'a symbol'],
  ])('describes %s', (_, value, described) => {
    expect(describeValue(value)).toBe(described);
  });

  it('cuts a long string or array at 80 characters, without copying all of it', () => {
    const text = describeValue('x'.repeat(1_000_000));
    expect(text).toHaveLength(80);
    expect(text.endsWith('...')).toBe(true);
    const list = describeValue(Array.from({ length: 100_000 }, (_, i) => i));
    expect(list).toHaveLength(80);
    expect(list.startsWith('[0, 1, 2')).toBe(true);
  });

  it('never throws: an array whose item getter throws, a revoked proxy', () => {
    const array = [1];
    Object.defineProperty(array, 0, {
      get() {
        throw new Error('boom');
      },
    });
    expect(describeValue(array)).toBe('an array');
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    expect(describeValue(proxy)).toBe('an object');
  });
});
