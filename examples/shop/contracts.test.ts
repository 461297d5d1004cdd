import { expect, it } from 'vitest';
import { shopContracts } from './contracts.js';

it('refuses ids the stores cannot hold in a stream id (control characters, lone surrogates)', () => {
  const reserve = shopContracts['inventory.reserve'];
  const items = (productId: string) => ({ orderId: 'o-1', items: [{ productId, quantity: 1 }] });
  expect(reserve.safeParse(items('p-1')).success).toBe(true);
  expect(reserve.safeParse(items('p-😀')).success).toBe(true);
  expect(reserve.safeParse(items('p\u0000')).success).toBe(false);
  expect(reserve.safeParse(items('p\uD800')).success).toBe(false);
  expect(reserve.safeParse(items('')).success).toBe(false);
});
