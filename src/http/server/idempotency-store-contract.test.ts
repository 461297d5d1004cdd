import { testIdempotencyStore } from '../../testing/idempotency-store-contract.js';
import { MemoryIdempotencyStore } from './memory-idempotency-store.js';

testIdempotencyStore(
  'memory',
  {
    create: async (options = {}) => ({
      store: new MemoryIdempotencyStore(options),
    }),
  },
  { durable: false },
);
