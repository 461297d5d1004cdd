import { describe, expect, it } from 'vitest';
import { Upstream } from './upstream.js';

describe('Upstream', () => {
  it('names its instances as the supervisor names their processes: orders#0, orders#1; one alone by its service', async () => {
    const two = new Upstream('orders', ['http://127.0.0.1:1', 'http://127.0.0.1:2']);
    const one = new Upstream('users', ['http://127.0.0.1:3']);
    try {
      expect(two.clients.map((c) => c.name)).toEqual(['orders#0', 'orders#1']);
      expect(one.clients.map((c) => c.name)).toEqual(['users']);
    } finally {
      await Promise.all([two.close(), one.close()]);
    }
  });
});
