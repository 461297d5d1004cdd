import { preparedStatement } from './prepared-statement.js';

/** Columns of an outbox row as `OutboxRow` needs them. */
const OUTBOX_COLUMNS = 'seq, id, key, envelope, state, attempts, created_at, due_at, last_error';
const SAGA_COLUMNS = 'saga, id, state, version, status, updated_at';

/** A lease is held while `lease_until >= now`; a claim may take rows whose lease ended before `now`. */
const NOT_LEASED = (now: string) => `(lease_until IS NULL OR lease_until < ${now})`;

/**
 * A row held until its message is settled (`OutboxStorage.hold`) has `held:` before its holder's name
 * in `lease_owner`: no column of its own, so no migration. `HELD('p.', '$2')`: row `p` is held by a
 * relay whose lease runs at `$2`.
 */
const HELD = (alias: string, now: string) =>
  `(coalesce(${alias}lease_owner, '') LIKE 'held:%' AND ${alias}lease_until >= ${now})`;
/**
 * A message scheduled for later (`work.schedule`) and not yet attempted: what `scheduled()` lists and
 * `cancel` may delete. A plain message, or one waiting for a retry, is not.
 */
const SCHEDULED = '(due_at > created_at AND last_error IS NULL)';

/**
 * The oldest row of its key not held, whatever the state of the others, leaving out the messages
 * scheduled for later and not yet due: only it may go. A scheduled message takes its place in its
 * key's order when it falls due: until then it holds back nothing, and once due it waits for a
 * message of its key committed after it that is being sent (leased, not held) before it goes.
 */
const KEY_HEAD = (s: string, now: string) =>
  `NOT EXISTS (SELECT 1 FROM ${s}.outbox p WHERE p.key = o.key AND p.seq < o.seq AND NOT ${HELD('p.', now)}
     AND NOT (p.due_at > ${now} AND p.due_at > p.created_at AND p.last_error IS NULL))
   AND NOT (o.due_at > o.created_at AND o.last_error IS NULL AND EXISTS (SELECT 1 FROM ${s}.outbox p
     WHERE p.key = o.key AND p.seq > o.seq AND coalesce(p.lease_owner, '') NOT LIKE 'held:%' AND p.lease_until >= ${now}))`;

/** The outbox storage's statements, with the quoted schema name filled in once. */

