import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isReadHeldBackError, type ReadHeldBackError } from '../eventstore/held-back.js';
import { EventStore } from '../eventstore/store.js';
import type { PreparedEvent } from '../eventstore/types.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { type Logger, silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { type PostgresBackendOptions, PostgresEventStoreBackend } from './postgres-backend.js';

// An unrelated client holding a transaction (with an id) open: the horizon of the whole cluster
// stays below it until it ends.

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

type Options = Partial<Omit<PostgresBackendOptions, 'url' | 'schema'>>;

async function openStore(options: Options = {}, logger: Logger = silentLogger) {
  const schema = testSchemaName('horizon');
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 4,
    logger,
    ...options,
  });
  await backend.open();
  const store = new EventStore(backend, { logger });
  cleanups.push(() => store.close());
  return { store, backend };
}

async function collectPositions(store: EventStore): Promise<bigint[]> {
  const positions: bigint[] = [];
  for await (const event of store.readAll()) positions.push(event.position);
  return positions;
}

/** `BEGIN; SELECT txid_current()` on its own connection, left open. */
async function openTransaction(applicationName = 'ferry-test-blocker') {
  const client = new pg.Client({ connectionString: postgresTestUrl(), application_name: applicationName });
  await client.connect();
  cleanups.push(() => client.end());
  await client.query('BEGIN');
  const { rows } = await client.query<{ pid: number; xid: string }>(
    'SELECT pg_backend_pid() AS pid, txid_current()::text AS xid',
  );
  return { client, pid: rows[0]!.pid, xid: BigInt(rows[0]!.xid), commit: () => client.query('COMMIT') };
}

function event(type: string): PreparedEvent {
  return { id: uuidv7(), type, data: type, metadata: {} };
}

