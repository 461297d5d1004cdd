import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { DuplicateEventIdError, isConcurrencyError } from '../eventstore/errors.js';
import type { PreparedEvent } from '../eventstore/types.js';
import { preparedTestEvents } from '../testing/outbox-rows.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

/*
 * An append of one event whose expected version holds is inserted at once: its ids are looked up only
 * when the insert finds one already in the stream. What every append returns stays as before: the
 * stored result for an append sent again, the typed errors otherwise, and no position skipped.
 */

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-append-'));
let files = 0;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const close of cleanups.splice(0).reverse()) await close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FIND_IDS = /^SELECT id, version, position FROM ferry_events WHERE stream_id = \? AND id IN/;

/** Counts the runs of the id lookup on every connection the backend opens from now on. */
function countIdLookups(): { readonly runs: number } {
  const counter = { runs: 0 };
  const prepare = Database.prototype.prepare;
  vi.spyOn(Database.prototype, 'prepare').mockImplementation(function (this: Database.Database, sql: string) {
    const statement = prepare.call(this, sql);
    if (FIND_IDS.test(sql)) {
      const all = statement.all as (...params: unknown[]) => unknown[];
      (statement as { all: (...params: unknown[]) => unknown[] }).all = function (
        this: unknown,
        ...params: unknown[]
      ) {
        counter.runs++;
        return all.apply(this, params);
      };
    }
    return statement;
  });
  return counter;
}

async function open() {
  const path = join(dir, `append-${++files}.db`);
  const backend = new SqliteEventStoreBackend({ path });
  await backend.open();
  cleanups.push(() => backend.close());
  return { backend, storage: backend.outboxStorage(), path };
}

const positions = (path: string): bigint[] => {
  const db = new Database(path, { readonly: true });
  db.defaultSafeIntegers(true);
  try {
    return db.prepare<[], bigint>('SELECT position FROM ferry_events ORDER BY position').pluck().all();
  } finally {
    db.close();
  }
};

describe('SQLite append of one event', () => {
  it('reads no ids before writing, through the store and in a unit of work', async () => {
    const lookups = countIdLookups();
    const { backend, storage } = await open();
    const [a, b] = [preparedTestEvents('a'), preparedTestEvents('b')];
    await backend.append('s-1', a, 'no_stream');
    await storage.transaction(async (tx) => tx.append('s-1', b, 0));
    await backend.append('s-2', preparedTestEvents('c'), 'any');
    expect(lookups.runs).toBe(0);
    // Two events: their ids are still read first (a failed second insert would leave the first).
    await backend.append('s-2', preparedTestEvents('d', 'e'), 0);
    expect(lookups.runs).toBe(1);
  });

  it('sent again returns what is stored and writes nothing, whether its expected version still holds or not', async () => {
    const { backend, storage, path } = await open();
    const [first] = preparedTestEvents('first') as [PreparedEvent];
    const stored = await backend.append('s-1', [first], 'any');
    // 'any' still holds: the insert meets the id, then it is looked up.
    const again = await backend.append('s-1', [first], 'any');
    expect(again).toEqual(stored);
    // 'no_stream' no longer holds: looked up at once, as before.
    expect(await backend.append('s-1', [first], 'no_stream')).toEqual(stored);
    const inUnit = await storage.transaction(async (tx) => tx.append('s-1', [first], 'any'));
    expect(inUnit).toMatchObject({ nextExpectedVersion: 0, position: stored.position, repeated: true });
    // No position was used up by the inserts refused: the next event follows the first at once.
    const next = await backend.append('s-1', preparedTestEvents('next'), 0);
    expect(next.position).toBe(stored.position + 1n);
    expect(positions(path)).toEqual([stored.position, stored.position + 1n]);
  });

  it('keeps the typed refusals: a version that does not hold, an id among others already stored', async () => {
    const { backend, storage } = await open();
    const [x, y] = preparedTestEvents('x', 'y') as [PreparedEvent, PreparedEvent];
    await backend.append('s-1', [x], 'no_stream');
    const conflict = await backend.append('s-1', preparedTestEvents('z'), 5).catch((e: unknown) => e);
    expect(isConcurrencyError(conflict)).toBe(true);
    const partial = await backend.append('s-1', [y, x], 0).catch((e: unknown) => e);
    expect(partial).toBeInstanceOf(DuplicateEventIdError);
    // In a unit of work, the refusal leaves the unit going: what it wrote after commits.
    const after = await storage.transaction(async (tx) => {
      await expect(tx.append('s-1', preparedTestEvents('w'), 'no_stream')).rejects.toSatisfy(
        isConcurrencyError,
      );
      return tx.append('s-1', [y], 0);
    });
    expect(after).toMatchObject({ nextExpectedVersion: 1 });
    expect((await backend.readStream('s-1', {})).map((e) => e.type)).toEqual(['x', 'y']);
  });
});
