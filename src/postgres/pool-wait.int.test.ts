import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { typedPoolWait } from './pool-wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => dropSchemas(schemas));

describe('PostgreSQL pool: a wait for a free connection that runs out of time', () => {
  it('rejects STORE_UNAVAILABLE, through pool.query and pool.connect, and the pool serves again once a connection is free', async () => {
    const pool = typedPoolWait(
      new pg.Pool({ connectionString: postgresTestUrl(), max: 1, connectionTimeoutMillis: 150 }),
      1,
      150,
    );
    cleanups.push(() => pool.end());
    const held = await pool.connect();
    const expected = {
      code: 'STORE_UNAVAILABLE',
      backend: 'postgres',
      message: expect.stringContaining(
        "no PostgreSQL connection within 150 ms (all 1 of the pool's connections in use",
      ),
    };
    await expect(pool.query('SELECT 1')).rejects.toMatchObject(expected);
    await expect(pool.connect()).rejects.toMatchObject(expected);
    // pg's callback form, which pool.query itself uses.
    const viaCallback = await new Promise<unknown>((resolve) => {
      pool.connect((error) => resolve(error));
    });
    expect(viaCallback).toMatchObject(expected);
    held.release();
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('is what store reads get inside as many transactions as the pool has connections (after 10 s)', async () => {
    // The README's known limit: a unit of work holds one pooled connection, and a read through the
    // store inside it needs another; with none free it must fail with a typed error, not pg's.
    const schema = testSchemaName('pool_wait');
    schemas.push(schema);
    const backend = new PostgresEventStoreBackend({
      url: postgresTestUrl(),
      schema,
      poolSize: 2,
      logger: silentLogger,
    });
    cleanups.push(() => backend.close());
    await backend.open();
    const storage = backend.outboxStorage();
    const started = Date.now();
    const reads = await Promise.all(
      [1, 2].map(() =>
        storage.transaction(() =>
          backend.readStream('s-1', { fromVersion: 0 }).catch((error: unknown) => error),
        ),
      ),
    );
    // The first to give up frees its transaction's connection, which the other read then takes.
    const failed = reads.filter((read) => !Array.isArray(read));
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const read of failed) expect(read).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'postgres' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_900);
  }, 30_000);
});
