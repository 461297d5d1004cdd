import { describe, expect, it } from 'vitest';
import { nameUuid } from './name-uuid.js';

describe('nameUuid', () => {
  it('gives the same version-8 UUID for the same parts, another for other parts', () => {
    const id = nameUuid('ferry-saga-undo', 'order', 'o-1', 'stock');
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(nameUuid('ferry-saga-undo', 'order', 'o-1', 'stock')).toBe(id);
    expect(nameUuid('ferry-saga-undo', 'order', 'o-1', 'payment')).not.toBe(id);
    // Parts are kept apart: no two splits of the same text collide.
    expect(nameUuid('ab', 'c')).not.toBe(nameUuid('a', 'bc'));
  });
});
