import { describe, expect, it } from 'vitest';
import { redactUrl, urlSecrets } from './redact-url.js';

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

  it('masks the values of query parameters that hold secrets (pg reads ?password= as the password)', () => {
    expect(redactUrl('postgres://app@db:5432/shop?password=Cl3arPw&schema=orders')).toBe(
      'postgres://app@db:5432/shop?password=***&schema=orders',
    );
    expect(redactUrl('amqp://h/v?heartbeat=5&access_token=abc#frag')).toBe(
      'amqp://h/v?heartbeat=5&access_token=***#frag',
    );
    expect(redactUrl('postgres://u:pw@h/d?sslpassword=x&api_key=y&PWD=z')).toBe(
      'postgres://u:***@h/d?sslpassword=***&api_key=***&PWD=***',
    );
    expect(redactUrl('postgres://h/d?schema=passwords_app')).toBe('postgres://h/d?schema=passwords_app');
  });

  it('lists the secrets a URL carries, raw and decoded, for masking in a driver message', () => {
    expect(urlSecrets('postgres://u:s3cr%40t@h/d?password=Cl3ar%20Pw&schema=x')).toEqual([
      'Cl3ar%20Pw',
      's3cr%40t',
      'Cl3ar Pw',
      's3cr@t',
    ]);
    expect(urlSecrets('memory://orders')).toEqual([]);
    expect(urlSecrets('not a url')).toEqual([]);
  });
});
