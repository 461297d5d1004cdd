import { describe, expect, it } from 'vitest';
import { maskCredentials, maskedAndCut, redactUrl, urlSecrets } from './redact-url.js';

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

  it("masks a web URL's user name without a password: it may be a token", () => {
    expect(redactUrl('https://ghp_T0ken@git.example.com/org/repo.git')).toBe(
      'https://***@git.example.com/org/repo.git',
    );
    expect(redactUrl('wss://T0ken@ws.example.com')).toBe('wss://***@ws.example.com');
    // An @ in a path is no user name.
    expect(redactUrl('https://social.example/users/@ada')).toBe('https://social.example/users/@ada');
  });

  it('masks secret parameters after a ; and in a fragment', () => {
    expect(redactUrl('postgres://u:pw@db/app?sslmode=require;password=T0ken')).toBe(
      'postgres://u:***@db/app?sslmode=require;password=***',
    );
    expect(redactUrl('https://app.example/cb#access_token=T0ken&token_type=bearer')).toBe(
      'https://app.example/cb#access_token=***&token_type=***',
    );
    // To most servers ; separates nothing: the whole value is the token.
    expect(redactUrl('https://h/x?token=T0k;en&page=2')).toBe('https://h/x?token=***&page=2');
  });

  it('masks each URL of a text that quotes several, keeping the text between them', () => {
    expect(redactUrl('bus amqp://u:p@h/v, database postgres://u:q@h2/db')).toBe(
      'bus amqp://u:***@h/v, database postgres://u:***@h2/db',
    );
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

  it('masks the credentials of every URL a message or stack quotes, changing nothing else', () => {
    expect(
      maskCredentials(
        'Request cannot be constructed from a URL that includes credentials: http://billing:Pw1@127.0.0.1:47117/charge',
      ),
    ).toBe(
      'Request cannot be constructed from a URL that includes credentials: http://billing:***@127.0.0.1:47117/charge',
    );
    expect(
      maskCredentials(
        'connect to postgres://app:p@ss@db/shop failed\n    at connect (file:///srv/app.js:3:7)',
      ),
    ).toBe('connect to postgres://app:***@db/shop failed\n    at connect (file:///srv/app.js:3:7)');
    // A password with an unencoded / is masked to the last @.
    expect(maskCredentials('amqp://u:p/ss@h/v')).toBe('amqp://u:***@h/v');
    // A URL quoted in another's query.
    expect(maskCredentials('GET https://h/login?next=amqp://u:Pw2@b/v refused')).toBe(
      'GET https://h/login?next=amqp://u:***@b/v refused',
    );
    expect(maskCredentials('GET /charge?api_key=K3y&n=1 failed: 503')).toBe(
      'GET /charge?api_key=***&n=1 failed: 503',
    );
    expect(maskCredentials('user ada@example.com has no order 5: 404')).toBe(
      'user ada@example.com has no order 5: 404',
    );
    expect(maskCredentials('https://social.example/users/@ada')).toBe('https://social.example/users/@ada');
  });

  it('cuts a long text after masking it: a password across the cut is masked, not left in part', () => {
    const text = `${'x'.repeat(985)} amqp://u:Secr3tPw@broker/v ${'y'.repeat(100_000)}`;
    const shown = maskedAndCut(text, 1000);
    expect(shown).toHaveLength(1000);
    expect(shown.endsWith('…')).toBe(true);
    expect(shown).not.toMatch(/Secr|3tPw/);
    expect(shown).toContain('amqp://u:');
    // A pair of surrogates is not split at the cut.
    expect(maskedAndCut(`${'a'.repeat(8)}😀😀`, 10)).toBe(`${'a'.repeat(8)}…`);
  });

  it('masks the token of a web URL whatever @ comes later in its path or query, keeping host and port', () => {
    expect(maskCredentials('get https://npm_T1@registry.example.com/@acme/pkg failed')).toBe(
      'get https://***@registry.example.com/@acme/pkg failed',
    );
    expect(maskCredentials('https://T2@api.example.com/users?email=ada@example.com')).toBe(
      'https://***@api.example.com/users?email=ada@example.com',
    );
    expect(maskCredentials('https://T4@host:8443/@acme/pkg')).toBe('https://***@host:8443/@acme/pkg');
    expect(maskCredentials('git+https://ghp_T5@github.com/acme/private.git')).toBe(
      'git+https://***@github.com/acme/private.git',
    );
    expect(maskCredentials('https://user:P6@api.example.com/users?email=ada@example.com')).toBe(
      'https://user:***@api.example.com/users?email=ada@example.com',
    );
    // An @ in a path or a later word is no user information: host, port and path stay.
    expect(maskCredentials('http://localhost:4873/@acme/pkg')).toBe('http://localhost:4873/@acme/pkg');
    expect(maskCredentials('http://[::1]:8080/@ada')).toBe('http://[::1]:8080/@ada');
    expect(maskCredentials('{"url":"amqp://u:P7@rabbit-1","contact":"ops@example.com"}')).toBe(
      '{"url":"amqp://u:***@rabbit-1","contact":"ops@example.com"}',
    );
    expect(maskCredentials('amqp://a:P8@rabbit-1,amqp://b:P9@rabbit-2')).toBe(
      'amqp://a:***@rabbit-1,amqp://b:***@rabbit-2',
    );
    expect(redactUrl('https://user:P12@api.example.com/users?email=ada@example.com')).toBe(
      'https://user:***@api.example.com/users?email=ada@example.com',
    );
    expect(redactUrl('amqp://svc:correct horse@rabbit:5672/?x=a@b')).toBe(
      'amqp://svc:***@rabbit:5672/?x=a@b',
    );
    // redactUrl too, with words before the URL.
    expect(redactUrl('fetch https://ghp_T10@github.com/o/r.git failed')).toBe(
      'fetch https://***@github.com/o/r.git failed',
    );
    expect(redactUrl('url=wss://T11@ws.example.com')).toBe('url=wss://***@ws.example.com');
  });

  it("masks a secret parameter nested in another one's value, and ends a value at a quote", () => {
    expect(redactUrl('https://app/login?next=https://api/cb?access_token=S1')).toBe(
      'https://app/login?next=https://api/cb?access_token=***',
    );
    expect(maskCredentials('GET /login?next=/cb?token=S2 failed')).toBe(
      'GET /login?next=/cb?token=*** failed',
    );
    expect(maskCredentials('?a=b?password=S3')).toBe('?a=b?password=***');
    expect(maskCredentials('{"url":"https://h/cb?token=abc","status":503,"detail":"rate limited"}')).toBe(
      '{"url":"https://h/cb?token=***","status":503,"detail":"rate limited"}',
    );
  });

  it('masks a user information longer than 2 KB (a JWT as password)', () => {
    const jwt = `eyJ${'x'.repeat(2100)}`;
    expect(maskCredentials(`connect amqp://oauth:${jwt}@broker/v failed`)).toBe(
      'connect amqp://oauth:***@broker/v failed',
    );
  });

  it('takes time linear in the text, and no stack, whatever it holds', () => {
    // A run of ;name=value pairs overflowed the stack (one call per pair): the bus then retried the
    // message for ever, the event store's subscription crashed the process.
    for (const text of [
      `bad query ?${'a=1;'.repeat(100_000)}`,
      `?${'=;'.repeat(200_000)}`,
      `${'a'.repeat(32)}://`.repeat(30_000),
      '&='.repeat(200_000),
      `x://h:p/${'x://h:p/'.repeat(50_000)}`,
    ]) {
      expect(() => maskCredentials(text)).not.toThrow();
      expect(() => redactUrl(text)).not.toThrow();
    }
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
