import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { otherSession } from './fixtures/other-session.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => dropSchemas(schemas));

function backendFor(schema: string, statementTimeoutMs: number): PostgresEventStoreBackend {
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 2,
    statementTimeoutMs,
    logger: silentLogger,
  });
  cleanups.push(() => backend.close());
  return backend;
}

const event = { id: crypto.randomUUID(), type: 'Tick', data: {}, metadata: {} };

describe('PostgreSQL statement time limit', () => {
  it.each([400, 1200])(
    'cancels a statement waiting for a lock after statementTimeoutMs (%i ms), then works on',
    async (limit) => {
      const schema = testSchemaName('stmt_timeout');
      const backend = backendFor(schema, limit);
      await backend.open();
      const storage = backend.outboxStorage();
      // A unit of work elsewhere holds the key, and never ends by itself.
      const stuck = await otherSession(cleanups);
      await stuck.query('BEGIN');
      await stuck.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`ferry-lock:${schema}:k`]);

      const started = performance.now();
      const error = await storage.transaction((work) => work.lock(['k'])).catch((e: unknown) => e);
      const waited = performance.now() - started;
      expect(error).toMatchObject({ code: '57014' });
      expect(waited).toBeGreaterThanOrEqual(limit - 20);
      expect(waited).toBeLessThan(limit + 1000);

      // Its connection went back to the pool in order: the key, once free, is taken; appends go on.
      await stuck.query('ROLLBACK');
      await storage.transaction((work) => work.lock(['k']));
      await expect(backend.append('s', [event], 'no_stream')).resolves.toMatchObject({
        nextExpectedVersion: 0,
      });
    },
    20_000,
  );

  it("gives migrations no limit (another process's migration is waited for), then pools connections with it", async () => {
    const schema = testSchemaName('stmt_timeout');
    const backend = backendFor(schema, 300);
    // Another process migrating the same schema holds its migration lock for longer than the limit.
    const migrating = await otherSession(cleanups);
    await migrating.query('SELECT pg_advisory_lock(hashtext($1))', [`ferry-migrations:${schema}`]);
    const opening = backend.open();
    await new Promise((resolve) => setTimeout(resolve, 800));
    await migrating.query('SELECT pg_advisory_unlock(hashtext($1))', [`ferry-migrations:${schema}`]);
    await opening;
    // Both pooled connections (the one that migrated among them) have the limit.
    const limits = await Promise.all(
      [0, 1].map(() =>
        backend.outboxStorage().transaction(async (work) => {
          const rows = await work.query('SHOW statement_timeout');
          await work.query('SELECT pg_sleep(0.05)');
          return rows[0]?.statement_timeout;
        }),
      ),
    );
    expect(limits).toEqual(['300ms', '300ms']);
  }, 20_000);

  it.each([700, 1500])(
    'ends a unit of work left idle in its transaction for statementTimeoutMs (%i ms), a stopped process say: its locks go to the next',
    async (limit) => {
      const schema = testSchemaName('stmt_timeout');
      const stalled = backendFor(schema, limit);
      await stalled.open();
      // Another process, without a limit of its own: it waits for the key as long as it is held.
      const next = backendFor(schema, 0);
      await next.open();
      const steps: string[] = [];
      const frozen = stalled
        .outboxStorage()
        .transaction(async (work) => {
          await work.lock(['k']);
          await work.append('frozen', [{ ...event, id: crypto.randomUUID() }], 'no_stream');
          steps.push('stalled holds the key');
          // The process stops between two statements (SIGSTOP, a blocked event loop, a slow call).
          await new Promise((resolve) => setTimeout(resolve, limit + 2500));
          steps.push('stalled goes on');
        })
        .catch((e: unknown) => e);
      await waitFor(() => steps.length > 0, 'the stalled unit to hold the key');
      await next.outboxStorage().transaction(async (work) => {
        await work.lock(['k']);
        steps.push('next holds the key');
        // What the stalled unit wrote was rolled back with it.
        await work.append('frozen', [{ ...event, id: crypto.randomUUID() }], 'no_stream');
      });
      // Not committed, and known not to be: its connection was ended before its COMMIT was sent.
      expect(await frozen).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: false });
      expect(steps).toEqual(['stalled holds the key', 'next holds the key', 'stalled goes on']);
      // The stalled store works on, on a fresh connection.
      await expect(
        stalled.append('after', [{ ...event, id: crypto.randomUUID() }], 'no_stream'),
      ).resolves.toMatchObject({
        nextExpectedVersion: 0,
      });
    },
    20_000,
  );

  it('reports the idle unit as STORE_UNAVAILABLE, not committed, when its work catches the failed statement', async () => {
    const schema = testSchemaName('stmt_timeout');
    const backend = backendFor(schema, 500);
    await backend.open();
    let statementError: unknown;
    const unitError = await backend
      .outboxStorage()
      .transaction(async (work) => {
        await work.append('caught', [{ ...event, id: crypto.randomUUID() }], 'no_stream');
        await new Promise((resolve) => setTimeout(resolve, 1200));
        // The work goes on after the failed statement, as a handler with a fallback would.
        statementError = await work.query('SELECT 1').catch((e: unknown) => e);
      })
      .catch((e: unknown) => e);
    // Before, pg's bare "Client has encountered a connection error" (no code): a bus handler that
    // wrapped it was counted and dead-lettered instead of waiting out the outage.
    expect(statementError).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: false });
    expect(unitError).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: false });
    expect(await backend.readStream('caught', { fromVersion: 0 })).toEqual([]);

    // The same through an outbox's unit of work, which dooms a unit whose call failed: the store's
    // failure as it is, not UNIT_OF_WORK_ROLLED_BACK naming it as its cause.
    const store = new EventStore(backend, { logger: silentLogger });
    const bus = await createBus({ url: `memory://idle-${schema}`, service: 'svc', logger: silentLogger });
    cleanups.push(() => bus.close());
    const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
    const outboxError = await outbox
      .unitOfWork(async (work) => {
        await work.append('caught-2', [{ type: 'Tick', data: {} }], { expectedVersion: 'no_stream' });
        await new Promise((resolve) => setTimeout(resolve, 1200));
        await work.query('SELECT 1').catch(() => {});
      })
      .catch((e: unknown) => e);
    expect(outboxError).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: false });
    expect(await backend.readStream('caught-2', { fromVersion: 0 })).toEqual([]);

    // Work that catches it and throws an error of its own: the store's failure is still the
    // outcome (a bus handler is then retried as in an outage, not counted and dead-lettered), and
    // SQL of the caller's that was never sent cannot have ended the transaction (CASE … END).
    let sqlError: unknown;
    const ownError = await outbox
      .unitOfWork(async (work) => {
        await work.append('caught-3', [{ type: 'Tick', data: {} }], { expectedVersion: 'no_stream' });
        await new Promise((resolve) => setTimeout(resolve, 1200));
        try {
          await work.query('SELECT CASE WHEN true THEN 1 END');
        } catch (e) {
          sqlError = e;
          throw new Error('could not record the order');
        }
      })
      .catch((e: unknown) => e);
    expect(sqlError).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: false });
    expect(ownError).toBe(sqlError);
    expect(await backend.readStream('caught-3', { fromVersion: 0 })).toEqual([]);
  });

  it('reports a COMMIT met by the end of the idle session (25P03) as not committed, not as unknown', async () => {
    const schema = testSchemaName('stmt_timeout');
    const limit = 300;
    const backend = backendFor(schema, limit);
    await backend.open();
    const outcomes: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      const stream = `blocked-${i}`;
      const error = await backend
        .outboxStorage()
        .transaction(async (work) => {
          await work.append(stream, [{ ...event, id: crypto.randomUUID() }], 'no_stream');
          // The event loop is held past the limit (a long synchronous step): the server ends the
          // session meanwhile, and the COMMIT is sent before its notice is read, so that COMMIT
          // meets the server's idle-timeout error (25P03). The COMMIT never ran.
          const until = Date.now() + limit + 300;
          while (Date.now() < until) {}
        })
        .catch((e: unknown) => e as { code?: string; outcomeUnknown?: boolean; cause?: { code?: string } });
      expect(await backend.readStream(stream, { fromVersion: 0 })).toEqual([]);
      outcomes.push(error);
    }
    for (const error of outcomes) {
      expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: false });
    }
    expect(outcomes.some((e) => (e as { cause?: { code?: string } }).cause?.code === '25P03')).toBe(true);
  }, 20_000);

  it('sets no limit with 0, whatever the database sets', async () => {
    // A database of its own: a database-level setting would reach every other test's connections.
    const database = `ferry_idle_${crypto.randomUUID().replaceAll('-', '').slice(0, 10)}`;
    const admin = await otherSession(cleanups);
    await admin.query(`CREATE DATABASE ${database}`);
    cleanups.push(() => admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
    await admin.query(
      `ALTER DATABASE ${database} SET idle_in_transaction_session_timeout = '400ms'; ALTER DATABASE ${database} SET statement_timeout = '400ms'`,
    );
    const url = new URL(postgresTestUrl());
    url.pathname = `/${database}`;
    const backend = new PostgresEventStoreBackend({
      url: url.toString(),
      schema: 'ferry',
      poolSize: 2,
      statementTimeoutMs: 0,
      logger: silentLogger,
    });
    cleanups.push(() => backend.close());
    await backend.open();
    await backend.outboxStorage().transaction(async (work) => {
      expect(await work.query('SHOW idle_in_transaction_session_timeout')).toEqual([
        { idle_in_transaction_session_timeout: '0' },
      ]);
      await work.append('idle', [{ ...event, id: crypto.randomUUID() }], 'no_stream');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await work.query('SELECT pg_sleep(0.6)');
    });
    expect(await backend.readStream('idle', { fromVersion: 0 })).toHaveLength(1);
  }, 20_000);

  it('refuses a limit that is not an integer from 0 to 2147483647', () => {
    for (const statementTimeoutMs of [-1, 1.5, Number.NaN, 2 ** 31]) {
      expect(
        () => new PostgresEventStoreBackend({ url: postgresTestUrl(), statementTimeoutMs }),
        String(statementTimeoutMs),
      ).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    }
    expect(
      () => new PostgresEventStoreBackend({ url: postgresTestUrl(), statementTimeoutMs: 0 }),
    ).not.toThrow();
  });
});
