import type { OutboxRow, SagaRow, SagaStatus } from '../outbox/storage.js';

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
/** The oldest row of its key not held, whatever the state of the others: only it may go. */
export const KEY_HEAD = `NOT EXISTS (SELECT 1 FROM ferry_outbox p WHERE p.key = o.key AND p.seq < o.seq AND NOT ${held('p.')})`;
/** What `claim` may hand to `@owner` at `@now`. */
export const DELIVERABLE = `state = 'pending' AND due_at <= @now
  AND (lease_until IS NULL OR lease_until < @now OR lease_owner = @owner) AND ${KEY_HEAD}`;
