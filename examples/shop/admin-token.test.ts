import { describe, expect, it } from 'vitest';
import { isAdmin } from './admin-token.js';

describe('isAdmin', () => {
  const token = 's3cret-Token';

  it.each(['Bearer s3cret-Token', 'bearer s3cret-Token', 'BEARER s3cret-Token', 'Bearer  s3cret-Token'])(
    'opens to %j (the scheme in any case)',
    (authorization) => {
      expect(isAdmin(authorization, token)).toBe(true);
    },
  );

  it.each([
    undefined,
    '',
    'Bearer',
    'Bearer ',
    's3cret-Token',
    'Basic s3cret-Token',
    'Bearer s3cret-token',
    'Bearer s3cret-Token2',
    'Bearers3cret-Token',
  ])('stays shut to %j (the token itself is compared exactly)', (authorization) => {
    expect(isAdmin(authorization, token)).toBe(false);
  });

  it('stays shut to everyone when no token is set', () => {
    expect(isAdmin('Bearer ', undefined)).toBe(false);
    expect(isAdmin('Bearer anything', undefined)).toBe(false);
    expect(isAdmin('Bearer anything', '')).toBe(false);
  });
});
