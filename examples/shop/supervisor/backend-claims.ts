import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'ferry';
import { SettingsError } from '../settings.js';

/** Names the claims of a shop on its broker and database. */
const LOCK_NAME = 'ferry-shop-supervisor';

export interface BackendClaimsOptions {
  readonly busUrl: string;
  readonly dbUrl: string;
  readonly logger: Logger;
  /** How long a claim another holds is waited for (a killed shop's connection being cleaned up). */
  readonly waitMs?: number;
}

/**
 * One distributed shop per database and per RabbitMQ vhost: two on the same ones share their
 * messages (one's payments charging the other's orders at its own provider). While the supervisor
 * runs it holds a PostgreSQL advisory lock in FERRY_DB_URL's database and an exclusive queue in
 * FERRY_BUS_URL's vhost; a second shop waits `waitMs` for them (a killed shop's connections being
 * closed), then stops with a SettingsError naming the variable. A broker or database that cannot be
 * reached now is not checked (its services say why), and a claim lost with its connection is not
 * taken again: the check guards against a mistake at the start, it does not fence. Resolves with the
 * function that lets the claims go.
 */
export async function claimBackends(options: BackendClaimsOptions): Promise<() => Promise<void>> {
  const waitMs = options.waitMs ?? 10_000;
  const releaseDb = await claimDatabase(options.dbUrl, options.logger, waitMs);
  try {
    const releaseBus = await claimVhost(options.busUrl, options.logger, waitMs);
    return async () => {
      await releaseBus();
      await releaseDb();
    };
  } catch (error) {
    await releaseDb();
    throw error;
  }
}

async function claimDatabase(url: string, logger: Logger, waitMs: number): Promise<() => Promise<void>> {
  const pg = (await import('pg')).default;
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5_000,
    application_name: LOCK_NAME,
  });
  // A connection lost later takes the lock with it; nothing to do then.
  client.on('error', () => {});
  const release = () => client.end().catch(() => {});
  try {
    await client.connect();
    await untilClaimed(
      async () => {
        const { rows } = await client.query<{ taken: boolean }>(
          'SELECT pg_try_advisory_lock(hashtext($1)) AS taken',
          [LOCK_NAME],
        );
        return rows[0]?.taken === true;
      },
      waitMs,
      "FERRY_DB_URL names a database another shop runs on (its supervisor holds the shop's lock there): give each shop a database and a RabbitMQ vhost of its own",
    );
    return release;
  } catch (error) {
    await release();
    if (error instanceof SettingsError) throw error;
    // Unreachable, or refused: the services say so in their own words.
    logger.debug(
      `could not check that no other shop runs on FERRY_DB_URL's database (code ${codeOf(error)})`,
    );
    return async () => {};
  }
}

async function claimVhost(url: string, logger: Logger, waitMs: number): Promise<() => Promise<void>> {
  const amqp = await import('amqplib');
  let connection: Awaited<ReturnType<typeof amqp.connect>>;
  try {
    connection = await amqp.connect(url, { timeout: 5_000 });
  } catch (error) {
    logger.debug(`could not check that no other shop runs on FERRY_BUS_URL's vhost (code ${codeOf(error)})`);
    return async () => {};
  }
  // Closed by the broker later (a restart, close_all_connections): the claim goes with it.
  connection.on('error', () => {});
  const release = () => connection.close().catch(() => {});
  try {
    await untilClaimed(
      async () => {
        const channel = await connection.createChannel();
        channel.on('error', () => {});
        try {
          // Exclusive: deleted with this connection; another connection's declare is refused (405).
          await channel.assertQueue(LOCK_NAME, { exclusive: true, durable: false });
          return true;
        } catch (error) {
          if (codeOf(error) !== '405') throw error;
          return false;
        }
      },
      waitMs,
      "FERRY_BUS_URL names a RabbitMQ vhost another shop runs on (its supervisor holds the shop's claim there): give each shop a vhost and a database of its own",
    );
    return release;
  } catch (error) {
    await release();
    if (error instanceof SettingsError) throw error;
    logger.debug(`could not check that no other shop runs on FERRY_BUS_URL's vhost (code ${codeOf(error)})`);
    return async () => {};
  }
}

/**
 * Tries a claim every 250 ms until `tryOnce` takes it, or throws a SettingsError saying `refusal`
 * once `waitMs` have passed (a killed shop's claim is let go when its connection is cleaned up).
 */
async function untilClaimed(tryOnce: () => Promise<boolean>, waitMs: number, refusal: string): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!(await tryOnce())) {
    if (Date.now() >= deadline) throw new SettingsError(refusal);
    await sleep(250);
  }
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' || typeof code === 'number' ? String(code) : 'none';
}
