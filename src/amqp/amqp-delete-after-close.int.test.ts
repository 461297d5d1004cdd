import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { silentLogger } from '../logging/logger.js';
import { createTestVhost, type TestVhost } from '../testing/rabbitmq.js';
import { waitFor } from '../testing/wait.js';
import type { QueueType } from './topology.js';

let vhost: TestVhost;

beforeAll(async () => {
  vhost = await createTestVhost('ferry-delete-after-close');
});

afterAll(async () => {
  await vhost?.dispose();
});

describe.each<QueueType>(['quorum', 'classic'])(
  'deleteSubscription right after sub.close() (%s queues)',
  (queueType) => {
    it('deletes the subscription even when close gave up on a running handler, every time', async () => {
      // Must not happen: SUBSCRIPTION_IN_USE from a subscription whose close has resolved. A quorum
      // queue counts a cancelled consumer until the messages it held are back, which only the close
      // of its channel confirms; close resolved before that when a handler used up its timeout.
      const closeTimeoutMs = 200;
      for (let round = 0; round < 6; round++) {
        // A bus of its own each time, as a service that retires a subscription as it starts would.
        const bus = await createBus({
          url: vhost.url,
          service: 'retire',
          logger: silentLogger,
          closeTimeoutMs,
          amqp: { queueType },
        });
        try {
          const group = `${queueType}-${round}`;
          let started = 0;
          const sub = await bus.subscribe(
            'job.stuck',
            async () => {
              started++;
              await new Promise(() => {}); // never settles: close gives up on it
            },
            { group, handlerTimeoutMs: 0 },
          );
          await bus.publish('job.stuck', { round });
          await waitFor(() => started === 1, 'the handler to start');
          const closing = Date.now();
          await sub.close();
          expect(Date.now() - closing).toBeLessThan(closeTimeoutMs + 200);
          // The message it held went back to the queue, and is discarded with it.
          expect(await bus.deleteSubscription('job.stuck', { group }), `round ${round}`).toBe(1);
        } finally {
          await bus.close();
        }
      }
    }, 60_000);
  },
);
