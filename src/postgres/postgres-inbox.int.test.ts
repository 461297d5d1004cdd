import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { MemoryBroker } from '../messaging/memory/memory-broker.js';
import { MemoryTransport } from '../messaging/memory/memory-transport.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { testInbox } from '../testing/inbox-contract.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const backends: PostgresEventStoreBackend[] = [];
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
});
afterAll(() => dropSchemas(schemas));

async function open(schema: string): Promise<PostgresEventStoreBackend> {
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 3,
    logger: silentLogger,
  });
  await backend.open();
  backends.push(backend);
  return backend;
}

testInbox(
  'postgres',
  {
    async create(options = {}) {
      const schema = testSchemaName('inbox');
      schemas.push(schema);
      const backend = await open(schema);
      return {
        inbox: backend.inbox(options),
        sibling: async (o = {}) => (await open(schema)).inbox(o),
        async plantOrphan(key) {
          const client = new pg.Client({ connectionString: postgresTestUrl() });
          await client.connect();
          await client.query(
            `INSERT INTO "${schema}".inbox (key, state, lease_until) VALUES ($1, 'processing', now() - interval '1 second')`,
            [key],
          );
          await client.end();
        },
        async expireLease(key) {
          const client = new pg.Client({ connectionString: postgresTestUrl() });
          await client.connect();
          await client.query(
            `UPDATE "${schema}".inbox SET lease_until = now() - interval '1 second' WHERE key = $1`,
            [key],
          );
          await client.end();
        },
        async leaseLeft(key) {
          const client = new pg.Client({ connectionString: postgresTestUrl() });
          await client.connect();
          const { rows } = await client.query<{ left: string | null }>(
            `SELECT (extract(epoch FROM lease_until - now()) * 1000)::float8 AS left FROM "${schema}".inbox WHERE key = $1`,
            [key],
          );
          await client.end();
          return rows[0] === undefined ? undefined : rows[0].left === null ? null : Number(rows[0].left);
        },
        close: () => backend.close(),
      };
    },
  },
  { durable: true },
);

describe('a PostgreSQL inbox holder frozen past its lease', () => {
  it('leaves the claims taken over meanwhile alone when it wakes, and learns it lost them', async () => {
    // Must not happen: the woken holder's release freeing the key the new holder is processing (a
    // third copy would run at once), or its completion recording the new holder's message as done.
    const schema = testSchemaName('inboxfrozen');
    schemas.push(schema);
    const backend = await open(schema);
    const inbox = backend.inbox({ leaseMs: 1000 });
    const child = spawnFixture(fileURLToPath(new URL('./fixtures/inbox-holder.ts', import.meta.url)), {
      PG_URL: postgresTestUrl(),
      PG_SCHEMA: schema,
    });
    const exited = once(child, 'exit');
    const lines: string[] = [];
    onLines(child, (line) => void lines.push(line));
    try {
      await waitFor(() => lines.includes('claimed'), 'the child to claim its keys', 15_000);
      child.kill('SIGSTOP');
      await sleep(1300);
      const fails = await inbox.begin('fails');
      const succeeds = await inbox.begin('succeeds');
      expect(fails).not.toBeNull();
      expect(succeeds).not.toBeNull();
      child.kill('SIGCONT');
      await waitFor(
        () => lines.includes('done'),
        () => `the child to finish (${lines.join(', ')})`,
        10_000,
      );

      const third = inbox.begin('fails');
      const thirdSettled = await Promise.race([third.then(() => true), sleep(500).then(() => false)]);
      expect(thirdSettled, 'the woken holder released the new claim').toBe(false);
      expect(lines).toContain('complete failed CLAIM_LOST');
      expect(fails!.signal.aborted || succeeds!.signal.aborted).toBe(false);
      succeeds!.abandon();
      const again = await inbox.begin('succeeds');
      expect(again, 'the woken holder recorded the new claim as done').not.toBeNull();
      await again!.complete();
      await fails!.complete();
      expect(await third).toBeNull();
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
      await exited;
    }
  }, 30_000);
});

describe('a bus with the PostgreSQL inbox', () => {
  it('does not handle again, after a restart, a message it already handled', async () => {
    // Must not repeat: the side effect of message "pay-1" after the consumer restarted.
    const schema = testSchemaName('inboxbus');
    schemas.push(schema);
    const broker = new MemoryBroker();
    const handled: string[] = [];
    const producer = await createBus({
      transport: new MemoryTransport({ broker }),
      service: 'orders',
      logger: silentLogger,
    });
    const runConsumer = async () => {
      const store = new EventStore(await open(schema), { logger: silentLogger });
      const bus = await createBus({
        transport: new MemoryTransport({ broker }),
        service: 'payments',
        inbox: store.inbox(),
        logger: silentLogger,
      });
      await bus.subscribe('payment.requested', (m) => void handled.push(m.id));
      return bus;
    };
    const first = await runConsumer();
    await producer.publish('payment.requested', { amount: 5 }, { id: 'pay-1' });
    await waitFor(() => handled.length === 1, 'the first delivery');
    await first.close();

    const second = await runConsumer();
    // The producer re-sends (say, after a lost confirm): same id.
    await producer.publish('payment.requested', { amount: 5 }, { id: 'pay-1' });
    await producer.publish('payment.requested', { amount: 7 }, { id: 'pay-2' });
    await waitFor(() => handled.includes('pay-2'), 'the new message');
    expect(handled).toEqual(['pay-1', 'pay-2']);
    await second.close();
    await producer.close();
  });
});

describe('createEventStore with a PostgreSQL URL', () => {
  it('takes the schema from ?schema= and keeps it away from PostgreSQL', async () => {
    const schema = testSchemaName('url');
    schemas.push(schema);
    const { createEventStore } = await import('../connect/create-event-store.js');
    const store = await createEventStore({
      url: `${postgresTestUrl()}?schema=${schema}`,
      logger: silentLogger,
    });
    await store.append('s', [{ type: 'A', data: 1 }]);
    await store.close();
    const client = new pg.Client({ connectionString: postgresTestUrl() });
    await client.connect();
    const { rows } = await client.query(`SELECT count(*)::int AS n FROM "${schema}".events`);
    await client.end();
    expect(rows[0].n).toBe(1);
  });
});
