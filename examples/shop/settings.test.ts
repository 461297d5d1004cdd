import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_BUS_URL,
  DEFAULT_DB_URL,
  readDistributedSettings,
  readSettings,
  SettingsError,
} from './settings.js';

const refusal = (env: NodeJS.ProcessEnv): string => {
  try {
    readDistributedSettings(env);
  } catch (error) {
    expect(error).toBeInstanceOf(SettingsError);
    return (error as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
};

describe('readDistributedSettings', () => {
  it('takes the defaults, and whole milliseconds from 1 up to the longest timer', () => {
    expect(readDistributedSettings({})).toEqual({
      busUrl: DEFAULT_BUS_URL,
      dbUrl: DEFAULT_DB_URL,
      orderTimeoutMs: undefined,
      paymentGiveUpMs: undefined,
    });
    expect(
      readDistributedSettings({
        FERRY_BUS_URL: 'amqps://u:p@rabbit:5671/shop',
        FERRY_DB_URL: 'postgresql://db/shop',
        SHOP_ORDER_TIMEOUT_MS: '1',
        SHOP_PAYMENT_GIVE_UP_MS: '2147483647',
      }),
    ).toEqual({
      busUrl: 'amqps://u:p@rabbit:5671/shop',
      dbUrl: 'postgresql://db/shop',
      orderTimeoutMs: 1,
      paymentGiveUpMs: 2_147_483_647,
    });
  });

  it.each(['SHOP_ORDER_TIMEOUT_MS', 'SHOP_PAYMENT_GIVE_UP_MS'])(
    'refuses a %s that is not a whole number of milliseconds from 1 to 2147483647, naming it',
    (name) => {
      for (const value of ['abc', '-5', '0', '1.5', '1e3', ' 30', '2147483648', '0x10']) {
        expect(refusal({ [name]: value })).toBe(
          `${name} must be a whole number of milliseconds from 1 to 2147483647, not ${JSON.stringify(value)}`,
        );
      }
    },
  );

  it('refuses a bus or database URL of another scheme, or none, without printing its password', () => {
    expect(refusal({ FERRY_BUS_URL: 'http://guest:s3cret@127.0.0.1:5672' })).toBe(
      'FERRY_BUS_URL must be a URL starting with amqp:// or amqps://, not http://guest:***@127.0.0.1:5672',
    );
    expect(refusal({ FERRY_DB_URL: 'mysql://root:s3cret@db/shop' })).toBe(
      'FERRY_DB_URL must be a URL starting with postgres:// or postgresql://, not mysql://root:***@db/shop',
    );
    // Secrets in the query too, whatever the parameter is called (pg reads ?password=, some ?pwd=).
    expect(refusal({ FERRY_DB_URL: 'mysql://db/shop?pwd=s3cret&sslmode=require&api_key=k3y' })).toBe(
      'FERRY_DB_URL must be a URL starting with postgres:// or postgresql://, not mysql://db/shop?pwd=***&sslmode=require&api_key=***',
    );
    expect(refusal({ FERRY_DB_URL: 's3cret@localhost' })).toBe(
      'FERRY_DB_URL must be a URL starting with postgres:// or postgresql://, not something unparseable',
    );
  });

  it('says what to check in a URL of the right scheme that does not parse, not that its scheme is wrong', () => {
    expect(refusal({ FERRY_DB_URL: 'postgres://app:s3cret@db:99999/shop' })).toBe(
      'FERRY_DB_URL is not a valid URL: check its host and port (1 to 65535), and that the user name and password percent-encode characters such as / ? # @ and spaces (postgres://app:***@db:99999/shop)',
    );
    expect(refusal({ FERRY_BUS_URL: 'amqp://guest:s3cret@rabbit:notaport/' })).toMatch(
      /^FERRY_BUS_URL is not a valid URL: check its host and port .*\(amqp:\/\/guest:\*\*\*@rabbit:notaport\/\)$/,
    );
  });

  // Every service would refuse it as it starts (exit 1, restarted for ever): said once, up front.
  it('refuses a bus URL the bus would refuse, before anything starts, without printing its password', () => {
    expect(refusal({ FERRY_BUS_URL: 'amqp://guest:S3cr3t%zz@127.0.0.1:5672/shop' })).toMatch(
      /^FERRY_BUS_URL: the password of the bus URL amqp:\/\/guest:\*\*\*@127\.0\.0\.1:5672\/shop has a malformed percent-escape/,
    );
    expect(refusal({ FERRY_BUS_URL: 'amqp://guest:guest@127.0.0.1:5672/shop?hearbeat=30' })).toMatch(
      /^FERRY_BUS_URL: the bus URL .* has a query parameter amqplib does not read \("hearbeat"\)/,
    );
    expect(
      readDistributedSettings({ FERRY_BUS_URL: 'amqp://guest:guest@127.0.0.1:5672/shop?heartbeat=30' })
        .busUrl,
    ).toBe('amqp://guest:guest@127.0.0.1:5672/shop?heartbeat=30');
  });
});

describe('a variable set to the empty string', () => {
  it('counts as unset, for every setting: its default applies', () => {
    const empty = {
      PORT: '',
      FERRY_DATA_DIR: '',
      FERRY_BUS_URL: '',
      FERRY_DB_URL: '',
      FERRY_ADMIN_TOKEN: '',
      LOG_LEVEL: '',
      SHOP_ORDER_TIMEOUT_MS: '',
      SHOP_PAYMENT_GIVE_UP_MS: '',
    };
    expect(readSettings(empty)).toEqual(readSettings({}));
    expect(readDistributedSettings(empty)).toEqual(readDistributedSettings({}));
  });
});

describe('readSettings', () => {
  it('takes an admin token a client can send back, and refuses one it cannot, never printing it', () => {
    expect(readSettings({ FERRY_ADMIN_TOKEN: 'tok_9f8A-._~+/=' }).adminToken).toBe('tok_9f8A-._~+/=');
    expect(readSettings({ FERRY_ADMIN_TOKEN: '' }).adminToken).toBeUndefined();
    for (const token of ['tök-secret', 'two words', 'x'.repeat(1025), 'tab\there']) {
      let message = '';
      try {
        readSettings({ FERRY_ADMIN_TOKEN: token });
      } catch (error) {
        expect(error).toBeInstanceOf(SettingsError);
        message = (error as Error).message;
      }
      expect(message).toMatch(/^FERRY_ADMIN_TOKEN must be 1 to 1024 visible ASCII characters/);
      expect(message).not.toContain(token.slice(0, 8));
    }
  });

  it('takes FERRY_DATA_DIR as a path (./data when unset or empty), and refuses one with a space at an end', () => {
    expect(readSettings({}).dataDir).toBe(resolve('./data'));
    expect(readSettings({ FERRY_DATA_DIR: '' }).dataDir).toBe(resolve('./data'));
    expect(readSettings({ FERRY_DATA_DIR: '/var/lib/my shop' }).dataDir).toBe('/var/lib/my shop');
    for (const value of ['   ', ' /tmp/shop', '/tmp/shop ', '/tmp/shop\n', '\t']) {
      expect(() => readSettings({ FERRY_DATA_DIR: value }), value).toThrow(
        new SettingsError(
          `FERRY_DATA_DIR must not start or end with a space, tab or line break, not ${JSON.stringify(value)} (unset it for ./data)`,
        ),
      );
    }
  });

  it('takes PORT as digits from 0 to 65535, and refuses anything else naming it', () => {
    expect(readSettings({}).port).toBe(3000);
    expect(readSettings({ PORT: '' }).port).toBe(3000);
    expect(readSettings({ PORT: '0' }).port).toBe(0);
    expect(readSettings({ PORT: '8080' }).port).toBe(8080);
    expect(readSettings({ PORT: '65535' }).port).toBe(65_535);
    for (const value of ['1e4', '0x50', ' 80', '3000.0', '-1', '65536', '80a', '+80', '000000080']) {
      expect(() => readSettings({ PORT: value }), value).toThrow(
        new SettingsError(`PORT must be a port number (0-65535), not ${JSON.stringify(value)}`),
      );
    }
  });
});
