import { expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isConcurrencyError } from '../eventstore/errors.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { testOutbox } from '../testing/outbox-contract.js';
import { createOutbox } from './outbox.js';

testOutbox('memory', { createStore: async () => new EventStore(new MemoryEventStoreBackend()) });

it('takes maxRetries per unit of work (and per handler run), in place of the outbox-wide one', async () => {
  const bus = await createBus({
    url: `memory://outbox-${uuidv7()}`,
    service: 'orders',
    logger: silentLogger,
  });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const outbox = await createOutbox({ store, bus, logger: silentLogger, maxRetries: 3 });
  try {
    await store.append('order-1', [{ type: 'OrderPlaced', data: {} }]);
    let runs = 0;
    // Always loses the race: the stream exists.
    const late = async (work: { append: (typeof store)['append'] }) => {
      runs++;
      await work.append('order-1', [{ type: 'Late', data: {} }], { expectedVersion: 'no_stream' });
    };
    const runsOf = async (run: () => Promise<unknown>) => {
      runs = 0;
      const error = await run().catch((e: unknown) => e);
      expect(isConcurrencyError(error)).toBe(true);
      return runs;
    };
    expect(await runsOf(() => outbox.unitOfWork(late))).toBe(4);
    expect(await runsOf(() => outbox.unitOfWork(late, { maxRetries: 0 }))).toBe(1);
    expect(await runsOf(() => outbox.unitOfWork(late, { maxRetries: 9 }))).toBe(10);
    expect(await runsOf(() => outbox.runHandler('c', uuidv7(), late, { maxRetries: 6 }))).toBe(7);
    for (const maxRetries of [-1, 1.5, 10_001]) {
      await expect(outbox.unitOfWork(late, { maxRetries })).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
    }
  } finally {
    await outbox.close();
    await store.close();
    await bus.close();
  }
});
