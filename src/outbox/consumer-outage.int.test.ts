import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import type { Logger } from '../logging/logger.js';
import { silentLogger } from '../logging/logger.js';
import { FaultProxy } from '../testing/fault-proxy.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { createOutbox } from './outbox.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

describe('a transactional consumer whose PostgreSQL database is down for longer than its attempts', () => {
  it('dead-letters nothing: once the database is back, every message is applied, each once', async () => {
    // What must not be lost: any of the messages delivered during the outage (they were
    // dead-lettered after maxAttempts: an order's saga never started, the order stayed pending).
    // What must not happen twice: a message's effect.
    const target = new URL(postgresTestUrl());
    const proxy = await FaultProxy.start({ host: target.hostname, port: Number(target.port) || 5432 });
    cleanups.push(() => proxy.close());
    const schema = testSchemaName('outage');
    schemas.push(schema);
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    url.searchParams.set('schema', schema);
    const store = await createEventStore({ url: url.toString(), logger: silentLogger });
    cleanups.push(() => store.close());
    const warnings: string[] = [];
    const logger: Logger = { ...silentLogger, warn: (message) => void warnings.push(message) };
    const bus = await createBus({ url: 'memory://', service: 'inventory', logger });
    cleanups.push(() => bus.close());
    const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
    cleanups.push(() => outbox.close());
    await outbox.unitOfWork((work) =>
      work.query(`CREATE TABLE "${schema}".applied (message_id text, n int)`),
    );

    const attempts: number[] = [];
    await bus.subscribe(
      'order.placed',
      async (m, { work }) => {
        attempts.push(m.attempt);
        await work.query(`INSERT INTO "${schema}".applied VALUES ($1, $2)`, [
          m.id,
          (m.data as { n: number }).n,
        ]);
      },
      // Two attempts, 1 s apart: spent in a second of outage.
      {
        unitOfWork: outbox,
        maxAttempts: 2,
        backoff: { initialDelayMs: 1000, maxDelayMs: 1000 },
        concurrency: 4,
      },
    );

    await proxy.down();
    for (let n = 0; n < 20; n++) await bus.publish('order.placed', { n });
    // Down for several times the attempts' span: each message is tried again meanwhile, and that is
    // said once.
    await waitFor(() => warnings.length > 0, 'the warning that messages wait for the database', 10_000);
    await sleep(3_500);
    expect(await bus.listDeadLetters()).toEqual([]);
    await proxy.up();

    const applied = async () =>
      (
        await outbox.unitOfWork((work) =>
          work.query<{ n: number }>(`SELECT n FROM "${schema}".applied ORDER BY n`),
        )
      ).map((row) => row.n);
    await waitFor(async () => (await applied()).length >= 20, 'every message applied once back', 20_000);
    await sleep(500);
    expect(await applied()).toEqual(Array.from({ length: 20 }, (_, n) => n));
    expect(await bus.listDeadLetters()).toEqual([]);
    // Not counted as attempts: every message is still on its first.
    expect(new Set(attempts)).toEqual(new Set([1]));
    // Said, not once per delivery.
    expect(warnings.filter((w) => w.includes('not counted as an attempt'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('dead-lettering'))).toEqual([]);
  }, 60_000);
});
