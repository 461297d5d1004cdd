import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import { FaultProxy } from '../testing/fault-proxy.js';
import { testIdempotencyStore } from '../testing/idempotency-store-contract.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const backends: PostgresEventStoreBackend[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
  for (const cleanup of cleanups.splice(0)) await cleanup();
});
afterAll(() => dropSchemas(schemas));

function freshSchema(): string {
  const schema = testSchemaName('idem');
  schemas.push(schema);
  return schema;
}

async function open(schema: string, url = postgresTestUrl()): Promise<PostgresEventStoreBackend> {
  const backend = new PostgresEventStoreBackend({ url, schema, poolSize: 4, logger: silentLogger });
  await backend.open();
  backends.push(backend);
  return backend;
}

async function sql<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: postgresTestUrl() });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

const answer = { status: 201, headers: { 'content-type': 'application/json' }, body: '{"ok":true}' };

testIdempotencyStore(
  'postgres',
  {
    async create(options = {}) {
      const schema = freshSchema();
      const backend = await open(schema);
      return {
        store: backend.idempotencyStore(options),
        sibling: async (o = {}) => (await open(schema)).idempotencyStore(o),
        async restart() {
          await backend.close();
          return (await open(schema)).idempotencyStore(options);
        },
        close: () => backend.close(),
      };
    },
  },
  { durable: true },
);

describe('PostgresIdempotencyStore', () => {
  it('keeps the keys of one namespace apart from another in the same schema', async () => {
    const backend = await open(freshSchema());
    const orders = backend.idempotencyStore({ namespace: 'orders' });
    const users = backend.idempotencyStore({ namespace: 'users' });
    const begun = await orders.begin('k', 'f');
    expect((await users.begin('k', 'g')).state).toBe('new');
    await orders.complete('k', answer, begun.state === 'new' ? begun.claim : undefined);
    expect(await orders.begin('k', 'f')).toEqual({ state: 'replay', response: answer });
    expect(await users.begin('k', 'g')).toEqual({ state: 'in-progress' });
  });

  it('deletes expired keys in batches, and only those', async () => {
    const schema = freshSchema();
    const backend = await open(schema);
    const store = backend.idempotencyStore();
    const done = await store.begin('live-done', 'f');
    await store.complete('live-done', answer, done.state === 'new' ? done.claim : undefined);
    await store.begin('live-held', 'f');
    // The first begin swept in the background; waiting for that sweep, then planting old keys.
    await store.deleteExpired();
    // 1,200 keys past their time, as a long-stopped service leaves them (answers and claims).
    await sql(
      `INSERT INTO "${schema}".idempotency (namespace, key, fingerprint, claim, status, headers, body, expires_at)
       SELECT '', 'old-' || i, 'f', CASE WHEN i % 2 = 0 THEN 'c' END, CASE WHEN i % 2 = 1 THEN 200 END,
              '{}', '', now() - interval '1 second'
       FROM generate_series(1, 1200) AS i`,
    );
    expect(await store.deleteExpired()).toBe(1200);
    expect(await store.deleteExpired()).toBe(0);
    const left = await sql<{ key: string }>(`SELECT key FROM "${schema}".idempotency ORDER BY key`);
    expect(left.map((r) => r.key)).toEqual(['live-done', 'live-held']);
    expect(await store.begin('live-done', 'f')).toEqual({ state: 'replay', response: answer });
  });

  it('claims, answers and replays every key once while the network resets connections under it', async () => {
    const schema = freshSchema();
    await (await open(schema)).close();
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: 5432 });
    cleanups.push(() => proxy.close());
    const url = new URL(postgresTestUrl());
    url.port = String(proxy.port);
    const store = (await open(schema, url.toString())).idempotencyStore();

    let completed = 0;
    const failures: unknown[] = [];
    const refused: string[] = [];
    let stop = false;
    const workers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const key = `w${w}-${i}`;
        try {
          const begun = await store.begin(key, 'f');
          // A fresh key: a retried claim that had committed must still be this request's.
          if (begun.state !== 'new') {
            refused.push(`${key}: ${begun.state}`);
            continue;
          }
          await store.complete(key, { ...answer, body: key }, begun.claim);
          completed++;
        } catch (error) {
          failures.push(error);
        }
      }
    });
    for (let k = 0; k < 5; k++) {
      await waitFor(() => completed >= (k + 1) * 100, 'progress between resets', 20_000);
      proxy.reset();
    }
    stop = true;
    await Promise.all(workers);

    expect(failures).toEqual([]);
    expect(refused).toEqual([]);
    const rows = await sql<{ key: string; body: Buffer; status: number | null }>(
      `SELECT key, body, status FROM "${schema}".idempotency`,
    );
    expect(rows).toHaveLength(completed);
    for (const row of rows) {
      expect(row.status).toBe(201);
      expect(row.body.toString()).toBe(row.key);
    }
  }, 60_000);
});
