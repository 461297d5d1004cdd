/**
 * The embedded shop SIGKILLed with orders in flight, then started again on the same data folder.
 * What must not be lost: every order stored (answered 201 or not — the answer may have died with
 * the process) ends confirmed or cancelled after the restart; no confirmed order without exactly
 * one charge, no cancelled order keeping one; no unit of stock lost or sold twice.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from 'ferry/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { freePorts } from '../supervisor/free-port.js';
import { chaosCatalog, expectEverythingAddsUp, placeOrders } from './chaos-kit.js';
import { ShopClient } from './shop-client.js';
import { sqliteStoredOrders } from './shops.js';

const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));
const TOKEN = 'chaos-admin-token';
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** `npm start`, as a process of its own; resolves once its gateway says every service is ready. */
async function startShop(dataDir: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--conditions=ferry-source', '--import', 'tsx', MAIN], {
    env: {
      ...process.env,
      FERRY_DATA_DIR: dataDir,
      PORT: String(port),
      FERRY_ADMIN_TOKEN: TOKEN,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  children.push(child);
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`the shop exited (${child.exitCode}): ${stderr}`);
      return (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.status === 200;
    },
    'the embedded shop to be ready',
    60_000,
  );
  return child;
}

describe('the embedded shop, SIGKILLed with 200 orders in flight', () => {
  it('finishes every stored order after a restart, with the books balanced', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ferry-shop-chaos-'));
    dirs.push(dataDir);
    const [port] = await freePorts(1);
    let shop = await startShop(dataDir, port as number);
    const client = new ShopClient(`http://127.0.0.1:${port}`, TOKEN);
    const catalog = await chaosCatalog(client);

    const exited = () => new Promise((resolve) => shop.once('exit', resolve));
    const { accepted } = await placeOrders(client, catalog, 200, async () => {
      const gone = exited();
      shop.kill('SIGKILL');
      await gone;
    });
    // Some were answered before the kill, and the rest failed: both must be there.
    expect(accepted.length).toBeGreaterThan(50);
    expect(accepted.length).toBeLessThan(200);

    shop = await startShop(dataDir, port as number);
    const stored = sqliteStoredOrders(dataDir);
    // Every order answered 201 was stored (durable before its answer).
    expect(stored).toEqual(expect.arrayContaining(accepted));
    const orders = await expectEverythingAddsUp(client, stored, catalog);
    expect(orders.filter((o) => o.status === 'confirmed').length).toBeGreaterThan(0);
  }, 240_000);
});
