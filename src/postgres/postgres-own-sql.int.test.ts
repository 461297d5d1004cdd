import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import type { Message } from '../messaging/envelope.js';
import { createOutbox } from '../outbox/outbox.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

async function setup() {
  const schema = testSchemaName('ownsql');
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({ url: postgresTestUrl(), schema, logger: silentLogger });
  await backend.open();
  const store = new EventStore(backend);
  cleanups.push(() => store.close());
  const bus = await createBus({ url: `memory://ownsql-${schema}`, service: 'svc', logger: silentLogger });
  cleanups.push(() => bus.close());
  const received: Message[] = [];
  await bus.subscribe('#', (m) => void received.push(m), { group: 'audit' });
  const outbox = await createOutbox({ store, bus, logger: silentLogger });
  cleanups.push(() => outbox.close());
  return { store, outbox, received };
}

/** A table `(k text)` of its own, dropped after the test, and the keys it holds as seen from outside. */
async function scratchTable(prefix: string): Promise<{ table: string; keys: () => Promise<string[]> }> {
  const table = `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  const admin = new pg.Client({ connectionString: postgresTestUrl() });
  await admin.connect();
  cleanups.push(async () => {
    await admin.query(`DROP TABLE IF EXISTS ${table}`);
    await admin.end();
  });
  await admin.query(`CREATE TABLE ${table} (k text)`);
  const keys = async () => (await admin.query<{ k: string }>(`SELECT k FROM ${table}`)).rows.map((r) => r.k);
  return { table, keys };
}

describe('PostgreSQL units of work whose own SQL ends the transaction', () => {
  it.each([
    ['COMMIT; BEGIN', 1],
    ['COMMIT AND CHAIN', 1],
    ['END; BEGIN', 1],
    ['ROLLBACK; BEGIN', 0],
    ['ROLLBACK AND CHAIN', 0],
    ['COMMIT; SELECT 1/0', 1],
  ])(
    'sees %s end it (a new transaction begun by the SQL too): OUTCOME_UNKNOWN, nothing of it after',
    async (sql, kept) => {
      // Before, a transaction the SQL began hid the end: the rest of the unit went into it, a
      // ROLLBACK's earlier writes were lost while the unit resolved, a COMMIT's split it in two.
      const { store, outbox, received } = await setup();
      const later: unknown[] = [];
      const outcome = await outbox
        .unitOfWork(async (work) => {
          await work.append('before', [{ type: 'E', data: {} }], { expectedVersion: 'no_stream' });
          later.push(await work.query(sql).catch((e: unknown) => e));
          later.push(await work.append('after', [{ type: 'E', data: {} }]).catch((e: unknown) => e));
          later.push(await work.query('SELECT 1').catch((e: unknown) => e));
          return 'resolved';
        })
        .catch((e: unknown) => e);
      expect(outcome).toMatchObject({ code: 'UNIT_OF_WORK_OUTCOME_UNKNOWN', reason: 'own-sql' });
      expect(later).toEqual([outcome, outcome, outcome]);
      expect(await store.readStream('before')).toHaveLength(kept);
      expect(await store.readStream('after')).toEqual([]);
      await outbox.flush();
      expect(received).toEqual([]);
    },
  );

  it.each(['COMMIT', 'ROLLBACK'])(
    'runs nothing of calls started beside a %s of its own SQL (not awaited before it), in autocommit or otherwise',
    async (end) => {
      // Before, calls started together went to the driver at once: those queued behind the COMMIT
      // ran after it in autocommit, and a message of a unit that rejected was published.
      const { store, outbox, received } = await setup();
      const { table, keys } = await scratchTable('later');
      const outcome = await outbox
        .unitOfWork(async (work) => {
          await Promise.allSettled([
            work.query(`INSERT INTO ${table} VALUES ('before'); ${end}`),
            work.query(`INSERT INTO ${table} VALUES ('later')`),
            work.publish('later.published', {}),
            work.publish('later.keyed', {}, { key: 'k' }),
            work.append('later', [{ type: 'E', data: {} }]),
          ]);
        })
        .catch((e: unknown) => e);
      expect(outcome).toMatchObject({ code: 'UNIT_OF_WORK_OUTCOME_UNKNOWN', reason: 'own-sql' });
      expect(await keys()).toEqual(end === 'COMMIT' ? ['before'] : []);
      expect(await store.readStream('later')).toEqual([]);
      await outbox.flush();
      expect(received.filter((m) => m.type.startsWith('later.'))).toEqual([]);
    },
  );

  it('says OUTCOME_UNKNOWN when the callback throws while a COMMIT of its SQL it did not wait for is under way', async () => {
    // Before, the unit rejected with the callback's error, telling the caller nothing was kept.
    const { outbox } = await setup();
    const { table, keys } = await scratchTable('thrown');
    const outcome = await outbox
      .unitOfWork(async (work) => {
        void work.query(`INSERT INTO ${table} VALUES ('kept'); SELECT pg_sleep(0.3); COMMIT`).catch(() => {});
        await new Promise((resolve) => setTimeout(resolve, 50));
        throw new Error('boom');
      })
      .catch((e: unknown) => e);
    expect(await keys()).toEqual(['kept']);
    expect(outcome).toMatchObject({ code: 'UNIT_OF_WORK_OUTCOME_UNKNOWN', reason: 'own-sql' });
  });

  it('takes calls started together as they come: a savepoint rolled back to, a failed statement, many at once', async () => {
    const { store, outbox } = await setup();
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => void warnings.push(warning);
    process.on('warning', onWarning);
    cleanups.push(async () => void process.off('warning', onWarning));
    // ROLLBACK TO SAVEPOINT does not end the transaction, whatever is queued behind it (the answer
    // to it was taken for the next statement's, which then looked like a ROLLBACK).
    await outbox.unitOfWork(async (work) => {
      await Promise.all([
        work.query('SAVEPOINT a'),
        work.query('ROLLBACK TO SAVEPOINT a'),
        work.query('SELECT 1'),
        ...Array.from({ length: 12 }, () => work.query('SELECT 1')),
        work.append('whole', [{ type: 'E', data: {} }], { expectedVersion: 'no_stream' }),
      ]);
    });
    expect(await store.readStream('whole')).toHaveLength(1);
    // One failed statement dooms the calls started beside it too, as it dooms later ones (they went
    // to the server and came back with PostgreSQL's 25P02).
    let calls: PromiseSettledResult<unknown>[] = [];
    const outcome = await outbox
      .unitOfWork(async (work) => {
        calls = await Promise.allSettled([
          work.query('SELEC 1'),
          work.query('SELECT 1'),
          work.publish('beside.failed', {}),
          work.append('beside', [{ type: 'E', data: {} }]),
        ]);
      })
      .catch((e: unknown) => e);
    expect(outcome).toMatchObject({ code: 'UNIT_OF_WORK_ROLLED_BACK' });
    expect(calls[0]).toMatchObject({ status: 'rejected', reason: { code: '42601' } });
    for (const call of calls.slice(1)) {
      expect(call).toMatchObject({ status: 'rejected', reason: { code: 'UNIT_OF_WORK_ROLLED_BACK' } });
    }
    expect(await store.readStream('beside')).toEqual([]);
    // Each statement is watched only during its turn: no listener piles up on the connection.
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  });

  it('lets the SQL roll back to a savepoint of its own: the unit of work commits whole', async () => {
    const { store, outbox } = await setup();
    await outbox.unitOfWork(async (work) => {
      await work.append('kept', [{ type: 'E', data: {} }], { expectedVersion: 'no_stream' });
      await work.query('SAVEPOINT mine; CREATE TEMP TABLE scratch (x int); ROLLBACK TO SAVEPOINT mine');
      await work.query('SAVEPOINT again');
      await work.query('ROLLBACK TRANSACTION TO again');
      await work.append('kept', [{ type: 'E', data: {} }], { expectedVersion: 0 });
    });
    expect(await store.readStream('kept')).toHaveLength(2);
  });
});

describe('PostgreSQL work.query rows', () => {
  it('gives bigint and numeric columns as strings (pg’s default), so a count(*) can be published; positions stay bigint', async () => {
    // A bigint or count(*) came back as a BigInt (the pool's parser for Ferry's own positions), so
    // publishing it failed with MESSAGE_NOT_SERIALIZABLE, unlike the README's promise and SQLite.
    const { store, outbox, received } = await setup();
    const row = await outbox.unitOfWork(async (work) => {
      await work.query(
        'CREATE TEMP TABLE nums (b bigint, n numeric, i integer, t timestamptz) ON COMMIT DROP',
      );
      await work.query('INSERT INTO nums VALUES ($1, $2, $3, $4)', [5, '1.5', 7, '2026-01-02T03:04:05.678Z']);
      const [r] = await work.query('SELECT b, n, i, t, (SELECT count(*) FROM nums) AS c FROM nums');
      await work.publish('nums.counted', { count: r!.c });
      return r;
    });
    expect(row).toEqual({ b: '5', n: '1.5', i: 7, t: '2026-01-02T03:04:05.678Z', c: '1' });
    await outbox.flush();
    expect(received.map((m) => m.data)).toEqual([{ count: '1' }]);
    // Ferry's own reads keep their bigint positions.
    const appended = await outbox.unitOfWork((work) => work.append('s', [{ type: 'E', data: {} }]));
    expect(typeof appended.position).toBe('bigint');
    expect(typeof (await store.readStream('s'))[0]!.position).toBe('bigint');
  });

  it('reads every timestamptz PostgreSQL holds: microseconds kept, infinity, BC dates and years past 9999', async () => {
    // A row holding 'infinity' (a valid_until without end) failed the whole query with a RangeError,
    // and microseconds were cut to milliseconds.
    const { outbox } = await setup();
    const rows = await outbox.unitOfWork((work) =>
      work.query(
        `SELECT t FROM (VALUES (1, '2026-01-02 03:04:05.678912+00'::timestamptz), (2, 'infinity'), (3, '-infinity'),
           (4, '0044-03-15 12:00:00+00 BC'), (5, '12345-06-07 08:09:10.5+00'), (6, '2026-01-02 03:04:05+00')) AS v(n, t)
         ORDER BY n`,
      ),
    );
    const times = rows.map((r) => r.t);
    expect(times).toEqual([
      '2026-01-02T03:04:05.678912Z',
      'infinity',
      '-infinity',
      '-000043-03-15T12:00:00.000Z',
      '+012345-06-07T08:09:10.500Z',
      '2026-01-02T03:04:05.000Z',
    ]);
    // Arrays of them too (pg's own parser gave Date objects: infinity as null, microseconds cut).
    const [array] = await outbox.unitOfWork((work) =>
      work.query(
        "SELECT ARRAY['2024-01-02 03:04:05.678912+00', 'infinity', NULL, '0044-03-15 12:00:00+00 BC']::timestamptz[] AS a, '{}'::timestamptz[] AS e",
      ),
    );
    expect(array).toEqual({
      a: ['2024-01-02T03:04:05.678912Z', 'infinity', null, '-000043-03-15T12:00:00.000Z'],
      e: [],
    });
    // Each finite one is the instant PostgreSQL holds, as Date reads it.
    expect(new Date(times[3] as string).getUTCFullYear()).toBe(-43);
    expect(new Date(times[4] as string).getUTCFullYear()).toBe(12345);
  });

  it('reads times right whatever DateStyle the database or a unit of work sets, and takes other session time zones off', async () => {
    // With ALTER DATABASE … SET datestyle = 'SQL, DMY', events appended on 2026-12-04 read back as
    // 2026-04-12 (day and month swapped), silently; a SET LOCAL TIME ZONE cut microseconds.
    const database = `ferry_datestyle_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
    const admin = new pg.Client({ connectionString: postgresTestUrl() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.query(`ALTER DATABASE ${database} SET datestyle = 'SQL, DMY'`);
    cleanups.push(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.end();
    });
    const url = new URL(postgresTestUrl());
    url.pathname = `/${database}`;
    const backend = new PostgresEventStoreBackend({
      url: url.toString(),
      schema: 'ds',
      logger: silentLogger,
    });
    await backend.open();
    const store = new EventStore(backend);
    cleanups.push(() => store.close());
    const bus = await createBus({
      url: `memory://datestyle-${database}`,
      service: 'svc',
      logger: silentLogger,
    });
    cleanups.push(() => bus.close());
    const outbox = await createOutbox({ store, bus, logger: silentLogger });
    cleanups.push(() => outbox.close());

    await store.append('dated', [{ type: 'Dated', data: {} }]);
    const [read] = await store.readStream('dated');
    // Stamped now: read back as the same instant (a swapped day and month is months away).
    expect(read!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(read!.time) - Date.now())).toBeLessThan(60_000);
    const all: string[] = [];
    for await (const event of store.readAll()) all.push(event.time);
    expect(all).toEqual([read!.time]);

    const [row] = await outbox.unitOfWork((work) =>
      work.query(
        "SELECT '2024-01-02 03:04:05.678912+00'::timestamptz AS t, '1900-01-01 00:00:00+00'::timestamptz AS old",
      ),
    );
    expect(row).toEqual({ t: '2024-01-02T03:04:05.678912Z', old: '1900-01-01T00:00:00.000Z' });
    const [zoned] = await outbox.unitOfWork(async (work) => {
      await work.query("SET LOCAL TIME ZONE 'Asia/Kolkata'");
      await work.query("SET LOCAL DateStyle = 'ISO'");
      return work.query(
        "SELECT '2024-01-02 03:04:05.678912+00'::timestamptz AS t, '1900-01-01 00:00:00+00'::timestamptz AS old",
      );
    });
    expect(zoned).toEqual({ t: '2024-01-02T03:04:05.678912Z', old: '1900-01-01T00:00:00.000Z' });
    // Another DateStyle set by the unit's own SQL: the text as PostgreSQL wrote it, never another date.
    const [sqlStyle] = await outbox.unitOfWork(async (work) => {
      await work.query("SET LOCAL DateStyle = 'SQL, DMY'");
      return work.query("SELECT '2024-01-02 03:04:05+00'::timestamptz AS t");
    });
    expect(sqlStyle!.t).toBe('02/01/2024 03:04:05 UTC');
    // A plain SET (not LOCAL) stays on the pooled connection: Ferry resets it before the connection
    // serves another unit or read (event times read back as '04/12/2026 20:35:56.889606 UTC').
    await outbox.unitOfWork(async (work) => {
      await work.query("SET DateStyle = 'SQL, DMY'");
      await work.query("SET TIME ZONE 'America/St_Johns'");
    });
    await outbox.unitOfWork(async (work) => {
      work.client; // the driver's handle: what its code set is not seen
      await work.query("SET DateStyle = 'German'");
    });
    for (let i = 0; i < 12; i++) {
      // Every pooled connection in turn.
      const [again] = await store.readStream('dated');
      expect(again!.time).toBe(read!.time);
      const [own] = await outbox.unitOfWork((work) =>
        work.query("SELECT '2024-01-02 03:04:05.678912+00'::timestamptz AS t"),
      );
      expect(own).toEqual({ t: '2024-01-02T03:04:05.678912Z' });
    }
    // work.client reads with the store's parsers: times as ISO strings (milliseconds), arrays alike.
    const viaClient = await outbox.unitOfWork(async (work) => {
      const { rows } = await (work.client as pg.PoolClient).query(
        "SELECT ARRAY['infinity', '2024-01-02 03:04:05.678912+00']::timestamptz[] AS a",
      );
      return rows[0];
    });
    expect(viaClient).toEqual({ a: ['infinity', '2024-01-02T03:04:05.678Z'] });
  });
});

