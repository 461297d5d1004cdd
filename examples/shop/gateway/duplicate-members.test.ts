import { describe, expect, it } from 'vitest';
import { firstDuplicateMember } from './duplicate-members.js';

describe('firstDuplicateMember', () => {
  it.each([
    ['{"a":1,"a":2}', 'a'],
    ['{"items":[{"quantity":1,"quantity":999}]}', 'quantity'],
    ['{"a":1,"\\u0061":2}', 'a'],
    ['{"x":{"a":1},"y":[{"b":1,"c":{"d":1,"d":2}}]}', 'd'],
    ['{"a":"}","b":{"c":"{\\"a\\":1,"},"b":2}', 'b'],
    [' { "k" : 1 , "k" : 1 } ', 'k'],
  ])('finds the name repeated in %s', (json, name) => {
    expect(firstDuplicateMember(json)).toBe(name);
  });

  it.each([
    '{"a":1,"b":2}',
    '{"a":{"a":{"a":1}}}',
    '[{"a":1},{"a":2}]',
    '{"a":["a","a"],"b":"a"}',
    '{"a\\"":1,"a":2}',
    '{}',
    '[]',
    '"a"',
    '12',
  ])('finds none in %s', (json) => {
    expect(firstDuplicateMember(json)).toBeUndefined();
  });

  it('scans a body nested 100,000 deep without overflowing the stack', () => {
    expect(firstDuplicateMember(`${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`)).toBeUndefined();
    expect(firstDuplicateMember(`${'{"a":'.repeat(100_000)}{"b":1,"b":2}${'}'.repeat(100_000)}`)).toBe('b');
  });
});
