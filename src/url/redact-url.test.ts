import { describe, expect, it } from 'vitest';
import { redactUrl } from './redact-url.js';

describe('redactUrl', () => {
  it('masks the password of a URL', () => {
    expect(redactUrl('amqp://guest:s3cret@127.0.0.1:5672/vhost')).toBe(
      'amqp://guest:***@127.0.0.1:5672/vhost',
    );
  });

  it('masks a password that holds an @ up to the last one', () => {
    expect(redactUrl('postgres://app:p@ss@db:5432/shop')).toBe('postgres://app:***@db:5432/shop');
  });

  it('masks text without a scheme, as a typo produces it', () => {
    expect(redactUrl('user:secret@host:5672')).toBe('user:***@host:5672');
  });

  it('leaves a URL without a password as it is', () => {
    expect(redactUrl('amqp://guest@127.0.0.1:5672')).toBe('amqp://guest@127.0.0.1:5672');
    expect(redactUrl('amqp://127.0.0.1:5672')).toBe('amqp://127.0.0.1:5672');
    expect(redactUrl('memory://orders')).toBe('memory://orders');
  });
});