describe('PostgreSQL timestamp and date values of a unit of work that sets another DateStyle', () => {
  const local = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0) =>
    new Date(y, mo - 1, d, h, mi, s, ms);
  it.each([
    // [DateStyle, timestamp, date, timestamp in an array, timestamptz]
    ['SQL', '01/02/2024 03:04:05.25', '01/02/2024', '01/02/2024 03:04:05', '01/02/2024 03:04:05.678912 UTC'],
    [
      'SQL, DMY',
      '02/01/2024 03:04:05.25',
      '02/01/2024',
      '02/01/2024 03:04:05',
      '02/01/2024 03:04:05.678912 UTC',
    ],
    [
      'German',
      '02.01.2024 03:04:05.25',
      '02.01.2024',
      '02.01.2024 03:04:05',
      '02.01.2024 03:04:05.678912 UTC',
    ],
    [
      'Postgres',
      'Tue Jan 02 03:04:05.25 2024',
      '01-02-2024',
      'Tue Jan 02 03:04:05 2024',
      'Tue Jan 02 03:04:05.678912 2024 UTC',
    ],
    [
      'ISO',
      local(2024, 1, 2, 3, 4, 5, 250),
      local(2024, 1, 2),
      local(2024, 1, 2, 3, 4, 5),
      '2024-01-02T03:04:05.678912Z',
    ],
  ])(
    'under DateStyle %s gives each as PostgreSQL writes it (pg reads ISO only), never null',
    async (style, ts, d, item, tz) => {
      // pg's parsers read DateStyle ISO only, and gave null for every other timestamp and date.
      const { outbox } = await setup();
      const select = `SELECT '2024-01-02 03:04:05.25'::timestamp AS ts, '2024-01-02'::date AS d,
        ARRAY['2024-01-02 03:04:05'::timestamp, NULL] AS tsa, ARRAY['2024-01-02'::date] AS da,
        ARRAY[ARRAY['2024-01-02'::date], ARRAY[NULL::date]] AS d2, 'infinity'::timestamp AS inf,
        '-infinity'::date AS dinf, NULL::date AS none, '2024-01-02 03:04:05.678912+00'::timestamptz AS tz,
        '03:04:05.5'::time AS t, '03:04:05+02'::timetz AS ttz`;
      const [own, viaClient] = await outbox.unitOfWork(async (work) => {
        await work.query(`SET LOCAL DateStyle = '${style}'`);
        const { rows } = await (work.client as pg.PoolClient).query(select);
        return [(await work.query(select))[0], rows[0]];
      });
      expect(own).toEqual({
        ts,
        d,
        tsa: [item, null],
        da: [d],
        d2: [[d], [null]],
        inf: Number.POSITIVE_INFINITY,
        dinf: Number.NEGATIVE_INFINITY,
        none: null,
        tz,
        t: '03:04:05.5',
        ttz: '03:04:05+02',
      });
      // work.client has the store's parsers: the same, timestamptz aside (milliseconds there).
      expect(viaClient).toMatchObject({ ts, d, tsa: [item, null], da: [d], d2: [[d], [null]] });
    },
  );
});
