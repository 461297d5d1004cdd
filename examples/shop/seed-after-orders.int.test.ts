import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from 'ferry';
import { createTestVhost, waitFor } from 'ferry/testing';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startService } from './runtime.js';
import { freePorts } from './supervisor/free-port.js';

const PG_ADMIN_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

describe('distributed inventory', () => {
  it('seeds its catalog only once an orders instance answers ready, and is not ready itself until then', async () => {
    // Seeded before orders had bound its queue, the catalog's inventory.updated were refused as
    // unroutable (a warning each on a fresh broker). Orders here is a stand-in that says 503 first.
    const vhost = await createTestVhost('ferry-seed');
    cleanups.push(() => vhost.dispose());
    const database = `ferry_seed_${randomUUID().slice(0, 8)}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.end();
    cleanups.push(async () => {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await c.end();
    });
    const dbUrl = new URL(PG_ADMIN_URL);
    dbUrl.pathname = `/${database}`;
    const dataDir = await mkdtemp(join(tmpdir(), 'ferry-seed-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));

    let ordersReadyAt: number | undefined;
    let asked = 0;
    const orders = createServer((request, response) => {
      if (request.url === '/health/ready') asked++;
      response
        .writeHead(ordersReadyAt === undefined ? 503 : 200, { 'content-type': 'application/json' })
        .end('{}');
    });
    await new Promise<void>((resolve) => orders.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => orders.close(resolve)));
    const ordersUrl = `http://127.0.0.1:${(orders.address() as AddressInfo).port}`;

    const [port] = (await freePorts(1)) as [number];
    let startedAt: number | undefined;
    const starting = startService('inventory', {
      infrastructure: { mode: 'distributed', dataDir, busUrl: vhost.url, dbUrl: dbUrl.toString() },
      adminToken: 'seed-test-token',
      logger: silentLogger,
      port,
      topology: () => ({ users: [], inventory: [], orders: [ordersUrl], payments: [], paymentProvider: '' }),
    }).then((service) => {
      startedAt = Date.now();
      return service;
    });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(startedAt).toBeUndefined();
    expect(asked).toBeGreaterThan(1);
    // Listening, but not ready: the gateway's GET /health says 503 until the catalog is in.
    const early = await fetch(`http://127.0.0.1:${port}/health/ready`);
    expect(early.status).toBe(503);
    expect((await fetch(`http://127.0.0.1:${port}/products/green-tea`)).status).toBe(404);
    ordersReadyAt = Date.now();
    const inventory = await starting;
    cleanups.push(() => inventory.close());
    expect(startedAt!).toBeGreaterThanOrEqual(ordersReadyAt);
    const product = await fetch(`${inventory.url}/products/green-tea`);
    expect(product.status).toBe(200);
    // Ready once seeded (a readiness result is reused for up to 1 s).
    await waitFor(
      async () => (await fetch(`${inventory.url}/health/ready`)).status === 200,
      'inventory ready',
      5000,
    );
  }, 60_000);
});
