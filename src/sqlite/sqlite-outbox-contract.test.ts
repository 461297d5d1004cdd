import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { testOutbox } from '../testing/outbox-contract.js';
import { testOutboxStorage } from '../testing/outbox-storage-contract.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-outbox-contract-'));
let files = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function open(path: string): Promise<SqliteEventStoreBackend> {
  const backend = new SqliteEventStoreBackend({ path });
  await backend.open();
  return backend;
}

testOutboxStorage('sqlite', {
  async create() {
    const path = join(dir, `outbox-${++files}.db`);
    const backend = await open(path);
    const store = new EventStore(backend);
    const siblings: SqliteEventStoreBackend[] = [];
    return {
      storage: backend.outboxStorage(),
      store,
      // Another instance of the service: its own backend, so its own connections, on the same file.
      async sibling() {
        const other = await open(path);
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

testOutbox('sqlite', {
  async createStore() {
    return new EventStore(await open(join(dir, `outbox-${++files}.db`)));
  },
});
