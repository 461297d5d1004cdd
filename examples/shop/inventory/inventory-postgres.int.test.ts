import { dropSchemas, postgresTestUrl, testSchemaName } from 'ferry/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { opened, orderIdOf, product, settled, setup } from './test-kit.js';

const schemas: string[] = [];
afterAll(() => dropSchemas(schemas));

describe('inventory on PostgreSQL', () => {
  // Several at a time, units of work run in parallel (a connection each): the reserves lock the
  // product and take turns, so none loses a race (no reruns: maxRetries 0, and no handler fails);
  // the expected-version checks still stand between them and overselling. Each unit holds a
  // connection of the store's pool (10), so concurrent handlers must stay below the pool's size.
  it.each([
    ['4 at a time (the default)', { maxRetries: 0 }],
    ['one at a time', { concurrency: 1, maxRetries: 0 }],
    ['8 at a time', { concurrency: 8, maxRetries: 0 }],
  ])(
    'never oversells: 100 concurrent orders of 1 for 20 in stock reserve exactly 20, %s',
    async (_, tuning) => {
      const schema = testSchemaName('shop_inventory');
      schemas.push(schema);
      const s = await setup(`${postgresTestUrl()}?schema=${schema}`, tuning);
      await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 20 }]);
      const orders = Array.from({ length: 100 }, (_, i) => `o-${i}`);
      await Promise.all(
        orders.map((orderId) =>
          s.bus.publish('inventory.reserve', { orderId, items: [{ productId: 'p', quantity: 1 }] }),
        ),
      );
      await settled(
        s,
        () => s.of('inventory.reserved').length + s.of('inventory.unavailable').length === 100,
        () =>
          `${s.of('inventory.reserved').length} reserved, ${s.of('inventory.unavailable').length} unavailable`,
        60_000,
      );
      const reserved = s.of('inventory.reserved').map(orderIdOf);
      expect(new Set(reserved).size).toBe(20);
      expect(s.of('inventory.unavailable')).toHaveLength(80);
      expect(await product(s, 'p')).toMatchObject({ stock: 0, reserved: 20 });
      await Promise.all(reserved.slice(0, 15).map((orderId) => s.send('inventory.commit', { orderId })));
      await Promise.all(reserved.slice(15).map((orderId) => s.send('inventory.release', { orderId })));
      expect(await product(s, 'p')).toMatchObject({ stock: 5, reserved: 0 });
      expect(s.failures()).toBe(0);
      await s.close();
      opened.splice(opened.indexOf(s), 1);
    },
  );
});
