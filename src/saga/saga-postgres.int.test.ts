import { afterAll, afterEach, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { tallyContracts, tallyRuns, tallySaga } from './fixtures/tally-saga.js';
import { startSaga } from './start-saga.js';

const schemas: string[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(() => dropSchemas(schemas));

async function open(schema: string): Promise<EventStore> {
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 6,
    logger: silentLogger,
  });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  closers.push(() => store.close());
  return store;
}

it('two processes on one PostgreSQL database apply every message of one instance: conflicts are retried, none lost', async () => {
  const schema = testSchemaName('saga');
  schemas.push(schema);
  const bus = await createBus({
    url: `memory://saga-pg-${uuidv7()}`,
    service: 'tally',
    logger: silentLogger,
    contracts: tallyContracts,
  });
  closers.push(() => bus.close());
  const running = [];
  for (let i = 0; i < 2; i++) {
    const outbox = await createOutbox({
      store: await open(schema),
      bus,
      maxRetries: 50,
      logger: silentLogger,
    });
    closers.push(() => outbox.close());
    const saga = await startSaga(tallySaga, { outbox, logger: silentLogger, subscribe: { concurrency: 5 } });
    closers.push(() => saga.close());
    running.push(saga);
  }
  const [one, two] = running as [(typeof running)[0], (typeof running)[0]];
  await bus.publish('tally.opened', { tallyId: 't' });
  await waitFor(async () => (await one.get('t')) !== undefined, 'the tally to open');
  tallyRuns.count = 0;
  await Promise.all(
    Array.from({ length: 30 }, (_, i) => bus.publish('tally.add', { tallyId: 't', n: i + 1 })),
  );
  await waitFor(async () => (await two.get('t'))?.data.count === 30, 'every addition', 30_000);
  expect(await one.get('t')).toMatchObject({ data: { total: 465, count: 30 }, version: 31 });
  // Ten handlers at once on one instance: some lost the race and ran again.
  expect(tallyRuns.count).toBeGreaterThan(30);
  expect(await bus.listDeadLetters({ group: 'saga-tally' })).toEqual([]);
});
