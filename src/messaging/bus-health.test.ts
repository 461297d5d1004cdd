import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';

describe('bus.healthCheck on the embedded broker', () => {
  it('passes while the bus is open, fails with BUS_CLOSED once it closes', async () => {
    const bus = await createBus({ url: `memory://health-${uuidv7()}`, service: 's', logger: silentLogger });
    const check = bus.healthCheck();
    await expect(check()).resolves.toBeUndefined();
    const closing = bus.close();
    await expect(check()).rejects.toMatchObject({ code: 'BUS_CLOSED' });
    await closing;
  });

  it('refuses a maxDownMs that is not an integer from 0 to 2^31-1, or a misspelt key', async () => {
    const bus = await createBus({ url: `memory://health-${uuidv7()}`, service: 's', logger: silentLogger });
    try {
      for (const maxDownMs of [-1, 1.5, 2 ** 31, Number.NaN, '5000', null]) {
        expect(() => bus.healthCheck({ maxDownMs } as never), String(maxDownMs)).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS' }),
        );
      }
      expect(() => bus.healthCheck({ maxDownMS: 5 } as never)).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
      expect(() => bus.healthCheck({ maxDownMs: 0 })).not.toThrow();
    } finally {
      await bus.close();
    }
  });
});
