import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { OutboxStorage } from '../outbox/storage.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

// `claim` and `nextDue` read the outbox through partial indexes, in one SELECT per kind of row
// (sqlite-outbox-sql.ts). These tests hold them to the contract's definition written as one plain
// query, which reads every row: on outboxes of every mix of states, both must pick the same rows.

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-outbox-claim-'));
let files = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const backends: SqliteEventStoreBackend[] = [];
afterEach(async () => {
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
});

async function openStorage(): Promise<OutboxStorage> {
  const backend = new SqliteEventStoreBackend({ path: join(dir, `claim-${++files}.db`) });
  await backend.open();
  backends.push(backend);
  return backend.outboxStorage();
}

const NOW = Date.UTC(2026, 0, 1);

/** The storage contract's `claim` and `nextDue`, read off every row (the statements before migration 7). */
const HELD = (alias: string) =>
  `(coalesce(${alias}lease_owner, '') LIKE 'held:%' AND ${alias}lease_until >= @now)`;
// Scheduled messages not yet due hold back nothing; once due, one waits for a later row of its key being sent.
const SCHEDULED = (alias: string) => `(${alias}due_at > ${alias}created_at AND ${alias}last_error IS NULL)`;
const KEY_HEAD = `NOT EXISTS (SELECT 1 FROM ferry_outbox p WHERE p.key = o.key AND p.seq < o.seq AND NOT ${HELD('p.')}
    AND NOT (${SCHEDULED('p.')} AND p.due_at > @now))
  AND NOT (${SCHEDULED('o.')} AND EXISTS (SELECT 1 FROM ferry_outbox p WHERE p.key = o.key AND p.seq > o.seq
    AND p.lease_owner IS NOT NULL AND p.lease_owner NOT LIKE 'held:%' AND p.lease_until >= @now))`;
const REFERENCE_CLAIM = `SELECT seq FROM ferry_outbox o NOT INDEXED
  WHERE state = 'pending' AND due_at <= @now
    AND (lease_until IS NULL OR lease_until < @now OR lease_owner = @owner) AND ${KEY_HEAD}
  ORDER BY seq LIMIT @limit`;
const REFERENCE_NEXT_DUE = `SELECT min(due_at) AS due FROM ferry_outbox o NOT INDEXED
  WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < @now) AND ${KEY_HEAD}`;

interface Row {
  key: string;
  state?: 'pending' | 'failed';
  dueAt?: number;
  owner?: string | null;
  until?: number | null;
  /** Set on a row attempted before (waiting for a retry, or failed). */
  lastError?: string | null;
}

/** Replaces the outbox's rows with `rows`, in `seq` order. */
async function fill(storage: OutboxStorage, rows: readonly Row[]): Promise<void> {
  await storage.transaction(async (tx) => {
    await tx.query('DELETE FROM ferry_outbox');
    for (const [i, row] of rows.entries()) {
      await tx.query(
        `INSERT INTO ferry_outbox (id, key, envelope, state, created_at, due_at, lease_owner, lease_until, last_error)
         VALUES (?, ?, '{}', ?, ?, ?, ?, ?, ?)`,
        [
          `m${i}`,
          row.key,
          row.state ?? 'pending',
          NOW - 1000,
          row.dueAt ?? NOW - 1000,
          row.owner ?? null,
          row.until ?? null,
          row.lastError ?? (row.state === 'failed' ? 'refused' : null),
        ],
      );
    }
  });
}

async function reference(
  storage: OutboxStorage,
  owner: string,
  limit: number,
): Promise<{ ids: string[]; nextDue: number | undefined }> {
  return storage.transaction(async (tx) => {
    const rows = await tx.query(
      REFERENCE_CLAIM.replace('@owner', '?').replace('@limit', '?').replaceAll('@now', String(NOW)),
      [owner, limit],
    );
    const seqs = rows.map((row) => BigInt(row.seq as bigint));
    const ids = await tx.query('SELECT seq, id FROM ferry_outbox ORDER BY seq');
    const idOf = new Map(ids.map((row) => [BigInt(row.seq as bigint), row.id as string]));
    const [due] = await tx.query(REFERENCE_NEXT_DUE.replaceAll('@now', String(NOW)));
    return {
      ids: seqs.map((seq) => idOf.get(seq)!),
      nextDue: due?.due === null || due?.due === undefined ? undefined : Number(due.due),
    };
  });
}

