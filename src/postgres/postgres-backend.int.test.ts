import { afterAll } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { testEventStore } from '../testing/event-store-contract.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
afterAll(() => dropSchemas(schemas));

testEventStore('postgres', {
  async createStore() {
    const schema = testSchemaName('contract');
    schemas.push(schema);
    const backend = new PostgresEventStoreBackend({
      url: postgresTestUrl(),
      schema,
      poolSize: 4,
      logger: silentLogger,
    });
    await backend.open();
    return new EventStore(backend, { logger: silentLogger });
  },
});