function capture(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { ...silentLogger, warnings, warn: (message: string) => void warnings.push(message) };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('PostgreSQL reads around a transaction open elsewhere', () => {
  it('does not fix the end of the global order while a transaction open before it may still commit below it', async () => {
    const { backend } = await openStore({ horizonWaitMs: 400 });
    const blocker = await openTransaction();
    let last = 0n;
    for (let i = 0; i < 5; i++) last = (await backend.append(`s-${i}`, [event('E')], 'any')).position;

    const started = Date.now();
    const error = (await rejection(backend.horizon())) as ReadHeldBackError;
    const waited = Date.now() - started;
    expect(isReadHeldBackError(error)).toBe(true);
    expect(error.code).toBe('READ_HELD_BACK');
    // The end covers the five committed events; the blocker, named, is why it is not final yet.
    expect(error.position >= last).toBe(true);
    expect(error.waitedMs).toBeGreaterThanOrEqual(400);
    expect(waited).toBeGreaterThanOrEqual(400);
    expect(waited).toBeLessThan(3000);
    expect(error.transaction).toMatchObject({
      xid: blocker.xid,
      pid: blocker.pid,
      applicationName: 'ferry-test-blocker',
      state: 'idle in transaction',
    });
    expect(error.transaction!.ageMs).toBeGreaterThanOrEqual(400);
    expect(error.message).toContain(`pid ${blocker.pid}`);

    // Once the blocker ends, the same end is final and every event up to it is readable.
    const waiting = backend.horizon();
    await sleep(100);
    await blocker.commit();
    const end = await waiting;
    expect(end).toBe(error.position);
    const { events } = await backend.readAfter(0n, 500, undefined);
    expect(events.filter((e) => e.position <= end)).toHaveLength(5);
  });

  it('readAll returns every event committed before it, or rejects with READ_HELD_BACK; never ends early', async () => {
    const { store } = await openStore({ horizonWaitMs: 500 });
    const blocker = await openTransaction();
    for (let i = 0; i < 5; i++) await store.append(`s-${i}`, [{ type: 'E', data: i }]);
    const collect = async () => {
      const out: number[] = [];
      for await (const e of store.readAll()) out.push(e.data as number);
      return out;
    };
    // Another store instance on the same schema (no own appends to wait for) and this one alike.
    const otherBackend = new PostgresEventStoreBackend({
      url: postgresTestUrl(),
      schema: schemas[schemas.length - 1]!,
      horizonWaitMs: 500,
      logger: silentLogger,
    });
    await otherBackend.open();
    const other = { store: new EventStore(otherBackend, { logger: silentLogger }) };
    cleanups.push(() => other.store.close());
    for (const reader of [store, other.store]) {
      const started = Date.now();
      const error = (await rejection(
        (async () => {
          const out: unknown[] = [];
          for await (const e of reader.readAll()) out.push(e);
          return out;
        })(),
      )) as ReadHeldBackError;
      expect(isReadHeldBackError(error)).toBe(true);
      expect(error.transaction?.pid).toBe(blocker.pid);
      expect(Date.now() - started).toBeLessThan(4000);
    }
    // The blocker ends while a read waits: the read returns all five.
    const reading = collect();
    await sleep(100);
    await blocker.commit();
    expect(await reading).toEqual([0, 1, 2, 3, 4]);
    expect(await collect()).toEqual([0, 1, 2, 3, 4]);
  });

  it("subscribes from 'end' without replaying events committed before, while a transaction holds the horizon", async () => {
    const logger = capture();
    const { store } = await openStore({ horizonWaitMs: 200 }, logger);
    const blocker = await openTransaction();
    await store.append('before', [
      { type: 'Before', data: 1 },
      { type: 'Before', data: 2 },
    ]);
    await store.append('before-2', [{ type: 'Before', data: 3 }]);

    const seen: string[] = [];
    const sub = store.subscribe({ name: 'from-end', from: 'end', idlePollMs: 50 }, (e) => {
      seen.push(`${e.type}:${String(e.data)}`);
    });
    await sleep(400);
    // A transaction that begins after the subscription looked for its end is after it.
    await store.append('during', [{ type: 'During', data: 4 }]);
    await sleep(300);
    await blocker.commit();
    await sub.caughtUp();
    await store.append('after', [{ type: 'After', data: 5 }]);
    await waitFor(
      () => seen.length >= 2,
      () => `During and After, saw ${seen.join(', ')}`,
    );
    await sleep(200);
    expect(seen).toEqual(['During:4', 'After:5']);
    // The start could not be fixed while the blocker was open: the subscription said so and retried.
    expect(logger.warnings.some((w) => w.includes('from-end') && w.includes('find the end'))).toBe(true);
    await sub.close();
  });

  it('an end whose wait was aborted is not the end later calls get: they see what was committed since', async () => {
    const { store, backend } = await openStore({ horizonWaitMs: 30_000 });
    await store.append('h-1', [{ type: 'T', data: 1 }]);
    const blocker = await openTransaction();
    // Committed after the blocker began: the end now lies past it, and waits for it.
    await store.append('h-2', [{ type: 'T', data: 'x' }]);
    const aborted = new AbortController();
    const waiting = backend.horizon({ signal: aborted.signal }).catch((error: unknown) => error);
    await sleep(50);
    aborted.abort(new Error('stop'));
    expect(await waiting).toEqual(new Error('stop'));
    await blocker.commit();
    await store.append('h-1', [{ type: 'T', data: 2 }]);
    // The aborted call's end stayed shared with no time limit: every later horizon() (a subscription's
    // start, a standby's caughtUp) answered it for good, and a subscription's reads stopped there.
    const last = (await collectPositions(store)).at(-1)!;
    expect(await backend.horizon()).toBeGreaterThanOrEqual(last);
    const got: unknown[] = [];
    const sub = store.subscribe({ name: 'after-abort' }, (e) => {
      got.push(e.data);
    });
    await sub.caughtUp();
    expect(got).toEqual([1, 'x', 2]);
    await sub.close();
  });

  it("subscribes from 'end' at once, replaying nothing, when no transaction is open", async () => {
    const { store } = await openStore();
    await store.append('before', [{ type: 'Before', data: 1 }]);
    const seen: string[] = [];
    const sub = store.subscribe(
      { name: 'quick', from: 'end', idlePollMs: 50 },
      (e) => void seen.push(e.type),
    );
    await sub.caughtUp();
    await store.append('after', [{ type: 'After', data: 2 }]);
    await waitFor(() => seen.length === 1, 'After');
    await sleep(100);
    expect(seen).toEqual(['After']);
    await sub.close();
  });

  it('names the oldest open transaction for a readiness check, and warns about it when it holds subscribers back', async () => {
    const logger = capture();
    // Transaction ids are cluster-wide: a second, not less, so that the short transactions of tests
    // running beside this one (units of work held a few hundred ms) are not the oldest named.
    const { store, backend } = await openStore({ longTransactionWarnMs: 1000 }, logger);
    const blocker = await openTransaction('forgotten-migration');
    await store.append('held', [{ type: 'Held', data: 1 }]);
    const sub = store.subscribe({ name: 'held', idlePollMs: 50 }, () => {});

    await waitFor(() => logger.warnings.some((w) => w.includes('are held back by')), 'a warning');
    const warning = logger.warnings.find((w) => w.includes('are held back by'))!;
    expect(warning).toContain(`pid ${blocker.pid}`);
    expect(warning).toContain('"forgotten-migration"');
    expect(warning).toContain('idle in transaction');
    expect(warning).toMatch(/open for \d+ s/);
    // Once per interval (a minute), not once per read.
    await sleep(500);
    expect(logger.warnings.filter((w) => w.includes('are held back by'))).toHaveLength(1);

    const oldest = await backend.oldestOpenTransaction();
    expect(oldest).toMatchObject({
      xid: blocker.xid,
      pid: blocker.pid,
      applicationName: 'forgotten-migration',
      state: 'idle in transaction',
    });
    expect(oldest!.ageMs).toBeGreaterThanOrEqual(1000);

    await blocker.commit();
    // Others' short transactions may be open in the shared cluster, never this one.
    expect((await backend.oldestOpenTransaction())?.pid).not.toBe(blocker.pid);
    await sub.close();
  });

  it('does not warn about transactions shorter than longTransactionWarnMs', async () => {
    const logger = capture();
    const { store } = await openStore({ longTransactionWarnMs: 5000 }, logger);
    const blocker = await openTransaction();
    await store.append('held', [{ type: 'Held', data: 1 }]);
    const seen: string[] = [];
    const sub = store.subscribe({ name: 'short', idlePollMs: 50 }, (e) => void seen.push(e.type));
    await sleep(600);
    await blocker.commit();
    await waitFor(() => seen.length === 1, 'the held event');
    expect(logger.warnings.filter((w) => w.includes('are held back by'))).toEqual([]);
    await sub.close();
  });
});
