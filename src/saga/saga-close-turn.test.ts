import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import { waitFor } from '../testing/wait.js';
import { defineSaga } from './define-saga.js';
import { startSaga } from './start-saga.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a saga message waiting behind a turn its close gave up on, on the memory store', () => {
  it.each(['bus', 'runner'] as const)(
    'is handed back, not handled by the closed runner, when the %s closes (another type, another subscription)',
    async (closing) => {
      // Must not happen: the closed runner committing a transition for the waiting message (the held
      // turn's unit of work, rolled back at the give-up, freed the turn before the waiting message's
      // subscription had given up). Must not be lost: that message, handled by the next runner.
      const contracts = {
        'job.start': z.object({ id: z.string() }),
        'job.hang': z.object({ id: z.string() }),
        'job.next': z.object({ id: z.string() }),
      };
      let hung = false;
      let closed = false;
      let nextRuns = 0;
      const release: (() => void)[] = [];
      const saga = defineSaga({
        name: 'job',
        contracts,
        startedBy: ['job.start'],
        initial: () => ({ status: 'a', data: {} as { next?: true } }),
        id: { 'job.start': (m) => m.data.id, 'job.hang': (m) => m.data.id, 'job.next': (m) => m.data.id },
        states: {
          a: {
            'job.hang': async () => {
              hung = true;
              // Handed back too: the next runner's run of it does not hang.
              if (!closed) await new Promise<void>((resolve) => release.push(resolve));
            },
            'job.next': (s) => {
              nextRuns++;
              s.set({ next: true });
            },
          },
        },
      });
      const store = await createEventStore({ url: `memory://saga-turn-${uuidv7()}`, logger: silentLogger });
      const url = `memory://saga-turn-${uuidv7()}`;
      const bus = await createBus({
        url,
        service: 'jobs',
        contracts,
        closeTimeoutMs: 300,
        logger: silentLogger,
      });
      const outbox = await createOutbox({ store, bus, logger: silentLogger });
      const runner = await startSaga(saga, {
        outbox,
        logger: silentLogger,
        subscribe: { handlerTimeoutMs: 0 },
      });
      const next = await createBus({ url, service: 'jobs', contracts, logger: silentLogger });
      const nextOutbox = await createOutbox({ store, bus: next, logger: silentLogger });
      try {
        await bus.publish('job.start', { id: 'i1' });
        await waitFor(async () => (await runner.get('i1')) !== undefined, 'the instance');
        await bus.publish('job.hang', { id: 'i1' });
        await waitFor(() => hung, 'the turn held');
        await bus.publish('job.next', { id: 'i1' });
        await sleep(50);
        await (closing === 'bus' ? bus.close() : runner.close());
        closed = true;
        for (const open of release) open();
        expect(nextRuns).toBe(0);
        expect((await runner.get('i1'))?.data).toEqual({});
        const nextRunner = await startSaga(saga, { outbox: nextOutbox, logger: silentLogger });
        try {
          await waitFor(async () => (await nextRunner.get('i1'))?.data.next === true, 'the next runner');
          expect(nextRuns).toBe(1);
        } finally {
          await nextRunner.close();
        }
      } finally {
        for (const open of release) open();
        await runner.close();
        await nextOutbox.close();
        await next.close();
        await outbox.close();
        await bus.close();
        await store.close();
      }
    },
  );
});
