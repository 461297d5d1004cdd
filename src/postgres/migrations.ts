import type { Pool } from 'pg';

/** One schema change; applied once, in version order, inside a transaction. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  /** SQL with `$schema` standing for the quoted schema name. */
  readonly sql: string;
}

/**
 * The event store's schema, version by version. Never edit a released migration: add one.
 *
 * Positions are `transaction id << 16 | index in the transaction`: they order events by the
 * transaction that wrote them, so a reader that stops below `pg_snapshot_xmin(pg_current_snapshot())`
 * (every transaction below it has ended) never misses an event committed late by a concurrent
 * transaction, and positions still follow the global order exactly.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'events, checkpoints, parked events, snapshots',
    sql: `
      CREATE TABLE $schema.events (
        position bigint PRIMARY KEY,
        stream_id text NOT NULL,
        version bigint NOT NULL,
        id uuid NOT NULL,
        type text NOT NULL,
        data jsonb NOT NULL,
        metadata jsonb NOT NULL,
        time timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT events_stream_version UNIQUE (stream_id, version),
        CONSTRAINT events_stream_event_id UNIQUE (stream_id, id)
      );
      CREATE TABLE $schema.checkpoints (
        name text PRIMARY KEY,
        position bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE $schema.parked (
        subscription text NOT NULL,
        position bigint NOT NULL,
        error text NOT NULL,
        attempts integer NOT NULL,
        parked_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (subscription, position)
      );
      CREATE TABLE $schema.snapshots (
        stream_id text PRIMARY KEY,
        version bigint NOT NULL,
        schema_version integer NOT NULL,
        state jsonb NOT NULL,
        time timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
  {
    version: 2,
    name: 'inbox of idempotent consumers',
    sql: `
      CREATE TABLE $schema.inbox (
        key text PRIMARY KEY,
        state text NOT NULL CHECK (state IN ('processing', 'done')),
        lease_until timestamptz,
        processed_at timestamptz
      );
      CREATE INDEX inbox_done ON $schema.inbox (processed_at) WHERE state = 'done';
    `,
  },
  {
    version: 3,
    name: 'subscription leases',
    sql: `
      CREATE TABLE $schema.subscription_leases (
        subscription text PRIMARY KEY,
        owner text NOT NULL,
        expires_at timestamptz NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'HTTP idempotency keys',
    // status is NULL while a request holds the key (under claim); expires_at ends the lease while
    // held, the replay once completed. The body is kept as bytes (encoding says how it was given).
    sql: `
      CREATE TABLE $schema.idempotency (
        namespace text NOT NULL,
        key text NOT NULL,
        fingerprint text NOT NULL,
        claim text,
        status integer,
        headers text,
        body bytea,
        encoding text,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (namespace, key)
      );
      CREATE INDEX idempotency_expires ON $schema.idempotency (expires_at);
    `,
  },
  {
    version: 5,
    name: 'outbox, transactional inbox marks, sagas',
    // Times are epoch milliseconds from the caller's clock (a virtual one in tests), not now(). The
    // index of migration 2 named inbox_done would clash with the table of that name (tables and
    // indexes share a schema's namespace): it is renamed first. Delivered outbox rows are deleted,
    // so the table stays small; (key, seq) serves the "no older row of the key" check of a claim.
    sql: `
      ALTER INDEX $schema.inbox_done RENAME TO inbox_processed;
      CREATE TABLE $schema.outbox (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        key text NOT NULL,
        envelope text NOT NULL,
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        created_at bigint NOT NULL,
        due_at bigint NOT NULL,
        lease_owner text,
        lease_until bigint,
        last_error text
      );
      CREATE INDEX outbox_key_seq ON $schema.outbox (key, seq);
      CREATE INDEX outbox_state_due ON $schema.outbox (state, due_at);
      CREATE TABLE $schema.inbox_done (
        consumer text NOT NULL,
        message_id text NOT NULL,
        handled_at bigint NOT NULL,
        PRIMARY KEY (consumer, message_id)
      );
      CREATE INDEX inbox_done_handled_at ON $schema.inbox_done (handled_at);
      CREATE TABLE $schema.sagas (
        saga text NOT NULL,
        id text NOT NULL,
        state text NOT NULL,
        version integer NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'completed')),
        updated_at bigint NOT NULL,
        PRIMARY KEY (saga, id)
      );
      CREATE INDEX sagas_saga_status_updated ON $schema.sagas (saga, status, updated_at);
    `,
  },
];

/**
 * Brings `schema` up to the latest migration. Several processes starting at once serialise on an
 * advisory lock, so each migration runs exactly once.
 */
export async function migrate(
  pool: Pool,
  schema: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number> {
  const quoted = `"${schema}"`;
  const client = await pool.connect();
  try {
    // No limit for migrations (an index built on a large table, another process's migration waited
    // for); the pool's own limit again once done.
    await client.query('SET statement_timeout = 0');
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [`ferry-migrations:${schema}`]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoted}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${quoted}.migrations (
           version integer PRIMARY KEY,
           name text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now()
         )`,
      );
      const { rows } = await client.query<{ version: number | null }>(
        `SELECT max(version) AS version FROM ${quoted}.migrations`,
      );
      const current = rows[0]?.version ?? 0;
      let applied = 0;
      for (const migration of migrations) {
        if (migration.version <= current) continue;
        await client.query('BEGIN');
        try {
          await client.query(migration.sql.replaceAll('$schema', quoted));
          await client.query(`INSERT INTO ${quoted}.migrations (version, name) VALUES ($1, $2)`, [
            migration.version,
            migration.name,
          ]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {});
          throw error;
        }
        applied++;
      }
      return applied;
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [`ferry-migrations:${schema}`]);
    }
  } finally {
    // Back to the pool's limit, or the connection is dropped rather than pooled without one.
    const reset = await client.query('RESET statement_timeout').then(
      () => true,
      () => false,
    );
    client.release(!reset);
  }
}
