import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isReadHeldBackError, type ReadHeldBackError } from '../eventstore/held-back.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

// A transaction left open in ANOTHER database of the cluster holds back only the events committed
// after it began (they might be preceded by its own commit); those committed before stay readable.

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

async function openStore(horizonWaitMs = 600, schema = testSchemaName('heldback')): Promise<EventStore> {
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    horizonWaitMs,
    logger: silentLogger,
  });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  cleanups.push(() => store.close());
  return store;
}

/** `BEGIN; SELECT pg_current_xact_id()` in the `postgres` database, left open. */
async function openTransactionInAnotherDatabase() {
  const url = new URL(postgresTestUrl());
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString(), application_name: 'ferry-test-idle' });
  await client.connect();
  cleanups.push(() => client.end());
  await client.query('BEGIN');
  const { rows } = await client.query<{ pid: number }>(
    'SELECT pg_backend_pid() AS pid, pg_current_xact_id()::text AS xid',
  );
  return { pid: rows[0]!.pid, commit: () => client.query('COMMIT') };
}

describe('PostgreSQL reads while a transaction is idle in another database', () => {
  it('readAll returns the events committed before that transaction began, then rejects with READ_HELD_BACK', async () => {
    const store = await openStore();
    await store.append('s1', [{ type: 'T', data: 1 }]);
    const idle = await openTransactionInAnotherDatabase();
    await store.append('s1', [{ type: 'T', data: 2 }]);

    const got: unknown[] = [];
    const error = await (async () => {
      for await (const event of store.readAll()) got.push(event.data);
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(got).toEqual([1]);
    expect(isReadHeldBackError(error), String(error)).toBe(true);
    expect((error as ReadHeldBackError).transaction?.pid).toBe(idle.pid);

    await idle.commit();
    const all: unknown[] = [];
    for await (const event of store.readAll()) all.push(event.data);
    expect(all).toEqual([1, 2]);
  });

  it('readAll after an earlier READ_HELD_BACK ends at its own end, not the earlier one', async () => {
    const store = await openStore();
    const idle = await openTransactionInAnotherDatabase();
    await store.append('s1', [{ type: 'T', data: 1 }]);
    const first = await (async () => {
      for await (const _ of store.readAll()) {
      }
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isReadHeldBackError(first), String(first)).toBe(true);
    await idle.commit();
    // Committed after the first read gave up, before the second began: the second must return it.
    await store.append('s1', [{ type: 'T', data: 2 }]);
    const all: unknown[] = [];
    for await (const event of store.readAll()) all.push(event.data);
    expect(all).toEqual([1, 2]);
  });

  it('a subscription handles the events committed before that transaction began, the rest once it ends', async () => {
    const store = await openStore();
    await store.append('s1', [{ type: 'T', data: 1 }]);
    const idle = await openTransactionInAnotherDatabase();
    await store.append('s1', [{ type: 'T', data: 2 }]);

    const seen: unknown[] = [];
    const subscription = store.subscribe({ name: 'projector', from: 'start' }, async (event) => {
      seen.push(event.data);
    });
    await waitFor(
      () => seen.length === 1,
      () => `event 1 handled while the transaction is open (saw ${JSON.stringify(seen)})`,
      3000,
    );
    expect(seen).toEqual([1]);
    await idle.commit();
    await waitFor(() => seen.length === 2, 'event 2 handled once the transaction ended');
    expect(seen).toEqual([1, 2]);
    await subscription.close();
  });

  // close() stops what waits for the held-back positions: it used to wait out horizonWaitMs (or the
  // 5 s own-writes wait), and a read cut by the pool's end rejected with pg's own error.
  it('close() ends a readAll waiting for them with EVENT_STORE_CLOSED, at once', async () => {
    const store = await openStore(30_000);
    await store.append('s1', [{ type: 'T', data: 'before' }]);
    await openTransactionInAnotherDatabase();
    await store.append('s1', [{ type: 'T', data: 'after' }]);
    const got: unknown[] = [];
    const reading = (async () => {
      for await (const event of store.readAll()) got.push(event.data);
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    await waitFor(() => got.length === 1, 'the event committed before the transaction');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = Date.now();
    await store.close();
    const error = await reading;
    expect(Date.now() - started).toBeLessThan(2000);
    expect(got).toEqual(['before']);
    expect((error as { code?: string })?.code, String(error)).toBe('EVENT_STORE_CLOSED');
  });

  it('close() stops subscriptions from start and from end waiting for them within a second', async () => {
    for (const from of ['start', 'end'] as const) {
      const store = await openStore(30_000);
      await store.append('s1', [{ type: 'T', data: 1 }]);
      await openTransactionInAnotherDatabase();
      await store.append('s1', [{ type: 'T', data: 2 }]);
      const handled: unknown[] = [];
      const sub = store.subscribe({ name: `held-${from}` }, (event) => {
        handled.push(event.data);
      });
      if (from === 'start') await waitFor(() => handled.length === 1, 'the event before the transaction');
      await new Promise((resolve) => setTimeout(resolve, 300));
      const started = Date.now();
      await store.close();
      expect(Date.now() - started, from).toBeLessThan(1000);
      await sub.done;
      expect(handled).toEqual(from === 'start' ? [1] : []);
    }
  });

  it("a from: 'end' subscription closed while it waits for them stores the last final position: its next start misses nothing", async () => {
    const schema = testSchemaName('heldback');
    const store = await openStore(30_000, schema);
    await store.append('s1', [{ type: 'T', data: 1 }]);
    const idle = await openTransactionInAnotherDatabase();
    await store.append('s1', [{ type: 'T', data: 2 }]);
    const sub = store.subscribe({ name: 'held-end', from: 'end' }, () => {});
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    // It stored no checkpoint (waiting for the end was cut short), and its next start took the end
    // as it was then: event 3, appended in between, never reached it.
    await store.close();
    expect(Date.now() - started).toBeLessThan(1000);
    await sub.done;
    await idle.commit();
    const again = await openStore(600, schema);
    await again.append('s1', [{ type: 'T', data: 3 }]);
    const handled: unknown[] = [];
    const resumed = again.subscribe({ name: 'held-end', from: 'end' }, (event) => {
      handled.push(event.data);
    });
    await resumed.caughtUp();
    // 2 was committed after the transaction began: it may come again, never 3 missed, never 1.
    expect(handled).toContain(3);
    expect(handled).not.toContain(1);
    await resumed.close();
  });
});
