import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isFerryError, isInvalidOptionsError } from '../errors/ferry-error.js';
import { isStoreUnavailableError } from '../eventstore/errors.js';
import { createEventStore } from './create-event-store.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-create-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('createEventStore', () => {
  it('rejects with STORE_UNAVAILABLE, the cause kept and the password masked, when PostgreSQL is unreachable', async () => {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    const error = await rejection(
      createEventStore({ url: 'postgres://ferry:s3cr%40t-pw@127.0.0.1:1/test?schema=unreachable' }),
    );
    expect(isStoreUnavailableError(error)).toBe(true);
    expect(isFerryError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'postgres' });
    const { message, cause } = error as Error;
    expect(message).toContain('127.0.0.1:1');
    expect(message).not.toContain('s3cr');
    expect(String((cause as Error).message)).toMatch(/ECONNREFUSED/);
    // Said once: the backend names the store and where, createEventStore does not say it again.
    expect(message.match(/could not open/g)).toHaveLength(1);
    expect(message).toMatch(
      /^could not open the postgres event store at postgres:\/\/ferry:\*+@127\.0\.0\.1:1\//,
    );
  });

  it('rejects with STORE_UNAVAILABLE when the SQLite file cannot be created', async () => {
    // A file where the database's directory should be.
    writeFileSync(join(dir, 'a-file'), '');
    const error = await rejection(createEventStore({ url: `sqlite:${join(dir, 'a-file', 'e.db')}` }));
    expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'sqlite' });
    expect((error as Error).cause).toBeInstanceOf(Error);
  });

  it('masks a password given as ?password= (which pg takes) in what it rejects with, a real server refusing the role', async () => {
    const error = await rejection(
      createEventStore({
        url: 'postgres://ferry_no_such_role@127.0.0.1:5432/test?password=Cl3arPw-9&schema=masked',
      }),
    );
    expect(isStoreUnavailableError(error)).toBe(true);
    const { message } = error as Error;
    expect(message).toMatch(/ferry_no_such_role/);
    expect(message).toContain('password=***');
    expect(message).not.toContain('Cl3arPw');
  });

  it('rejects a URL it cannot parse with INVALID_OPTIONS, without quoting the password', async () => {
    const error = await rejection(createEventStore({ url: 'postgres://ferry:hunter22@[bad/test' }));
    expect(isInvalidOptionsError(error)).toBe(true);
    expect(JSON.stringify({ ...(error as object), message: (error as Error).message })).not.toContain(
      'hunter22',
    );
  });

  it('refuses sqlite://<path> with INVALID_OPTIONS: sqlite://./x.db opened /x.db at the root of the file system', async () => {
    const error = await rejection(createEventStore({ url: 'sqlite://./ferry-root-test.db' }));
    expect(isInvalidOptionsError(error)).toBe(true);
    expect((error as Error).message).toMatch(/sqlite:<path>/);
    expect(existsSync('/ferry-root-test.db')).toBe(false);
  });

  it('checks postgres options on a sqlite: or memory:// store too, so a bad value shows before the URL is switched', async () => {
    for (const url of ['memory://opts', `sqlite:${join(dir, 'opts.db')}`]) {
      for (const postgres of [
        { poolSize: 1 },
        { schema: 'Bad-Name' },
        { statementTimeoutMs: -1 },
        5,
        // Past a timer's range Node fires at once: a NOTIFY every 1 ms, not the interval asked for.
        { notifyIntervalMs: 2 ** 31 },
        { notifyIntervalMs: Number.POSITIVE_INFINITY },
        { notifyIntervalMs: -1 },
        { notifyIntervalMs: Number.NaN },
      ]) {
        const error = await rejection(createEventStore({ url, postgres: postgres as { poolSize: number } }));
        expect(isInvalidOptionsError(error), `${url} ${JSON.stringify(postgres)}`).toBe(true);
      }
      const store = await createEventStore({ url, postgres: { poolSize: 4, schema: 'shop_orders' } });
      await store.close();
      for (const notifyIntervalMs of [0, 2.5, 2 ** 31 - 1]) {
        await (await createEventStore({ url, postgres: { notifyIntervalMs } })).close();
      }
    }
    expect(existsSync(join(dir, 'opts.db'))).toBe(true);
  });

  it('refuses backend options in a PostgreSQL URL (pg ignored them) and a schema named twice, before connecting', async () => {
    for (const query of [
      'poolSize=2',
      'statementTimeoutMs=500',
      'notifyIntervalMs=5',
      'horizonWaitMs=1',
      'longTransactionWarnMs=1',
    ]) {
      const url = `postgres://postgres:${'Secr3t'}@127.0.0.1:1/db?${query}`;
      const error = await createEventStore({ url }).then(
        () => new Error('opened'),
        (e: unknown) => e,
      );
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/not read from the URL: give it as createEventStore/);
      expect((error as Error).message).not.toContain('Secr3t');
    }
    const twice = await createEventStore({
      url: 'postgres://postgres@127.0.0.1:1/db?schema=a',
      postgres: { schema: 'b' },
    }).then(
      () => new Error('opened'),
      (e: unknown) => e,
    );
    expect(isInvalidOptionsError(twice)).toBe(true);
    expect((twice as Error).message).toMatch(/names schema "a" and the postgres option "b"/);
  });

  it('refuses a PostgreSQL URL whose ?port= is not a port (opening it never settled)', async () => {
    for (const port of ['abc', '', '0', '65536', '54 32']) {
      const url = `postgres://postgres:Secr3t@127.0.0.1:5432/db?port=${encodeURIComponent(port)}`;
      const error = await createEventStore({ url }).then(
        () => new Error('opened'),
        (e: unknown) => e,
      );
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/port of the PostgreSQL URL .* must be from 1 to 65535/);
      expect((error as Error).message).not.toContain('Secr3t');
    }
  });

  it('refuses options that are not an object with INVALID_OPTIONS, not a TypeError', async () => {
    for (const options of [undefined, null, 'sqlite:x.db', []]) {
      await expect(createEventStore(options as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it('refuses an option it does not read, naming it, before opening anything: a misspelt or misplaced one was dropped without a word', async () => {
    const path = join(dir, 'unknown-option.db');
    for (const [options, named] of [
      [{ url: `sqlite:${path}`, sqlite: { busyTimeoutMs: 100 } }, '"sqlite"'],
      [{ url: `sqlite:${path}`, postgres: { poolsize: 4 } }, '"poolsize"'],
      [{ url: `sqlite:${path}`, logger: undefined, schema: 'x' }, '"schema"'],
    ] as const) {
      const error = await rejection(createEventStore(options as never));
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toContain(named);
    }
    expect(existsSync(path)).toBe(false);
  });

  it('takes an option given as undefined as left out: { schema: process.env.SCHEMA } with the variable unset', async () => {
    // schema and poolSize given as undefined were refused ("schema must be 1-41 lower-case letters…").
    const store = await createEventStore({
      url: `sqlite:${join(dir, 'undefined-options.db')}`,
      // JavaScript callers (and settings read from the environment) pass undefined; the types say optional.
      postgres: { schema: undefined, poolSize: undefined, statementTimeoutMs: undefined } as never,
      logger: undefined as never,
    });
    await store.close();
  });

  it('opens a reachable store', async () => {
    const store = await createEventStore({ url: `sqlite:${join(dir, 'ok.db')}` });
    await store.append('s', [{ type: 'A', data: 1 }]);
    expect(await store.readStream('s')).toHaveLength(1);
    await store.close();
  });

  it('store.inbox() refuses an option it does not read on every backend, memory too', async () => {
    // The memory inbox reads no option: a misspelt one passed tests on memory and was then dropped
    // for its default on SQLite and PostgreSQL in production.
    for (const url of [`memory://inbox-options-${process.pid}`, `sqlite:${join(dir, 'inbox-options.db')}`]) {
      const store = await createEventStore({ url });
      try {
        expect(() => store.inbox({ leaseMS: 300_000 } as never), url).toThrow(
          /store.inbox has no option "leaseMS": it takes leaseMs, retentionMs/,
        );
        expect(() => store.inbox(null as never), url).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS' }),
        );
        expect(store.inbox({ leaseMs: undefined, retentionMs: 60_000 })).toBeDefined();
      } finally {
        await store.close();
      }
    }
  });
});
