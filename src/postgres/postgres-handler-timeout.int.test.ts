import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import { createOutbox, type Outbox } from '../outbox/outbox.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { cancelHoldingProxy } from './fixtures/cancel-holding-proxy.js';
import { otherSession } from './fixtures/other-session.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => dropSchemas(schemas));

/** A PostgreSQL store with two pooled connections, an outbox on it and a memory bus. */
async function setUp(url = postgresTestUrl()): Promise<{
  schema: string;
  backend: PostgresEventStoreBackend;
  outbox: Outbox;
  bus: Bus;
}> {
  const schema = testSchemaName('handler_timeout');
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({
    url,
    schema,
    poolSize: 2,
    logger: silentLogger,
  });
  await backend.open();
  cleanups.push(() => backend.close());
  const store = new EventStore(backend, { logger: silentLogger });
  const bus = await createBus({ url: `memory://${schema}`, service: 'svc', logger: silentLogger });
  cleanups.push(() => bus.close());
  const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
  return { schema, backend, outbox, bus };
}

let admin: Awaited<ReturnType<typeof otherSession>> | undefined;
afterEach(() => {
  admin = undefined;
});

/** Backends of the test database still running `text` (other than the asking session). */
async function stillRunning(text: string): Promise<number> {
  admin ??= await otherSession(cleanups);
  const { rows } = await admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query = $1 AND pid <> pg_backend_pid()",
    [text],
  );
  return rows[0]?.n ?? 0;
}

