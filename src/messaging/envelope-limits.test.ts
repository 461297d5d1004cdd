import { describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import type { Envelope } from './envelope.js';
import { assertEnvelopeLimits } from './envelope-limits.js';

const envelope = (headers: Record<string, string>): Envelope => ({
  specversion: '1.0',
  id: 'm-1',
  source: 'test',
  type: 'order.created',
  time: new Date(0).toISOString(),
  datacontenttype: 'application/json',
  data: {},
  correlationid: 'm-1',
  headers,
});

describe('assertEnvelopeLimits', () => {
  it.each(['CC', 'BCC', 'x-ferry-attempt', 'X-Ferry-Attempt', 'x-delay', 'CloudEvents:time'])(
    'refuses the reserved header %s with INVALID_OPTIONS naming it',
    (name) => {
      let error: unknown;
      try {
        assertEnvelopeLimits(envelope({ tenant: 'acme', [name]: 'v' }));
      } catch (e) {
        error = e;
      }
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toBe(`header "${name}" is reserved by Ferry or the broker`);
    },
  );

  it.each([
    ['id', { id: 'm\u0000', correlationid: 'c-1' }],
    ['correlationId', { correlationid: 'c\u0000' }],
    ['causationId', { causationid: '\u0000' }],
  ])('refuses NUL in %s with INVALID_OPTIONS (PostgreSQL text cannot hold it)', (field, ids) => {
    let error: unknown;
    try {
      assertEnvelopeLimits({ ...envelope({}), ...ids });
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error), String(error)).toBe(true);
    expect((error as Error).message).toBe(`${field} must not contain NUL`);
  });

  it('takes headers of other names', () => {
    expect(() =>
      assertEnvelopeLimits(envelope({ tenant: 'acme', cc: 'me', X_Trace: 't', 'x-tenant': 'a' })),
    ).not.toThrow();
  });
});
