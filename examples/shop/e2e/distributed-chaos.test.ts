/**
 * The distributed shop under faults, 200 orders in flight: a payments process SIGKILLed (the
 * supervisor brings it back) and every RabbitMQ connection of the shop closed at once. What must not
 * be lost: every order stored ends confirmed or cancelled; the provider keeps exactly one charge per
 * confirmed order and none for a cancelled one; stock + reserved + sold = the starting stock.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isAlive } from '../supervisor/test-kit.js';
import { chaosCatalog, expectEverythingAddsUp, placeOrders } from './chaos-kit.js';
import { openShop, type ShopUnderTest } from './shops.js';

const opened: ShopUnderTest[] = [];
afterEach(async () => {
  for (const shop of opened.splice(0)) await shop.close();
}, 60_000);

async function chaos(instances: number): Promise<ShopUnderTest> {
  const shop = await openShop('distributed', {
    logLevel: 'info',
    ...(instances > 1 ? { argv: ['--instances', `payments=${instances}`] } : {}),
  });
  opened.push(shop);
  const { client } = shop;
  const supervisor = shop.distributed!.supervisor;
  const catalog = await chaosCatalog(client);

  const { accepted } = await placeOrders(client, catalog, 200, async () => {
    expect(supervisor.kill('payments', 0, 'SIGKILL')).toBe(true);
    expect(await shop.vhost!.closeConnections('chaos test')).toBeGreaterThan(0);
  });
  // The gateway, users, inventory and orders stayed up: every order was answered.
  expect(accepted).toHaveLength(200);
  const stored = await shop.storedOrders();
  expect(stored.sort()).toEqual([...accepted].sort());
  await expectEverythingAddsUp(client, stored, catalog);
  expect(supervisor.status().find((s) => s.name === 'payments' && s.instance === 0)?.restarts).toBe(1);
  return shop;
}

describe('the distributed shop under faults', () => {
  it('SIGKILLed payments and closed broker connections lose nothing', async () => {
    await chaos(1);
  }, 300_000);

  it('two payments instances share the charges, and one SIGKILLed loses nothing', async () => {
    const shop = await chaos(2);
    // Both instances took charges (competing consumers of one group).
    const output = shop.output();
    for (const label of ['payments#0', 'payments#1']) {
      expect(output, label).toMatch(new RegExp(`${label}\\s*\\|.*order .*: (charged|declined)`));
    }
  }, 300_000);

  it('stops every process within 10 s, with orders in flight', async () => {
    const shop = await openShop('distributed');
    opened.push(shop);
    const catalog = await chaosCatalog(shop.client);
    const supervisor = shop.distributed!.supervisor;
    const pids = supervisor.status().map((s) => s.pid as number);
    let stoppedInMs = 0;
    await placeOrders(shop.client, catalog, 60, async () => {
      const started = Date.now();
      await supervisor.stop();
      stoppedInMs = Date.now() - started;
    });
    expect(stoppedInMs).toBeLessThan(10_000);
    for (const pid of pids) expect(isAlive(pid), `pid ${pid}`).toBe(false);
  }, 300_000);
});