describe('a transactional handler past its time limit (PostgreSQL)', () => {
  // Before, its ROLLBACK waited behind the statement under way: the unit's locks, its pooled
  // connection and the server's session were held until that statement ended by itself.
  it.each([400, 1500])(
    'ends its unit of work at the limit (%i ms), its own long statement cancelled: its lock and connection are free, nothing it wrote is kept',
    async (limit) => {
      const { schema, backend, outbox, bus } = await setUp();
      const sleepSql = `SELECT pg_sleep(20) /* ${schema} */`;
      const started: number[] = [];
      await bus.subscribe(
        'job.run',
        async (_message, { work }) => {
          started.push(performance.now());
          await work.lock('k');
          await work.append('written', [{ type: 'Tick', data: {} }], { expectedVersion: 'no_stream' });
          await work.query(sleepSql);
        },
        { unitOfWork: outbox, handlerTimeoutMs: limit, maxAttempts: 1 },
      );
      await bus.publish('job.run', {});
      await waitFor(
        async () => (await stillRunning(sleepSql)) === 1,
        'the handler to hold the key and sleep',
      );

      // Another process takes the key the unit held as soon as the unit has ended.
      const other = await otherSession(cleanups);
      await other.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [`ferry-lock:${schema}:k`]);
      const freedAfter = performance.now() - started[0]!;
      expect(freedAfter).toBeGreaterThanOrEqual(limit - 20);
      expect(freedAfter).toBeLessThan(limit + 1000);
      expect(await stillRunning(sleepSql)).toBe(0);

      // Both pooled connections are back, in order: two units of work run on them together now.
      const rows = await Promise.all(
        [0, 1].map(() => outbox.unitOfWork((work) => work.query('SELECT 1 AS one, pg_sleep(0.05)'))),
      );
      expect(rows.flat()).toMatchObject([{ one: 1 }, { one: 1 }]);
      expect(await backend.readStream('written', { fromVersion: 0 })).toEqual([]);
      expect(started).toHaveLength(1);
    },
    20_000,
  );

  it("cancels the store's own statement waiting for a lock at the limit, and the unit's writes are not kept", async () => {
    const { schema, backend, outbox, bus } = await setUp();
    const limit = 600;
    // Another process holds the key the handler waits for, and does not let go during the test.
    const holder = await otherSession(cleanups);
    await holder.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [`ferry-lock:${schema}:k`]);
    const started: number[] = [];
    let lockError: unknown;
    await bus.subscribe(
      'job.run',
      async (_message, { work }) => {
        started.push(performance.now());
        await work.append('waiting', [{ type: 'Tick', data: {} }], { expectedVersion: 'no_stream' });
        await work.lock('k').catch((error: unknown) => {
          lockError = error;
        });
      },
      { unitOfWork: outbox, handlerTimeoutMs: limit, maxAttempts: 1 },
    );
    await bus.publish('job.run', {});
    await waitFor(() => started.length === 1, 'the handler to start');
    const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const waiting = async () =>
      (
        await holder.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
          [holderPid],
        )
      ).rows[0]!.n;
    await waitFor(async () => (await waiting()) === 1, 'the unit to wait for the key');
    // Its wait ends at the limit.
    await waitFor(async () => (await waiting()) === 0, 'the wait to end', 5000);
    const freedAfter = performance.now() - started[0]!;
    expect(freedAfter).toBeGreaterThanOrEqual(limit - 20);
    expect(freedAfter).toBeLessThan(limit + 1000);
    expect(await backend.readStream('waiting', { fromVersion: 0 })).toEqual([]);
    // The call cancelled says why: its unit of work has ended (not pg's "canceling statement").
    await waitFor(() => lockError !== undefined, 'the lock call to settle');
    expect(lockError).toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED', cause: { code: '57014' } });
  }, 20_000);

  it('never cancels a statement of another unit of work, even when the cancel reaches the server late (a proxy holds it back)', async () => {
    // A unit whose callback threw while its lock wait ran: the cancel was sent, the lock was granted
    // by itself a few ms later, the unit rolled back and its connection went back to the pool; the
    // cancel, held back on the way, then cancelled the statement of the next unit given that
    // connection (7 of 8 rounds, found by an outside review). Such a connection is now closed.
    const proxy = await cancelHoldingProxy(60);
    cleanups.push(() => proxy.close());
    const { outbox } = await setUp(proxy.url);
    const failures: unknown[] = [];
    const unitErrors: unknown[] = [];
    for (let round = 0; round < 6; round++) {
      let locked!: () => void;
      const holding = new Promise<void>((resolve) => {
        locked = resolve;
      });
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      const holder = outbox.unitOfWork(async (work) => {
        await work.lock('k');
        locked();
        await released;
      });
      await holding;
      unitErrors.push(
        await outbox
          .unitOfWork(async (work) => {
            work.lock('k').catch(() => {});
            await sleep(200);
            // The holder commits as this unit fails: its lock wait, still running when the cancel
            // is sent, is granted by itself a moment later, before the held-back cancel arrives.
            release();
            throw new Error('past its time limit');
          })
          .catch((e: unknown) => e),
      );
      await holder;
      // Units of work given the pool's connections while the cancel is on its way.
      const others = Array.from({ length: 4 }, () =>
        outbox
          .unitOfWork((work) => work.query('SELECT pg_sleep(0.05)'))
          .catch((e: unknown) => {
            failures.push(e);
          }),
      );
      await Promise.all(others);
      await sleep(100);
    }
    expect(proxy.cancels()).toBe(6);
    expect(failures).toEqual([]);
    expect(unitErrors.every((e) => (e as Error).message === 'past its time limit')).toBe(true);
  }, 30_000);

  it('refuses the answer of a statement that ended by itself after its unit failed (the cancel held back)', async () => {
    // Before, the call resolved with its rows after the unit had rolled back: a handler that ignored
    // its signal could act on a success of which nothing was kept.
    const proxy = await cancelHoldingProxy(2000);
    cleanups.push(() => proxy.close());
    const { outbox } = await setUp(proxy.url);
    let call: Promise<unknown> | undefined;
    const error = await outbox
      .unitOfWork(async (work) => {
        call = work.query('SELECT pg_sleep(0.4), 1 AS one');
        call.catch(() => {});
        await sleep(100);
        throw new Error('past its time limit');
      })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ message: 'past its time limit' });
    await expect(call).rejects.toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
    expect(proxy.cancels()).toBe(1);
  });
});
