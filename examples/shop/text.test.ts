import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { printable, printableText } from './text.js';

describe('printable text', () => {
  it('takes any visible text, surrogate pairs (emoji) and other scripts included', () => {
    for (const text of ['Ann', 'Zoë Ñandú', '王小明', 'tok_visa', 'a b', '🙂 smile', 'x'.repeat(10)]) {
      expect(printableText(10).safeParse(text).success, text).toBe(true);
    }
  });

  it('refuses control characters and lone surrogates, and keeps the limits it was given', () => {
    for (const text of [
      'a\u0000b',
      'line\nbreak',
      'tab\there',
      '\u001b[31m',
      'del\u007f',
      'c1\u0085',
      '\ud800',
      'x\udc00',
      '🙂'.slice(0, 1),
    ]) {
      expect(printableText(200).safeParse(text).success, JSON.stringify(text)).toBe(false);
    }
    expect(printableText(3).safeParse('').success).toBe(false);
    expect(printableText(3).safeParse('abcd').success).toBe(false);
  });

  it('checks what a trimming schema kept: surrounding line breaks are trimmed, not refused', () => {
    const name = printable(z.string().trim().min(1).max(20));
    expect(name.parse('  Ann\n')).toBe('Ann');
    expect(name.safeParse('An\nn').success).toBe(false);
  });
});
