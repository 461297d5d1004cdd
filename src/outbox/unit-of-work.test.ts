import { expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from './outbox.js';

it('schedule without options says it needs delayMs or at (INVALID_OPTIONS), not a TypeError', async () => {
  const bus = await createBus({ url: `memory://uow-${uuidv7()}`, service: 'orders', logger: silentLogger });
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  const outbox = await createOutbox({ store, bus, logger: silentLogger, relay: false });
  try {
    for (const options of [undefined, null]) {
      await expect(
        outbox.unitOfWork((work) => work.schedule('order.reminder', {}, options as never)),
      ).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: 'schedule needs exactly one of delayMs and at',
      });
    }
  } finally {
    await outbox.close();
    await bus.close();
    await store.close();
  }
});
