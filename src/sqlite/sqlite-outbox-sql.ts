import type Database from 'better-sqlite3';
import { DuplicateMessageIdError } from '../outbox/errors.js';
import type { OutboxInsert, OutboxRow, SagaRow, SagaStatus } from '../outbox/storage.js';
import { isUniqueViolation } from './unique-violation.js';

// Integers come back as bigint (`defaultSafeIntegers`); times and counts are converted to numbers.
export interface OutboxDbRow {
  seq: bigint;
  id: string;
  key: string;
  envelope: string;
  state: 'pending' | 'failed';
  attempts: bigint;
  created_at: bigint;
  due_at: bigint;
  last_error: string | null;
}

export interface SagaDbRow {
  saga: string;
  id: string;
  state: string;
  version: bigint;
  status: SagaStatus;
  updated_at: bigint;
}

export const toOutboxRow = (row: OutboxDbRow): OutboxRow => ({
  seq: row.seq,
  id: row.id,
  key: row.key,
  envelope: row.envelope,
  state: row.state,
  attempts: Number(row.attempts),
  createdAt: Number(row.created_at),
  dueAt: Number(row.due_at),
  lastError: row.last_error ?? undefined,
});

export const toSagaRow = (row: SagaDbRow): SagaRow => ({
  saga: row.saga,
  id: row.id,
  state: row.state,
  version: Number(row.version),
  status: row.status,
  updatedAt: Number(row.updated_at),
});

/** Times go into INTEGER columns: a fractional clock reading is taken down to its millisecond. */
export const ms = (time: number): number => Math.floor(time);

/** The statement that inserts an outbox row, as {@link insertOutboxRow} runs it. */
export const INSERT_OUTBOX_ROW =
  'INSERT INTO ferry_outbox (id, key, envelope, created_at, due_at) VALUES (?, ?, ?, ?, ?)';

/**
 * Inserts `m` with `insert` ({@link INSERT_OUTBOX_ROW}): a message id already in the outbox (its only
 * unique column but the seq) is `DuplicateMessageIdError`, as on every backend.
 */
export function insertOutboxRow(
  insert: Database.Statement<[string, string, string, number, number]>,
  m: OutboxInsert,
): void {
  try {
    insert.run(m.id, m.key, m.envelope, ms(m.createdAt), ms(m.dueAt));
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new DuplicateMessageIdError(m.id, { cause: error });
    }
    throw error;
  }
}

/** Ids or seqs as a JSON array, for `IN (SELECT value FROM json_each(?))`; bigints stay exact. */
export const jsonList = (values: readonly (string | bigint)[]): string =>
  `[${values.map((v) => (typeof v === 'bigint' ? v.toString() : JSON.stringify(v))).join(',')}]`;

export const OUTBOX_COLUMNS = 'seq, id, key, envelope, state, attempts, created_at, due_at, last_error';
export const SAGA_COLUMNS = 'saga, id, state, version, status, updated_at';

/** A lease is held while `lease_until >= now`; a claim may take rows whose lease ended before `now`. */
export const NOT_LEASED = '(lease_until IS NULL OR lease_until < @now)';
/**
 * A message scheduled for later (`work.schedule`) and not yet attempted: what `scheduled()` lists and
 * `cancel` may delete. A plain message, or one waiting for a retry, is not.
 */
export const SCHEDULED = '(due_at > created_at AND last_error IS NULL)';
/**
 * A row held until its message is settled (`OutboxStorage.hold`) has `held:` before its holder's name
 * in `lease_owner`: no column of its own, so no migration. `held('p.')`: row `p` is held by a relay
 * whose lease runs at `@now`.
 */
export const held = (alias: string) =>
  `(coalesce(${alias}lease_owner, '') LIKE 'held:%' AND ${alias}lease_until >= @now)`;
/**
 * `lease_owner` says `held:` (`OutboxStorage.hold`), whether or not the hold still runs; never NULL.
 * The partial indexes of migrations 7 and 8 are defined by these very expressions: a query uses one only
 * where it states the same term, so keep them unchanged.
 */
export const MARKED = "coalesce(lease_owner, '') LIKE 'held:%'";
/**
 * A row due when it was written (a plain message) or later (scheduled, or put back for a retry): the
 * partial indexes of migration 8 split the pending rows by these very terms.
 */
export const AT_ONCE = 'due_at <= created_at';
export const LATER = 'due_at > created_at';
export const UNMARKED = "coalesce(lease_owner, '') NOT LIKE 'held:%'";
/**
 * The oldest row of its key not held, whatever the state of the others, leaving out the messages
 * scheduled for later and not yet due: only it may go. A scheduled message takes its place in its
 * key's order when it falls due: until then it holds back nothing, and once due it waits for a
 * message of its key committed after it that is being sent (leased, not held) before it goes.
 * `held(p)` fails for an unmarked row, or a marked one whose hold ended before `@now`: each kind has
 * an index by key of its own (migration 7), so the check seeks instead of stepping over the key's
 * held rows.
 */
