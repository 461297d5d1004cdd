/** The stock handlers' reads: inside the unit of work, and a product cache that never trusts a rolled-back read. */
import { describe, expect, it } from 'vitest';
import { stockHandlers } from './stock-handlers.js';
import { product, setup } from './test-kit.js';

describe('stock handlers', () => {
  it('read products inside the unit of work: two reserves in one unit both count', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 5 }]);
    const stock = stockHandlers();
    await s.outbox.unitOfWork(async (work) => {
      await stock.reserve(work, 'o1', [{ productId: 'p', quantity: 2 }]);
      // Decided on the stock the first reserve left (uncommitted yet), not on the stored one.
      await stock.reserve(work, 'o2', [{ productId: 'p', quantity: 2 }]);
    });
    expect(await product(s, 'p')).toMatchObject({ stock: 1, reserved: 4 });
  });

  it('read the whole product again when the state they cached was rolled back', async () => {
    const s = await setup();
    await s.inventory.seed([{ id: 'p', name: 'Tea', price: 450, stock: 5 }]);
    const stock = stockHandlers();
    await s.outbox
      .unitOfWork(async (work) => {
        await stock.reserve(work, 'o1', [{ productId: 'p', quantity: 2 }]);
        // Caches the product with o1's reservation, which is about to be rolled back.
        await stock.reserve(work, 'o2', [{ productId: 'p', quantity: 1 }]);
        throw new Error('rolled back');
      })
      .catch(() => {});
    await s.outbox.unitOfWork((work) => stock.reserve(work, 'o3', [{ productId: 'p', quantity: 5 }]));
    // All 5 were still there: a cache that believed o1 and o2 held 3 would have refused o3.
    expect(await product(s, 'p')).toMatchObject({ stock: 0, reserved: 5 });
  });
});
