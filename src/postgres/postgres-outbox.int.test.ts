import type pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '../errors/ferry-error.js';
import { isConcurrencyError } from '../eventstore/errors.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { isSagaConcurrencyError } from '../outbox/errors.js';
import { isOutboxCapable, type OutboxInsert, type OutboxStorage } from '../outbox/storage.js';
import { OUTBOX_T0, outboxTestRow, preparedTestEvents } from '../testing/outbox-rows.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { otherSession } from './fixtures/other-session.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

const T0 = OUTBOX_T0;

function newSchema(): string {
  const schema = testSchemaName('pgobx');
  schemas.push(schema);
  return schema;
}

async function open(schema: string, poolSize = 6): Promise<PostgresEventStoreBackend> {
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize,
    logger: silentLogger,
  });
  await backend.open();
  cleanups.push(() => backend.close());
  return backend;
}

const client = () => otherSession(cleanups);

const message = (key?: string, id?: string): OutboxInsert => outboxTestRow(key, OUTBOX_T0, id);

const events = preparedTestEvents;

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/** Relays until the outbox is empty: the ids in the order they were claimed. */
async function drain(storage: OutboxStorage, owner: string): Promise<string[]> {
  const ids: string[] = [];
  for (;;) {
    const rows = await storage.claim(owner, T0, 100, 30_000);
    if (rows.length === 0) return ids;
    ids.push(...rows.map((r) => r.id));
    await storage.delivered(
      owner,
      rows.map((r) => r.seq),
    );
  }
}

/** Sessions waiting for an advisory lock (an enqueue of an explicit key behind an open unit of work). */
async function advisoryWaiters(c: pg.Client): Promise<number> {
  const { rows } = await c.query(
    `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`,
  );
  return rows[0].n;
}