/** Deterministic, so that a failure names the outbox it failed on. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

const LEASES: readonly Pick<Row, 'owner' | 'until'>[] = [
  { owner: null, until: null },
  { owner: null, until: null },
  { owner: null, until: null },
  { owner: 'relay-a', until: NOW + 5000 }, // the claimer's own lease
  { owner: 'relay-a', until: NOW - 1 },
  { owner: 'relay-b', until: NOW + 5000 }, // another relay's lease, running
  { owner: 'relay-b', until: NOW - 1 }, // ended
  { owner: 'relay-b', until: NOW }, // runs through `now`
  { owner: 'held:relay-a', until: NOW + 5000 }, // held, running
  { owner: 'held:relay-b', until: NOW + 5000 },
  { owner: 'held:relay-b', until: NOW }, // held through `now`
  { owner: 'held:relay-b', until: NOW - 1 }, // held by a relay that died
  { owner: 'HELD:relay-b', until: NOW + 5000 }, // LIKE ignores case: held too
  { owner: 'held:relay-b', until: null },
  { owner: 'held:odd', until: NOW + 5000 }, // leased to an owner named `held:odd`
];

describe('SQLite outbox claim', () => {
  it('hands out what a plain read of every row would, on random outboxes of every state', async () => {
    const storage = await openStorage();
    for (let seed = 1; seed <= 150; seed++) {
      const next = random(seed);
      const pick = <T>(values: readonly T[]): T => values[Math.floor(next() * values.length)]!;
      const rows = Array.from(
        { length: Math.floor(next() * 30) },
        (): Row => ({
          key: pick(['a', 'b', 'c', 'd', 'e']),
          state: next() < 0.1 ? 'failed' : 'pending',
          dueAt: pick([NOW - 1000, NOW - 1000, NOW, NOW + 1, NOW + 60_000]),
          lastError: next() < 0.3 ? 'refused' : null,
          ...pick(LEASES),
        }),
      );
      const owner = next() < 0.8 ? 'relay-a' : 'held:odd';
      const limit = 1 + Math.floor(next() * 6);
      await fill(storage, rows);
      const expected = await reference(storage, owner, limit);

      expect(await storage.nextDue(NOW), `seed ${seed}`).toBe(expected.nextDue);
      const claimed = await storage.claim(owner, NOW, limit, 1000);
      expect(
        claimed.map((row) => row.id),
        `seed ${seed}`,
      ).toEqual(expected.ids);
    }
  });

  it('lets the row after a held head go, and holds the key again behind a hold that ended or a failed row', async () => {
    const storage = await openStorage();
    await fill(storage, [
      { key: 'a', owner: 'held:relay-b', until: NOW + 5000 }, // m0: held, the key goes on
      { key: 'a' }, // m1
      { key: 'b', owner: 'held:relay-b', until: NOW - 1 }, // m2: its relay died: it goes again first
      { key: 'b' }, // m3
      { key: 'c', state: 'failed' }, // m4: holds its key
      { key: 'c' }, // m5
      { key: 'd', dueAt: NOW + 60_000 }, // m6: scheduled, not due
      { key: 'e', owner: 'relay-b', until: NOW + 5000 }, // m7: leased to another relay
      { key: 'e' }, // m8
      { key: 'f' }, // m9
    ]);

    expect(await storage.nextDue(NOW)).toBe(NOW - 1000);
    expect((await storage.claim('relay-a', NOW, 10, 1000)).map((row) => row.id)).toEqual(['m1', 'm2', 'm9']);
    expect(await storage.nextDue(NOW)).toBe(NOW + 60_000);
    expect(await storage.claim('relay-c', NOW, 10, 1000)).toEqual([]);
  });
});
