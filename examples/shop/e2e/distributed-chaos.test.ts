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

  it('keeps taking orders while one orders instance of two is frozen (SIGSTOP), and loses none', async () => {
    // Before, the gateway sent every second call to the frozen instance: within a second every
    // client was waiting there, and no order was taken until it came back. What must not be lost:
    // every order stored ends, and the ledger and stock add up.
    const shop = await openShop('distributed', { argv: ['--instances', 'orders=2'] });
    opened.push(shop);
    const { client } = shop;
    const supervisor = shop.distributed!.supervisor;
    const catalog = await chaosCatalog(client);
    const products = [...catalog.initial.keys()];
    const answers: { at: number; status: number }[] = [];
    let placing = true;
    let n = 0;
    const worker = async () => {
      while (placing) {
        const i = n++;
        const answer = await client
          .call('POST', '/orders', {
            userId: catalog.userIds[i % catalog.userIds.length],
            items: [{ productId: products[i % products.length], quantity: 1 }],
          })
          .catch(() => ({ status: 0 }));
        answers.push({ at: performance.now(), status: answer.status });
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
    };
    const workers = Promise.all(Array.from({ length: 4 }, worker));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(supervisor.kill('orders', 0, 'SIGSTOP')).toBe(true);
    const frozenAt = performance.now();
    try {
      await new Promise((resolve) => setTimeout(resolve, 6000));
    } finally {
      supervisor.kill('orders', 0, 'SIGCONT');
    }
    placing = false;
    await workers;
    // Once the gateway saw it stuck (1 s), orders went on through the other instance.
    const taken = answers.filter((a) => a.status === 201 && a.at > frozenAt + 1500 && a.at < frozenAt + 6000);
    expect(taken.length, JSON.stringify(answers.map((a) => a.status))).toBeGreaterThanOrEqual(20);
    // The calls that waited for the frozen instance were answered once it was back (within the
    // gateway's 10 s): none of them failed.
    expect(answers.filter((a) => a.status !== 201)).toEqual([]);
    const stored = await shop.storedOrders();
    expect(stored).toHaveLength(answers.length);
    await expectEverythingAddsUp(client, stored, catalog);
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