export const KEY_HEAD = `NOT EXISTS (SELECT 1 FROM ferry_outbox p INDEXED BY ferry_outbox_unheld_key
    WHERE p.key = o.key AND p.seq < o.seq AND coalesce(p.lease_owner, '') NOT LIKE 'held:%'
      AND NOT (p.due_at > @now AND p.due_at > p.created_at AND p.last_error IS NULL))
  AND NOT EXISTS (SELECT 1 FROM ferry_outbox p INDEXED BY ferry_outbox_held_key
    WHERE p.key = o.key AND p.lease_until < @now AND coalesce(p.lease_owner, '') LIKE 'held:%' AND p.seq < o.seq
      AND NOT (p.due_at > @now AND p.due_at > p.created_at AND p.last_error IS NULL))
  AND NOT (o.due_at > o.created_at AND o.last_error IS NULL AND EXISTS (SELECT 1 FROM ferry_outbox p INDEXED BY ferry_outbox_unheld_key
    WHERE p.key = o.key AND p.seq > o.seq AND coalesce(p.lease_owner, '') NOT LIKE 'held:%' AND p.lease_until >= @now))`;

/**
 * The rows `claim` may hand to `@owner` at `@now`, as disjoint SELECTs of `columns` (alias `o`) to
 * join with UNION ALL: pending, due (`dueAt <= @now`), not leased by another (or the lease ended), and
 * {@link KEY_HEAD}. Split by the `held:` mark so that none reads the rows held now:
 * 1. unmarked rows due at once ({@link AT_ONCE}), in `seq` order from `ferry_outbox_now`;
 * 2. unmarked rows due later (scheduled, or waiting for a retry), from `ferry_outbox_later` by
 *    `due_at` up to `@now`: the read stops at the first not yet due, however many wait;
 * 3. marked rows whose hold ended (a relay that died), from `ferry_outbox_held` by `lease_until`;
 * 4. marked rows without a `lease_until` (`hold` always sets one; the contract lets them go);
 * 5. rows `@owner` leases under a `held:` name of its own (no relay's name is): skipped at once otherwise.
 */
export const deliverable = (columns: string): string[] =>
  (
    [
      [
        'INDEXED BY ferry_outbox_now',
        `state = 'pending' AND ${UNMARKED} AND ${AT_ONCE} AND (lease_until IS NULL OR lease_until < @now OR lease_owner = @owner)`,
      ],
      [
        'INDEXED BY ferry_outbox_later',
        `state = 'pending' AND ${UNMARKED} AND ${LATER} AND (lease_until IS NULL OR lease_until < @now OR lease_owner = @owner)`,
      ],
      ['INDEXED BY ferry_outbox_held', `${MARKED} AND lease_until < @now AND state = 'pending'`],
      ['INDEXED BY ferry_outbox_held', `${MARKED} AND lease_until IS NULL AND state = 'pending'`],
      // The constant term is tested once, before any row is read.
      [
        'NOT INDEXED',
        "@owner LIKE 'held:%' AND lease_owner = @owner AND lease_until >= @now AND state = 'pending'",
      ],
    ] as const
  ).map(
    ([index, where]) =>
      `SELECT ${columns} FROM ferry_outbox o ${index} WHERE ${where} AND due_at <= @now AND ${KEY_HEAD}`,
  );

/**
 * The earliest `due_at` among rows `claim` could hand out once due: pending, not leased at `@now`,
 * {@link KEY_HEAD}. The unmarked rows are read in `due_at` order up to the first that qualifies; the
 * marked ones whose hold ended (a relay that died) are few.
 */
export const NEXT_DUE = `SELECT min(due) FROM (
  SELECT (SELECT due_at FROM ferry_outbox o INDEXED BY ferry_outbox_ready_due
          WHERE state = 'pending' AND ${UNMARKED} AND ${NOT_LEASED} AND ${KEY_HEAD}
          ORDER BY due_at LIMIT 1) AS due
  UNION ALL SELECT min(due_at) FROM ferry_outbox o INDEXED BY ferry_outbox_held
    WHERE ${MARKED} AND lease_until < @now AND state = 'pending' AND ${KEY_HEAD}
  UNION ALL SELECT min(due_at) FROM ferry_outbox o INDEXED BY ferry_outbox_held
    WHERE ${MARKED} AND lease_until IS NULL AND state = 'pending' AND ${KEY_HEAD})`;
