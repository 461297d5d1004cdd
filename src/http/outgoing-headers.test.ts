import { describe, expect, it } from 'vitest';
import { outgoingHeaders } from './outgoing-headers.js';

describe('outgoingHeaders', () => {
  it('keeps a header named __proto__ (from JSON.parse, say) as an own header, not as the prototype', () => {
    const call = JSON.parse('{"__proto__": "yes", "X-A": "1"}') as Record<string, string>;
    const headers = outgoingHeaders(undefined, undefined, call);
    expect(Object.keys(headers)).toEqual(expect.arrayContaining(['__proto__', 'x-a']));
    expect(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value).toBe('yes');
    expect(Object.getPrototypeOf(headers)).toBe(Object.prototype);
  });
});
