import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import { createIdempotencyStore } from '../connect/create-idempotency-store.js';
import { isFerryError } from '../errors/ferry-error.js';
import type { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import { postgresTestUrl } from '../testing/postgres.js';
import { sleep } from '../testing/wait.js';

/**
 * Connections killed by the server (pg_terminate_backend) at any moment: while a unit of work holds
 * one, while the pool hands a new one over, while a store migrates, under inbox and idempotency
 * statements and reads. What must hold: the process
 * lives (pg raised an 'error' event nobody listened for, which ended it), every failure is a typed
 * STORE_UNAVAILABLE, and every append or unit of work that resolved is stored.
 * The test has a database of its own, so that its kills hit no other test.
 */
const database = `ferry_kill_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
const admin = new pg.Client({ connectionString: postgresTestUrl() });
const dbUrl = (schema: string) => {
  const url = new URL(postgresTestUrl());
  url.pathname = `/${database}`;
  url.searchParams.set('schema', schema);
  return url.toString();
};

beforeAll(async () => {
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
});
afterAll(async () => {
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
});

describe('PostgreSQL connections killed by the server', () => {
  it('never end the process: units of work, appends, reads, inbox and idempotency calls and opening stores fail typed, and nothing that resolved is lost', async () => {
    const store = await createEventStore({ url: dbUrl('kills'), logger: silentLogger });
    const bus = await createBus({ url: 'memory://', service: 'kills', logger: silentLogger });
    const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
    const unexpected: unknown[] = [];
    const failures = new Map<string, number>();
    const failed = (error: unknown) => {
      if (isFerryError(error) && error.code === 'STORE_UNAVAILABLE') {
        failures.set(error.code, (failures.get(error.code) ?? 0) + 1);
      } else {
        unexpected.push(error);
      }
    };
    const stored: string[] = [];
    let killing = true;
    let kills = 0;
    const killer = (async () => {
      while (killing) {
        await sleep(20 + Math.random() * 60);
        const { rowCount } = await admin.query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
          [database],
        );
        kills += rowCount ?? 0;
      }
    })();
    const until = Date.now() + 6000;
    const units = [0, 1, 2].map(async (worker) => {
      for (let i = 0; Date.now() < until; i++) {
        const stream = `unit-${worker}-${i}`;
        try {
          await outbox.unitOfWork(async (work) => {
            await work.append(stream, [{ type: 'Happened', data: { i } }]);
          });
          stored.push(stream);
        } catch (error) {
          failed(error);
        }
      }
    });
    const appends = (async () => {
      for (let i = 0; Date.now() < until; i++) {
        const stream = `append-${i}`;
        try {
          await store.append(stream, [{ type: 'Happened', data: { i } }]);
          stored.push(stream);
        } catch (error) {
          failed(error);
        }
      }
    })();
    const inbox = store.inbox();
    const inboxes = (async () => {
      for (let i = 0; Date.now() < until; i++) {
        try {
          const claim = await inbox.begin(`message-${i}`);
          await claim?.complete();
        } catch (error) {
          failed(error);
        }
      }
    })();
    const idempotency = await createIdempotencyStore({ eventStore: store });
    const keys = (async () => {
      for (let i = 0; Date.now() < until; i++) {
        try {
          const begun = await idempotency.begin(`key-${i}`, 'f');
          if (begun.state === 'new') {
            await idempotency.complete(`key-${i}`, { status: 201, headers: {}, body: '{}' }, begun.claim);
          }
        } catch (error) {
          failed(error);
        }
      }
    })();
    // Reads of every kind the store and the outbox offer: a stream, the global order, the outbox's
    // backlog and failed rows. Each goes again on a fresh connection; what fails is STORE_UNAVAILABLE.
    let reads = 0;
    const readers = (async () => {
      const kinds = [
        () => store.readStream(`append-${Math.floor(Math.random() * 20)}`),
        async () => {
          let n = 0;
          for await (const _ of store.readAll({ batchSize: 100 })) if (++n >= 200) break;
        },
        () => outbox.backlog(),
        () => outbox.failed(10),
      ];
      for (let i = 0; Date.now() < until; i++) {
        try {
          await kinds[i % kinds.length]!();
          reads++;
        } catch (error) {
          failed(error);
        }
      }
    })();
    let opening = 0;
    const opens = (async () => {
      for (let i = 0; Date.now() < until; i++) {
        let other: EventStore | undefined;
        opening++;
        try {
          // A fresh schema: every open runs the migrations, under the advisory lock.
          other = await createEventStore({ url: dbUrl(`open_${i}`), logger: silentLogger });
        } catch (error) {
          failed(error);
        } finally {
          await other?.close().catch(() => {});
        }
      }
    })();
    await Promise.all([...units, appends, inboxes, keys, readers, opens]);
    killing = false;
    await killer;
    // The last kills reach the pool's idle connections a moment later: reads before that may meet one.
    await sleep(300);

    expect(
      unexpected.map((e) => `${(e as Error).name} ${(e as { code?: string }).code}: ${(e as Error).message}`),
    ).toEqual([]);
    expect(kills).toBeGreaterThan(10);
    expect(stored.length).toBeGreaterThanOrEqual(5);
    expect(opening).toBeGreaterThan(3);
    expect(reads).toBeGreaterThan(3);
    for (const stream of stored) {
      const events = await store.readStream(stream);
      expect(
        events.map((e) => e.type),
        stream,
      ).toEqual(['Happened']);
    }
    await outbox.close();
    await bus.close();
    await store.close();
  }, 60_000);
});
