/**
 * The relay's bookkeeping commits without waiting for the disk; everything else on the store's
 * connection still commits with `synchronous = FULL`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-bookkeeping-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

const T0 = Date.UTC(2026, 0, 1);

describe('SQLite relay bookkeeping', () => {
  it('commits claims, holds, retries and deletes with synchronous = NORMAL, then puts FULL back', async () => {
    const backend = new SqliteEventStoreBackend({ path: join(dir, 'outbox.db') });
    await backend.open();
    const store = new EventStore(backend);
    try {
      const storage = backend.outboxStorage();
      await storage.transaction(async (tx) => {
        for (const id of ['a', 'b'])
          await tx.enqueue([{ id, key: id, envelope: '{}', createdAt: T0, dueAt: T0 }]);
      });
      // The switches are prepared statements run around each commit; `db.pragma()` would do too.
      const scratch = new Database(':memory:');
      const statements = Object.getPrototypeOf(scratch.prepare('SELECT 1')) as Database.Statement;
      scratch.close();
      const run = vi.spyOn(statements, 'run');
      const pragma = vi.spyOn(Database.prototype, 'pragma');
      const rows = await storage.claim('relay', T0, 10, 30_000);
      expect(rows.map((r) => r.id)).toEqual(['a', 'b']);
      const [a, b] = rows.map((r) => r.seq) as [bigint, bigint];
      await storage.hold('relay', [a], T0 + 10_000);
      await storage.retry('relay', b, 'refused', T0 + 1000, true);
      await storage.delivered('relay', [a]);
      const settings = [
        ...pragma.mock.calls.map(([source]) => source),
        ...run.mock.contexts
          .map((statement) => (statement as Database.Statement).source)
          .filter((source) => source.startsWith('PRAGMA synchronous'))
          .map((source) => source.replace('PRAGMA ', '')),
      ];
      // Each of the four writes switched to NORMAL and back to FULL around its commit.
      expect(settings).toEqual(Array(4).fill(['synchronous = NORMAL', 'synchronous = FULL']).flat());
      // And the connection is left in FULL for the store's own commits (appends, units of work).
      pragma.mockRestore();
      run.mockRestore();
      expect(await store.append('s-1', [{ type: 'Happened', data: {} }])).toBeDefined();
    } finally {
      await store.close();
    }
  });
});
