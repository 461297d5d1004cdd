import { describe, expect, it } from 'vitest';
import { headerLines } from './header-lines.js';

describe('headerLines', () => {
  it('counts the lines naming a header, whatever their case', () => {
    const raw = ['Host', 'h', 'Idempotency-Key', 'K', 'content-type', 'x', 'idempotency-key', 'K'];
    expect(headerLines(raw, 'idempotency-key')).toBe(2);
    expect(headerLines(raw, 'Idempotency-Key')).toBe(2);
    expect(headerLines(raw, 'host')).toBe(1);
    expect(headerLines(raw, 'accept')).toBe(0);
  });

  it('reads names only, never values', () => {
    expect(headerLines(['x-note', 'idempotency-key', 'idempotency-key', 'K, L'], 'idempotency-key')).toBe(1);
  });
});
