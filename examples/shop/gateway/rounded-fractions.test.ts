import { describe, expect, it } from 'vitest';
import { firstRoundedFraction } from './rounded-fractions.js';

describe('firstRoundedFraction', () => {
  it.each([
    ['{"quantity":0.99999999999999999}', '0.99999999999999999'],
    ['{"items":[{"quantity":1},{"quantity":2.9999999999999999}]}', '2.9999999999999999'],
    ['{"price":99.999999999999999}', '99.999999999999999'],
    ['{"q":1.0000000000000001}', '1.0000000000000001'],
    ['[-4.00000000000000001]', '-4.00000000000000001'],
    ['{"q":1.00000000000000001e2}', '1.00000000000000001e2'],
    ['{"q":1e-400}', '1e-400'],
  ])('finds a fraction JSON.parse rounds to a whole number in %s', (json, literal) => {
    expect(Number.isInteger(JSON.parse(literal))).toBe(true);
    expect(firstRoundedFraction(json)).toBe(literal);
  });

  it.each([
    '{"quantity":1,"price":900}',
    '{"quantity":1.5}', // a fraction kept as one: the schema refuses it
    '{"q":2.0,"r":1.50e1,"s":0.000,"t":-0,"u":1e3,"v":12.5e-1}',
    '{"name":"0.99999999999999999","x":"\\"1.00000000000000001"}', // text, not numbers
  ])('reports nothing else in %s', (json) => {
    expect(firstRoundedFraction(json)).toBeUndefined();
  });
});
