import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach } from 'vitest';
import { testInbox } from '../testing/inbox-contract.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-inbox-'));
let files = 0;
const backends: SqliteEventStoreBackend[] = [];
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function open(path: string): Promise<SqliteEventStoreBackend> {
  const backend = new SqliteEventStoreBackend({ path });
  await backend.open();
  backends.push(backend);
  return backend;
}

testInbox(
  'sqlite',
  {
    async create(options = {}) {
      const path = join(dir, `inbox-${++files}.db`);
      const backend = await open(path);
      return {
        inbox: backend.inbox(options),
        sibling: async (o = {}) => (await open(path)).inbox(o),
        async plantOrphan(key) {
          const db = new Database(path);
          db.prepare("INSERT INTO ferry_inbox (key, state, lease_until) VALUES (?, 'processing', ?)").run(
            key,
            Date.now() - 1000,
          );
          db.close();
        },
        async expireLease(key) {
          const db = new Database(path);
          db.prepare('UPDATE ferry_inbox SET lease_until = ? WHERE key = ?').run(Date.now() - 1000, key);
          db.close();
        },
        async leaseLeft(key) {
          const db = new Database(path, { readonly: true });
          const row = db.prepare('SELECT lease_until FROM ferry_inbox WHERE key = ?').get(key) as
            | { lease_until: number | null }
            | undefined;
          db.close();
          return row === undefined
            ? undefined
            : row.lease_until === null
              ? null
              : row.lease_until - Date.now();
        },
        close: () => backend.close(),
      };
    },
  },
  { durable: true },
);
