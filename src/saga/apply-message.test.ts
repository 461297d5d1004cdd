import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import type { Message } from '../messaging/envelope.js';
import { applySagaMessage, type SagaWork } from './apply-message.js';
import { defineSaga } from './define-saga.js';

const contracts = {
  'order.placed': z.object({ orderId: z.string() }),
  'stock.reserve': z.object({ orderId: z.string() }),
};

const saga = defineSaga({
  name: 'ordering',
  contracts,
  startedBy: ['order.placed'],
  initial: () => ({ status: 'open' as const, data: {} }),
  started: (s) => void s.send('stock.reserve', { orderId: s.id }),
  id: { 'order.placed': (m) => m.data.orderId },
  states: { open: {} },
});

const placed = {
  id: 'm-1',
  type: 'order.placed',
  data: { orderId: 'o-1' },
  time: new Date().toISOString(),
  attempt: 1,
} as unknown as Message;

/** A unit of work whose publish refuses with INVALID_OPTIONS; `ended` as given. */
function refusingWork(ended: boolean): SagaWork {
  return {
    ended,
    tx: { loadSaga: async () => undefined, saveSaga: async () => {} },
    publish: async () => {
      throw new InvalidOptionsError(ended ? 'this unit of work has ended' : 'the key is not one');
    },
    schedule: async () => 'id',
    cancel: async () => [],
  } as unknown as SagaWork;
}

describe('applySagaMessage, when the unit of work refuses what the saga sends', () => {
  it('takes a refusal of the message itself for a definition error (dead-lettered at once)', async () => {
    await expect(
      applySagaMessage(saga as never, refusingWork(false), placed, Date.now, async () => undefined),
    ).rejects.toMatchObject({
      code: 'SAGA_DEFINITION',
      message: expect.stringMatching(
        /^saga "ordering": instance "o-1": message "stock\.reserve" could not be sent: the key/,
      ),
      cause: { code: 'INVALID_OPTIONS' },
    });
  });

  it('leaves the refusal of a unit of work that had ended (its attempt timed out) as it is: it says nothing of the message', async () => {
    await expect(
      applySagaMessage(saga as never, refusingWork(true), placed, Date.now, async () => undefined),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: 'this unit of work has ended' });
  });
});
