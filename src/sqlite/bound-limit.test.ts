import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { boundLimit } from './bound-limit.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-bound-limit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.restoreAllMocks();
});

/** A LIMIT or OFFSET whose value is a bare bound parameter: `LIMIT ?`, `LIMIT @limit`, `OFFSET ?1`. */
const BARE_BOUND_LIMIT = /\b(?:LIMIT|OFFSET)\s+\(*\s*(?:\?\d*|[@:$]\w+)\s*\)*\s*(?![\s+\-*/|]*[\w?@:$(])/i;

describe('boundLimit', () => {
  const db = new Database(':memory:');
  const rows = db.prepare(`SELECT value FROM json_each('[1,2,3]') ORDER BY value ${boundLimit()}`).pluck();
  const named = db
    .prepare(`SELECT value FROM json_each('[1,2,3]') ORDER BY value ${boundLimit('@limit')}`)
    .pluck();

  it('limits as a bare LIMIT does: a negative value is no limit, 0 none', () => {
    expect(rows.all(2)).toEqual([1, 2]);
    expect(rows.all(-1)).toEqual([1, 2, 3]);
    expect(rows.all(0)).toEqual([]);
    expect(rows.all(10)).toEqual([1, 2, 3]);
    expect(named.all({ limit: 1 })).toEqual([1]);
  });

  it('refuses a fractional limit as a bare LIMIT does', () => {
    const bare = db.prepare("SELECT value FROM json_each('[1,2,3]') LIMIT ?").pluck();
    expect(() => bare.all(1.5)).toThrow(/mismatch/);
    expect(() => rows.all(1.5)).toThrow(/mismatch/);
  });

  it('is an expression, not a bare parameter', () => {
    expect(BARE_BOUND_LIMIT.test(`SELECT 1 ${boundLimit()}`)).toBe(false);
    expect(BARE_BOUND_LIMIT.test(`SELECT 1 ${boundLimit('@limit')}`)).toBe(false);
    // The check itself finds the forms SQLite prepares again at every run.
    for (const sql of [
      'SELECT 1 LIMIT ?',
      'SELECT 1 LIMIT @limit)',
      'SELECT 1 LIMIT (?)',
      'SELECT 1 LIMIT 5 OFFSET ?',
    ]) {
      expect(BARE_BOUND_LIMIT.test(sql), sql).toBe(true);
    }
    expect(BARE_BOUND_LIMIT.test('SELECT 1 LIMIT 1')).toBe(false);
  });
});

// SQLite (3.47 and later) prepares a statement again whenever a parameter that is a LIMIT's bare
// value is bound anew (every run, with better-sqlite3): a stream read cost twice its time, an outbox
// claim's statements six times theirs. Every statement the SQLite backend prepares must avoid it.
describe('statements of the SQLite backend', () => {
  it('take no LIMIT or OFFSET from a bare bound parameter', async () => {
    const prepared: string[] = [];
    const prepare = Database.prototype.prepare;
    vi.spyOn(Database.prototype, 'prepare').mockImplementation(function (
      this: Database.Database,
      sql: string,
    ) {
      prepared.push(sql);
      return prepare.call(this, sql);
    });
    const backend = new SqliteEventStoreBackend({ path: join(dir, 'statements.db') });
    await backend.open();
    const store = new EventStore(backend);
    try {
      await store.append('s-1', [{ type: 'a', data: {} }]);
      await store.readStream('s-1', { limit: 1 });
      for await (const _ of store.readAll({ batchSize: 1 })) break;
      const outbox = backend.outboxStorage();
      await outbox.claim('relay', Date.now(), 10, 1000);
      await outbox.failed(10);
      await outbox.scheduled(Date.now(), 10);
      await outbox.sagas('saga', 10);
      await outbox.pruneHandled(Date.now(), 10);
      await outbox.transaction(async (tx) => {
        await tx.readStream('s-1', { limit: 1 });
      });
      backend.idempotencyStore();
      backend.inbox();
    } finally {
      await store.close();
    }
    // Each kind of statement was prepared: the check saw them.
    expect(prepared.some((sql) => sql.includes('FROM ferry_events WHERE stream_id = ?'))).toBe(true);
    expect(prepared.some((sql) => sql.includes('FROM ferry_outbox o INDEXED BY ferry_outbox_now'))).toBe(
      true,
    );
    expect(prepared.some((sql) => sql.includes('FROM ferry_sagas'))).toBe(true);
    expect(prepared.some((sql) => sql.includes('ferry_idempotency'))).toBe(true);
    expect(prepared.filter((sql) => BARE_BOUND_LIMIT.test(sql))).toEqual([]);
  });
});
