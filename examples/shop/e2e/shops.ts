/**
 * A shop to test, in either mode, with its own data: embedded (in this process, SQLite files in a
 * temporary folder, its own in-memory broker) or distributed (supervised processes, a PostgreSQL
 * database and a RabbitMQ vhost of its own, dropped at the end).
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import Database from 'better-sqlite3';
import { silentLogger } from 'ferry';
import { createTestVhost, type TestVhost, waitFor } from 'ferry/testing';
import pg from 'pg';
import { type DistributedShop, startDistributedShop } from '../distributed.js';
import { startEmbeddedShop } from '../embedded.js';
import { freePorts } from '../supervisor/free-port.js';
import { ShopClient } from './shop-client.js';

export type Mode = 'embedded' | 'distributed';

export interface ShopTuning {
  readonly orderTimeoutMs?: number;
  readonly paymentGiveUpMs?: number;
  /** Distributed: LOG_LEVEL of the processes. @default 'warn' */
  readonly logLevel?: string;
  /** Distributed: `--instances` arguments, e.g. `['--instances', 'payments=2']`. */
  readonly argv?: readonly string[];
}

export interface ShopUnderTest {
  readonly mode: Mode;
  readonly client: ShopClient;
  /** Ids of every order stored (answered or not), read from orders' database. */
  storedOrders(): Promise<string[]>;
  /** Distributed only. */
  readonly distributed?: DistributedShop;
  readonly vhost?: TestVhost;
  /** Output of the processes (distributed), for a failing test's message. */
  output(): string;
  close(): Promise<void>;
}

const TOKEN = 'e2e-admin-token';
const PG_ADMIN_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Ids of every order stored in the embedded shop's data folder (orders' SQLite file, read-only). */
export function sqliteStoredOrders(dataDir: string): string[] {
  const db = new Database(join(dataDir, 'orders.db'), { readonly: true });
  try {
    const rows = db.prepare("SELECT stream_id FROM ferry_events WHERE type = 'OrderPlaced'").all() as {
      stream_id: string;
    }[];
    return rows.map((row) => row.stream_id.slice('order-'.length));
  } finally {
    db.close();
  }
}

export async function openShop(mode: Mode, tuning: ShopTuning = {}): Promise<ShopUnderTest> {
  return mode === 'embedded' ? openEmbedded(tuning) : openDistributed(tuning);
}

async function openEmbedded(tuning: ShopTuning): Promise<ShopUnderTest> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-shop-e2e-'));
  const shop = await startEmbeddedShop({
    dataDir: dir,
    port: 0,
    adminToken: TOKEN,
    logger: () => silentLogger,
    broker: `shop-${randomUUID()}`,
    ...(tuning.orderTimeoutMs === undefined ? {} : { orderTimeoutMs: tuning.orderTimeoutMs }),
    ...(tuning.paymentGiveUpMs === undefined ? {} : { paymentGiveUpMs: tuning.paymentGiveUpMs }),
  });
  return {
    mode: 'embedded',
    client: new ShopClient(shop.url, TOKEN),
    storedOrders: async () => sqliteStoredOrders(dir),
    output: () => '',
    async close() {
      await shop.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function openDistributed(tuning: ShopTuning): Promise<ShopUnderTest> {
  const database = `ferry_shop_${randomUUID().slice(0, 8)}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const dbUrl = new URL(PG_ADMIN_URL);
  dbUrl.pathname = `/${database}`;
  const vhost = await createTestVhost('ferry-shop');
  const dir = await mkdtemp(join(tmpdir(), 'ferry-shop-e2e-'));
  const [port] = await freePorts(1);
  let output = '';
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-200_000);
  });
  const shop = await startDistributedShop({
    argv: tuning.argv ?? [],
    env: {
      ...process.env,
      PORT: String(port),
      FERRY_DATA_DIR: dir,
      FERRY_BUS_URL: vhost.url,
      FERRY_DB_URL: dbUrl.toString(),
      FERRY_ADMIN_TOKEN: TOKEN,
      LOG_LEVEL: tuning.logLevel ?? 'warn',
      ...(tuning.orderTimeoutMs === undefined
        ? {}
        : { SHOP_ORDER_TIMEOUT_MS: String(tuning.orderTimeoutMs) }),
      ...(tuning.paymentGiveUpMs === undefined
        ? {}
        : { SHOP_PAYMENT_GIVE_UP_MS: String(tuning.paymentGiveUpMs) }),
    },
    logger: silentLogger,
    stdout: sink,
    stderr: sink,
  });
  const close = async () => {
    await shop.stop();
    await vhost.dispose();
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => (await fetch(`${shop.url}/health`).catch(() => undefined))?.status === 200,
      () => `the distributed shop to be ready; its output:\n${output.slice(-5000)}`,
      90_000,
    );
  } catch (error) {
    await close();
    throw error;
  }
  return {
    mode: 'distributed',
    client: new ShopClient(shop.url, TOKEN),
    distributed: shop,
    vhost,
    async storedOrders() {
      const client = new pg.Client({ connectionString: dbUrl.toString() });
      await client.connect();
      try {
        const { rows } = await client.query<{ stream_id: string }>(
          "SELECT stream_id FROM shop_orders.events WHERE type = 'OrderPlaced'",
        );
        return rows.map((row) => row.stream_id.slice('order-'.length));
      } finally {
        await client.end();
      }
    },
    output: () => output,
    close,
  };
}
