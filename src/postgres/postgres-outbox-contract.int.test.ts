import { afterAll } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { testOutbox } from '../testing/outbox-contract.js';
import { testOutboxStorage } from '../testing/outbox-storage-contract.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
afterAll(() => dropSchemas(schemas));

async function open(schema: string): Promise<PostgresEventStoreBackend> {
  const backend = new PostgresEventStoreBackend({
    url: postgresTestUrl(),
    schema,
    poolSize: 4,
    logger: silentLogger,
  });
  await backend.open();
  return backend;
}

testOutboxStorage('postgres', {
  async create() {
    const schema = testSchemaName('obx');
    schemas.push(schema);
    const backend = await open(schema);
    const store = new EventStore(backend, { logger: silentLogger });
    const siblings: PostgresEventStoreBackend[] = [];
    return {
      storage: backend.outboxStorage(),
      store,
      async sibling() {
        const other = await open(schema);
        siblings.push(other);
        return other.outboxStorage();
      },
      async close() {
        await Promise.all(siblings.map((b) => b.close()));
        await store.close();
      },
    };
  },
});

testOutbox('postgres', {
  async createStore() {
    const schema = testSchemaName('obx');
    schemas.push(schema);
    return new EventStore(await open(schema), { logger: silentLogger });
  },
});