describe('PostgreSQL outbox storage', () => {
  it('is what outboxStorage() returns on every call, so the backend is outbox-capable', async () => {
    const backend = await open(newSchema());
    expect(isOutboxCapable(backend)).toBe(true);
    expect(backend.outboxStorage()).toBe(backend.outboxStorage());
  });

  it("commits the caller's SQL with the events and outbox rows, and rolls all of it back together", async () => {
    const schema = newSchema();
    const backend = await open(schema);
    const store = new EventStore(backend, { logger: silentLogger });
    const storage = backend.outboxStorage();
    await storage.transaction((tx) =>
      tx.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, total int)`),
    );
    const kept = message('o-1');
    const result = await storage.transaction(async (tx) => {
      await tx.append('order-1', events('OrderPlaced'), 'no_stream');
      const inserted = await tx.query(`INSERT INTO "${schema}".orders VALUES ($1, $2) RETURNING total`, [
        'o-1',
        10,
      ]);
      // The raw client is the transaction's own connection.
      await (tx.client as pg.PoolClient).query(
        `UPDATE "${schema}".orders SET total = total + 1 WHERE id = $1`,
        ['o-1'],
      );
      await tx.enqueue([kept]);
      return inserted;
    });
    expect(result).toEqual([{ total: 10 }]);

    const lost = message('o-2');
    const boom = new Error('boom');
    await expect(
      storage.transaction(async (tx) => {
        await tx.append('order-2', events('OrderPlaced'), 'no_stream');
        await tx.query(`INSERT INTO "${schema}".orders VALUES ($1, $2)`, ['o-2', 20]);
        await tx.enqueue([lost]);
        throw boom;
      }),
    ).rejects.toBe(boom);

    const c = await client();
    const { rows } = await c.query(`SELECT id, total FROM "${schema}".orders ORDER BY id`);
    expect(rows).toEqual([{ id: 'o-1', total: 11 }]);
    expect(await store.readStream('order-1')).toHaveLength(1);
    expect(await store.readStream('order-2')).toEqual([]);
    expect(await drain(storage, 'relay')).toEqual([kept.id]);
  });

  it("sends a unit of work's own statements prepared: parsed and planned once per connection", async () => {
    const backend = await open(newSchema(), 2);
    const storage = backend.outboxStorage();
    const names = await storage.transaction(async (tx) => {
      await tx.markHandled('consumer', 'm-1', T0);
      await tx.lock(['k']);
      await tx.readStream('order-p', {});
      await tx.readStream('order-p', { direction: 'backward' });
      await tx.append('order-p', events('OrderPlaced'), 'no_stream');
      await tx.enqueue([message('k')]);
      await tx.cancel(['none'], T0);
      await tx.saveSaga({ saga: 's', id: 'i', state: '{}', version: 1, status: 'active', updatedAt: T0 }, 0);
      await tx.loadSaga('s', 'i');
      await tx.saveSaga({ saga: 's', id: 'i', state: '{}', version: 2, status: 'active', updatedAt: T0 }, 1);
      return tx.query('SELECT statement FROM pg_prepared_statements');
    });
    const prepared = names.map((row) => String(row.statement).replace(/\s+/g, ' '));
    for (const part of [
      'inbox_done (consumer, message_id, handled_at)',
      'pg_advisory_xact_lock',
      'version >= $2 ORDER BY version LIMIT',
      'version <= $2 ORDER BY version DESC LIMIT',
      '.outbox (id, key, envelope, created_at, due_at)',
      '.outbox WHERE id = ANY($1::text[]) AND',
      '.sagas (saga, id, state, version, status, updated_at)',
      '.sagas WHERE saga = $1 AND id = $2',
      'SET state = $3, version = $4',
    ]) {
      expect(
        prepared.some((text) => text.includes(part)),
        part,
      ).toBe(true);
    }
  });

  it('keeps its prepared statements in step with the server, whatever SQL of a unit of work did to them', async () => {
    const schema = newSchema();
    const backend = await open(schema, 2);
    const storage = backend.outboxStorage();
    let n = 0;
    let ok = 0;
    type Tx = Parameters<Parameters<typeof storage.transaction>[0]>[0];
    const unit = (sql?: (tx: Tx) => Promise<unknown>) =>
      storage
        .transaction(async (tx) => {
          await tx.markHandled('consumer', `m-${++n}`, T0);
          await tx.loadSaga('s', 'i');
          await sql?.(tx);
          await tx.readStream(`order-${n}`, {});
          await tx.append(`order-${n}`, events('OrderPlaced'), 'no_stream');
        })
        .then(() => ok++);
    const ferryNames = async (tx: Tx) =>
      (await tx.query("SELECT name FROM pg_prepared_statements WHERE name LIKE 'ferry-%' ORDER BY name")).map(
        (row) => String(row.name),
      );
    await unit();
    // Seen by the unit (each unit after it must work, as must the rest of this one): all of them
    // dropped, one dropped, one taken by the caller's own PREPARE, and SQL that only names the words.
    await unit((tx) => tx.query('DEALLOCATE ALL'));
    await unit((tx) => tx.query('deallocate prepare all'));
    await unit(async (tx) => tx.query(`DEALLOCATE "${(await ferryNames(tx))[0]}"`));
    await unit(async (tx) => tx.query(`DEALLOCATE ALL; PREPARE "${(await ferryNames(tx))[0]}" AS SELECT 1`));
    await unit((tx) => tx.query("SELECT 'please deallocate the room' AS note, 1 AS discard"));
    await unit((tx) => tx.query('DISCARD PLANS'));
    for (let i = 0; i < 3; i++) await unit();
    expect(ok).toBe(n);
    // Past the unit's checks (a callback): its next statement finds its name gone and fails; the next
    // unit on that connection prepares again.
    const failed = await unit(
      (tx) =>
        new Promise<void>((resolve, reject) => {
          (tx.client as pg.PoolClient).query('DEALLOCATE ALL', (error) =>
            error ? reject(error) : resolve(),
          );
        }),
    ).catch((e: unknown) => e);
    expect(failed).toMatchObject({ code: '26000' });
    // A column's type changed under the prepared statements: a unit fails on each connection that had
    // prepared them, once, and the units after it work.
    const c = await client();
    await c.query(`ALTER TABLE "${schema}".events ALTER COLUMN type TYPE varchar(1000)`);
    const outcomes: unknown[] = [];
    for (let i = 0; i < 6; i++) outcomes.push(await unit().catch((e: unknown) => e));
    const refused = outcomes.filter((o) => typeof o !== 'number');
    expect(refused.length).toBeLessThanOrEqual(2);
    for (const error of refused) expect(error).toMatchObject({ code: '0A000' });
    expect(typeof outcomes.at(-1)).toBe('number');
    expect(typeof outcomes.at(-2)).toBe('number');
  });

  it('keeps nothing when the work resolves after catching a failed statement (PostgreSQL aborted it)', async () => {
    const schema = newSchema();
    const backend = await open(schema);
    const storage = backend.outboxStorage();
    const m = message();
    const error = await storage
      .transaction(async (tx) => {
        await tx.enqueue([m]);
        await tx.query('SELECT 1/0').catch(() => {});
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isFerryError(error) && error.code).toBe('UNIT_OF_WORK_ROLLED_BACK');
    expect(await drain(storage, 'relay')).toEqual([]);
  });

  it('refuses a transaction handle used after its unit of work ended', async () => {
    const backend = await open(newSchema());
    const storage = backend.outboxStorage();
    let kept: Parameters<Parameters<OutboxStorage['transaction']>[0]>[0] | undefined;
    await storage.transaction(async (tx) => {
      kept = tx;
    });
    await expect(kept!.query('SELECT 1')).rejects.toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
    await expect(kept!.enqueue([message()])).rejects.toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
  });

  it('sends no further statement of a call under way when its unit of work ended: nothing of it commits after the ROLLBACK', async () => {
    // An enqueue takes its key's lock, then inserts. Its unit ended (a handler past its time limit)
    // while the lock was awaited: the INSERT went after the ROLLBACK, in autocommit, and the message
    // was published though the unit's other writes were rolled back. Must not happen: the row kept.
    // (The lock wait is now cancelled when the unit ends; the call rejects saying the unit ended.)
    const schema = newSchema();
    const backend = await open(schema);
    const storage = backend.outboxStorage();
    const other = await client();
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`ferry-outbox:${schema}:k1`]);
    let enqueue: Promise<void> | undefined;
    const unit = storage.transaction(async (tx) => {
      enqueue = tx.enqueue([message('k1')]);
      enqueue.catch(() => {});
      await sleep(100);
      throw new Error('past its time limit');
    });
    // It may reject before the assertion below is reached (its ROLLBACK can end before the other
    // session's COMMIT answers): handled now, so that it is no unhandled rejection.
    unit.catch(() => {});
    await sleep(200);
    await other.query('COMMIT');
    await expect(unit).rejects.toThrow('past its time limit');
    await expect(enqueue).rejects.toMatchObject({ code: 'UNIT_OF_WORK_UNSUPPORTED' });
    await sleep(100);
    expect(await drain(storage, 'relay')).toEqual([]);
  });

  it('drops a connection that broke inside a unit of work and goes on with healthy ones', async () => {
    const backend = await open(newSchema(), 2);
    const storage = backend.outboxStorage();
    const killed = storage.transaction((tx) => tx.query('SELECT pg_terminate_backend(pg_backend_pid())'));
    // A typed error, saying nothing was committed (the connection broke before COMMIT).
    await expect(killed).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
      message: expect.stringMatching(/was not committed/),
    });
    for (let i = 0; i < 4; i++) {
      await storage.transaction((tx) => tx.enqueue([message()]));
    }
    expect(await drain(storage, 'relay')).toHaveLength(4);
  });

  it('rejects with ConcurrencyError when a concurrent unit of work wins the same stream version', async () => {
    const backend = await open(newSchema());
    const storage = backend.outboxStorage();
    const c = await client();
    const first = gate();
    const firstAppended = gate();
    let firstPid = 0;
    const one = storage.transaction(async (tx) => {
      firstPid = Number((await tx.query('SELECT pg_backend_pid() AS pid'))[0]?.pid);
      await tx.append('race', events('A'), 'no_stream');
      firstAppended.open();
      await first.opened;
    });
    await firstAppended.opened;
    // The second insert waits on the first's uncommitted row, then meets the unique key.
    const two = storage.transaction((tx) => tx.append('race', events('B'), 'any'));
    await waitFor(() => blockedBy(c, firstPid), 'the second append to wait for the first');
    first.open();
    await one;
    const error = await two.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isConcurrencyError(error)).toBe(true);
    expect(error).toMatchObject({ actual: 0 });
  });

  it('holds a second unit of work enqueueing the same explicit key until the first ends, so seq order is commit order', async () => {
    const backend = await open(newSchema());
    const storage = backend.outboxStorage();
    const c = await client();
    const a = message('k');
    const b = message('k');
    const first = gate();
    const enqueued = gate();
    const one = storage.transaction(async (tx) => {
      await tx.enqueue([a]);
      enqueued.open();
      await first.opened;
    });
    await enqueued.opened;
    let twoDone = false;
    const two = storage
      .transaction((tx) => tx.enqueue([b]))
      .finally(() => {
        twoDone = true;
      });
    try {
      await waitFor(async () => twoDone || (await advisoryWaiters(c)) > 0, 'the second unit of work to wait');
      // b has not committed ahead of a: a relay sees nothing of key k yet.
      expect(twoDone).toBe(false);
      expect(await storage.claim('relay', T0, 10, 30_000)).toEqual([]);
    } finally {
      first.open();
    }
    await Promise.all([one, two]);
    expect(await drain(storage, 'relay')).toEqual([a.id, b.id]);
  });

  it('does not hold units of work whose rows are keyed by their own id', async () => {
    const backend = await open(newSchema());
    const storage = backend.outboxStorage();
    const first = gate();
    const enqueued = gate();
    const a = message();
    const one = storage.transaction(async (tx) => {
      await tx.enqueue([a]);
      enqueued.open();
      await first.opened;
    });
    await enqueued.opened;
    const b = message();
    await storage.transaction((tx) => tx.enqueue([b]));
    expect(await drain(storage, 'relay')).toEqual([b.id]);
    first.open();
    await one;
    expect(await drain(storage, 'relay')).toEqual([a.id]);
  });

  it('delivers a key enqueued by many concurrent units of work in seq order while they commit', async () => {
    const schema = newSchema();
    const writer = await open(schema, 10);
    const relayBackend = await open(schema, 3);
    const storage = writer.outboxStorage();
    const relayStorage = relayBackend.outboxStorage();
    const units = 24;
    const seqs: bigint[] = [];
    let writing = true;
    const relay = (async () => {
      for (let round = 0; round < 10_000; round++) {
        const rows = await relayStorage.claim('relay', T0, 10, 30_000);
        seqs.push(...rows.map((r) => r.seq));
        if (rows.length > 0) {
          await relayStorage.delivered(
            'relay',
            rows.map((r) => r.seq),
          );
        } else if (!writing && (await relayStorage.backlog(T0)).pending === 0) {
          // A claim that raced the last commits came back empty: stop only once nothing is left.
          return;
        } else {
          await sleep(1);
        }
      }
    })();
    await Promise.all(
      Array.from({ length: units }, (_, i) =>
        storage.transaction(async (tx) => {
          await tx.enqueue([message('hot')]);
          // Hold the transaction open for a while, longer for early ones: without the key lock,
          // later seqs would commit first.
          await sleep(((units - i) % 5) * 3);
        }),
      ),
    );
    writing = false;
    await relay;
    expect(seqs).toHaveLength(units);
    expect([...seqs].sort((x, y) => (x < y ? -1 : 1))).toEqual(seqs);
  });

  it('never hands a row to two of three relays claiming at once, and keeps each key in order', async () => {
    const schema = newSchema();
    const backends = [await open(schema, 3), await open(schema, 3), await open(schema, 3)];
    const rows = Array.from({ length: 1200 }, (_, i) => message(i % 4 === 0 ? undefined : `key-${i % 37}`));
    for (let i = 0; i < rows.length; i += 200) {
      await backends[0]!.outboxStorage().transaction((tx) => tx.enqueue(rows.slice(i, i + 200)));
    }
    const claimedBy = new Map<string, string>();
    const perKey = new Map<string, string[]>();
    const doubles: string[] = [];
    await Promise.all(
      backends.map(async (backend, n) => {
        const storage = backend.outboxStorage();
        const owner = `relay-${n}`;
        for (let round = 0; round < 5000; round++) {
          const claimed = await storage.claim(owner, T0, 16, 30_000);
          if (claimed.length === 0) {
            if ((await storage.backlog(T0)).pending === 0) return;
            await sleep(1);
            continue;
          }
          expect(new Set(claimed.map((r) => r.key)).size).toBe(claimed.length);
          for (const row of claimed) {
            if (claimedBy.has(row.id)) doubles.push(row.id);
            claimedBy.set(row.id, owner);
            perKey.set(row.key, [...(perKey.get(row.key) ?? []), row.id]);
          }
          expect(
            await storage.delivered(
              owner,
              claimed.map((r) => r.seq),
            ),
          ).toBe(claimed.length);
        }
      }),
    );
    expect(doubles).toEqual([]);
    expect(claimedBy.size).toBe(rows.length);
    for (const [key, ids] of perKey) expect(ids).toEqual(rows.filter((r) => r.key === key).map((r) => r.id));
    // The work was shared.
    expect(new Set(claimedBy.values()).size).toBeGreaterThan(1);
  });

  it('lets the second of two units of work marking the same message wait, then see the first commit or roll back', async () => {
    const backend = await open(newSchema());
    const storage = backend.outboxStorage();
    const c = await client();
    for (const outcome of ['commit', 'rollback'] as const) {
      const first = gate();
      const marked = gate();
      let firstPid = 0;
      const one = storage.transaction(async (tx) => {
        firstPid = Number((await tx.query('SELECT pg_backend_pid() AS pid'))[0]?.pid);
        expect(await tx.markHandled('orders', `m-${outcome}`, T0)).toBe(true);
        marked.open();
        await first.opened;
        if (outcome === 'rollback') throw new Error('rolled back');
      });
      await marked.opened;
      let secondDone = false;
      const two = storage
        .transaction((tx) => tx.markHandled('orders', `m-${outcome}`, T0))
        .finally(() => {
          secondDone = true;
        });
      await waitFor(async () => secondDone || (await blockedBy(c, firstPid)), 'the second mark to wait');
      expect(secondDone).toBe(false);
      first.open();
      await one.catch(() => {});
      expect(await two).toBe(outcome === 'rollback');
    }
  });

  it('keeps a unit of work usable after SagaConcurrencyError: one of two new instances wins', async () => {
    const backend = await open(newSchema());
    const storage = backend.outboxStorage();
    const row = {
      saga: 'order',
      id: 's-1',
      state: '{}',
      version: 1,
      status: 'active' as const,
      updatedAt: T0,
    };
    const both = await Promise.allSettled(
      [1, 2].map((n) =>
        storage.transaction(async (tx) => {
          await tx.saveSaga({ ...row, state: `{"n":${n}}` }, 0);
          await sleep(20);
        }),
      ),
    );
    expect(both.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    const lost = both.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(isSagaConcurrencyError(lost.reason)).toBe(true);
    const m = message();
    await storage.transaction(async (tx) => {
      const error = await tx.saveSaga(row, 0).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isSagaConcurrencyError(error)).toBe(true);
      await tx.enqueue([m]);
    });
    expect(await drain(storage, 'relay')).toEqual([m.id]);
  });

  it('wakes a watcher on another backend instance when a unit of work commits outbox rows', async () => {
    const schema = newSchema();
    const writer = await open(schema);
    const reader = await open(schema);
    let wakes = 0;
    reader.outboxStorage().watch(() => {
      wakes++;
    });
    // Listening has started once the watcher's first (catch-up) wake-up came.
    await waitFor(() => wakes > 0, 'the watcher to listen');
    await sleep(900); // past the catch-up wake-ups that follow the start of listening
    const before = wakes;
    await writer.outboxStorage().transaction((tx) => tx.enqueue([message()]));
    await waitFor(() => wakes > before, 'a wake-up from the other instance');
    const rows = await reader.outboxStorage().claim('relay', T0, 10, 30_000);
    expect(rows).toHaveLength(1);
  });

  it("wakes the store's subscribers after a unit of work that appended events", async () => {
    const schema = newSchema();
    const writer = await open(schema);
    const reader = await open(schema);
    let local = 0;
    let remote = 0;
    writer.watch(() => {
      local++;
    });
    reader.watch(() => {
      remote++;
    });
    await waitFor(() => remote > 0, 'the other instance to listen');
    await sleep(900);
    const [localBefore, remoteBefore] = [local, remote];
    await writer.outboxStorage().transaction((tx) => tx.append('s', events('A'), 'no_stream'));
    await waitFor(() => local > localBefore && remote > remoteBefore, 'both watchers to wake');
  });
});

/**
 * Whether a session waits for a lock the session `pid` holds. Tests run in parallel: a lock wait of
 * another test's store (every store's connections are named 'ferry') is not this one's.
 */
async function blockedBy(c: pg.Client, pid: number): Promise<boolean> {
  const { rows } = await c.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))',
    [pid],
  );
  return (rows[0]?.n ?? 0) > 0;
}
