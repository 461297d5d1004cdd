import { describe, expect, it } from 'vitest';
import { cutReason, cutText, MAX_REASON_CHARS } from './dead-letter-reason.js';
import { isWellFormed } from './well-formed.js';

describe('cutText', () => {
  it('keeps text of at most 4,000 UTF-16 units as it is', () => {
    const text = 'a'.repeat(MAX_REASON_CHARS);
    expect(cutText(text)).toBe(text);
    expect(cutText('')).toBe('');
  });

  it('cuts longer text to 3,999 units and an ellipsis', () => {
    expect(cutText('a'.repeat(MAX_REASON_CHARS + 1))).toBe(`${'a'.repeat(3999)}…`);
    expect(cutText('é'.repeat(10_000))).toBe(`${'é'.repeat(3999)}…`);
  });

  it('never leaves half of a surrogate pair', () => {
    for (let at = 3995; at <= 4001; at++) {
      const text = `${'a'.repeat(at)}😀${'b'.repeat(5000)}`;
      const cut = cutText(text);
      expect(cut.length, String(at)).toBeLessThanOrEqual(MAX_REASON_CHARS);
      expect(isWellFormed(cut), String(at)).toBe(true);
      expect(cut.endsWith('…')).toBe(true);
      expect(text.startsWith(cut.slice(0, -1))).toBe(true);
    }
  });
});

describe('cutReason', () => {
  it('cuts message and stack, and returns a short reason itself', () => {
    const short = { kind: 'handler-error', message: 'no', stack: 'Error: no' } as const;
    expect(cutReason(short)).toBe(short);
    expect(cutReason({ kind: 'timeout', message: 'm'.repeat(5000), stack: 's'.repeat(5000) })).toEqual({
      kind: 'timeout',
      message: `${'m'.repeat(3999)}…`,
      stack: `${'s'.repeat(3999)}…`,
    });
    expect(cutReason({ kind: 'malformed', message: 'm'.repeat(5000) })).toEqual({
      kind: 'malformed',
      message: `${'m'.repeat(3999)}…`,
    });
  });

  it('carries a lone surrogate as U+FFFD, as RabbitMQ does, on every transport', () => {
    expect(cutText('bad \ud800 input')).toBe('bad \ufffd input');
    expect(cutText('pair \ud83d\ude00 kept')).toBe('pair \ud83d\ude00 kept');
  });
});
