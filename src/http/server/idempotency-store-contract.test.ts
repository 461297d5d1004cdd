import { testIdempotencyStore } from '../../testing/idempotency-store-contract.js';
import { MemoryIdempotencyStore, type MemoryIdempotencyStoreOptions } from './memory-idempotency-store.js';

testIdempotencyStore(
  'memory',
  {
    create: async (options = {}) => ({
      store: new MemoryIdempotencyStore(options as MemoryIdempotencyStoreOptions),
    }),
  },
  { durable: false },
);