export function outboxStatements(s: string) {
  return {
    /**
     * One statement, so one short transaction: the oldest row of each key (no row of the key with a
     * lower seq, whatever its state, but held ones), due and not leased, locked with SKIP LOCKED so
     * that relays claiming at once pass each other's rows by. A row another relay leased meanwhile is
     * checked again on its new version (its lease excludes it). A later row of a key whose oldest row
     * is locked by another claim is excluded by the NOT EXISTS, which still sees that row.
     */
    claim: `
      WITH c AS (
        SELECT seq FROM ${s}.outbox o
        WHERE state = 'pending' AND due_at <= $2
          AND (lease_until IS NULL OR lease_until < $2 OR lease_owner = $1)
          AND ${KEY_HEAD(s, '$2')}
        ORDER BY seq LIMIT $3
        FOR UPDATE SKIP LOCKED
      )
      UPDATE ${s}.outbox o SET lease_owner = $1, lease_until = $2 + $4
      FROM c WHERE o.seq = c.seq
      RETURNING ${OUTBOX_COLUMNS.split(', ')
        .map((c) => `o.${c}`)
        .join(', ')}`,
    delivered: `DELETE FROM ${s}.outbox WHERE seq = ANY($2::bigint[]) AND lease_owner IN ($1, 'held:' || $1)`,
    hold: `
      UPDATE ${s}.outbox SET lease_owner = 'held:' || $1, lease_until = $3
      WHERE seq = ANY($2::bigint[]) AND lease_owner IN ($1, 'held:' || $1) AND state = 'pending'
      RETURNING seq`,
    retry: `
      UPDATE ${s}.outbox SET attempts = attempts + $5::int, last_error = $3, due_at = $4, lease_owner = NULL, lease_until = NULL
      WHERE seq = $2 AND lease_owner = $1 AND state = 'pending'`,
    fail: `
      UPDATE ${s}.outbox SET state = 'failed', attempts = attempts + 1, last_error = $3, lease_owner = NULL, lease_until = NULL
      WHERE seq = $2 AND lease_owner = $1 AND state = 'pending'`,
    failed: `SELECT ${OUTBOX_COLUMNS} FROM ${s}.outbox WHERE state = 'failed' ORDER BY seq LIMIT $1`,
    redrive: `
      UPDATE ${s}.outbox SET state = 'pending', due_at = $2, attempts = 0, lease_owner = NULL, lease_until = NULL
      WHERE id = ANY($1::text[]) AND state = 'failed'`,
    discard: `DELETE FROM ${s}.outbox WHERE id = ANY($1::text[]) AND state = 'failed'`,
    backlog: `
      SELECT count(*) FILTER (WHERE state = 'pending' AND NOT ${HELD('', '$1')} AND NOT (${SCHEDULED} AND due_at > $1))::float8 AS pending,
             count(*) FILTER (WHERE ${HELD('', '$1')})::float8 AS held,
             count(*) FILTER (WHERE state = 'failed')::float8 AS failed,
             count(*) FILTER (WHERE state = 'pending' AND ${SCHEDULED} AND due_at > $1)::float8 AS scheduled,
             min(CASE WHEN ${SCHEDULED} THEN due_at ELSE created_at END)
               FILTER (WHERE NOT (state = 'pending' AND ${SCHEDULED} AND due_at > $1) AND NOT ${HELD('', '$1')})::float8 AS oldest
      FROM ${s}.outbox`,
    // Only the oldest row of a key can be claimed: rows waiting behind it do not make the relay look sooner.
    nextDue: `
      SELECT min(due_at)::float8 AS due FROM ${s}.outbox o
      WHERE state = 'pending' AND ${NOT_LEASED('$1')} AND ${KEY_HEAD(s, '$1')}`,
    scheduled: `
      SELECT ${OUTBOX_COLUMNS} FROM ${s}.outbox
      WHERE state = 'pending' AND ${SCHEDULED} AND due_at > $1 AND ($3::text IS NULL OR key = $3)
      ORDER BY due_at, seq LIMIT $2`,
    pruneHandled: `
      DELETE FROM ${s}.inbox_done WHERE (consumer, message_id) IN (
        SELECT consumer, message_id FROM ${s}.inbox_done WHERE handled_at < $1 ORDER BY handled_at LIMIT $2
      )`,
    sagas: `
      SELECT ${SAGA_COLUMNS} FROM ${s}.sagas
      WHERE saga = $1 AND ($3::text IS NULL OR status = $3)
      ORDER BY updated_at, id COLLATE "C" LIMIT $2`,

    // Inside a unit of work.
    /**
     * Sorted, so that two transactions locking the same keys take them in the same order. The sort
     * runs before the locks are taken: PostgreSQL evaluates volatile output expressions after ORDER BY.
     */
    lockKeys: preparedStatement(
      `SELECT pg_advisory_xact_lock(hashtextextended($1 || k, 0)) FROM unnest($2::text[]) AS k ORDER BY k`,
    ),
    enqueue: preparedStatement(`
      INSERT INTO ${s}.outbox (id, key, envelope, created_at, due_at)
      SELECT m.id, m.key, m.envelope, m.created_at, m.due_at
      FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
        WITH ORDINALITY AS m(id, key, envelope, created_at, due_at, ord)
      ORDER BY m.ord`),
    cancel: preparedStatement(`
      DELETE FROM ${s}.outbox WHERE id = ANY($1::text[]) AND state = 'pending' AND ${SCHEDULED} AND ${NOT_LEASED('$2')}
      RETURNING id`),
    markHandled: preparedStatement(`
      INSERT INTO ${s}.inbox_done (consumer, message_id, handled_at) VALUES ($1, $2, $3)
      ON CONFLICT (consumer, message_id) DO NOTHING`),
    loadSaga: preparedStatement(`SELECT ${SAGA_COLUMNS} FROM ${s}.sagas WHERE saga = $1 AND id = $2`),
    insertSaga: preparedStatement(`
      INSERT INTO ${s}.sagas (saga, id, state, version, status, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (saga, id) DO NOTHING`),
    updateSaga: preparedStatement(`
      UPDATE ${s}.sagas SET state = $3, version = $4, status = $5, updated_at = $6
      WHERE saga = $1 AND id = $2 AND version = $7`),
  };
}
