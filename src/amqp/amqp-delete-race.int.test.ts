import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import { FaultProxy } from '../testing/fault-proxy.js';
import { createTestVhost, type TestVhost } from '../testing/rabbitmq.js';
import { runKillable } from '../testing/run-killable.js';
import { waitFor } from '../testing/wait.js';
import { holdFence, subscriptionTopology } from './topology.js';

// A deleteSubscription that runs while a subscribe is declaring its queues. The memory broker refuses
// it (SUBSCRIPTION_IN_USE: the subscription exists from the call on); on RabbitMQ it saw no consumer
// yet and deleted the queues under the subscribe, which then rejected with amqplib's bare 404 or
// resolved with its messages unroutable. Classic queues only: on RabbitMQ 3.10 the same race on
// quorum queues (the default) crashed the broker's dead-letter supervisor for every vhost.
// Must not be lost: the subscription asked for (it resolves, and what is published after it is
// delivered), on both transports alike.

let vhost: TestVhost;

beforeAll(async () => {
  vhost = await createTestVhost('ferry-delete-race');
});

afterAll(async () => {
  await vhost?.dispose();
});

const transports = [
  { name: 'memory', url: () => `memory://delete-race-${uuidv7()}` },
  { name: 'amqp', url: () => vhost.url },
];

/** Holds a subscription's fence on `connection`, as another process's subscribe does. */
function holdFenceOf(connection: amqp.ChannelModel, group: string, pattern: string) {
  // Only the subscription's queue names its fence.
  return holdFence(connection, subscriptionTopology({ group, pattern, concurrency: 1, retryDelays: [] }));
}

function busOn(url: string): Promise<Bus> {
  return createBus({ url, service: 'race', logger: silentLogger, amqp: { queueType: 'classic' } });
}

/**
 * Resolves once another connection holds the subscription's fence (`<queue>:fence`, exclusive: a
 * passive declare from here is refused with 405 RESOURCE_LOCKED): on RabbitMQ, how another process
 * sees that a close is under way.
 */
async function fenceHeld(url: string, group: string, pattern: string): Promise<void> {
  const name = `${subscriptionTopology({ group, pattern, concurrency: 1, retryDelays: [] }).queue}:fence`;
  const connection = await amqp.connect(url);
  connection.on('error', () => {});
  try {
    await waitFor(
      async () => {
        const channel = await connection.createChannel();
        channel.on('error', () => {});
        try {
          await channel.checkQueue(name);
          await channel.close();
          return false;
        } catch (error) {
          return (error as { code?: number }).code === 405;
        }
      },
      `the fence of ${group} held`,
      5_000,
    );
  } finally {
    await connection.close().catch(() => {});
  }
}

describe.each(transports)(
  'deleteSubscription while a subscribe declares (%s)',
  ({ name: transport, url: urlOf }) => {
    it('from another bus: refused or run before it, never under it; the subscription then receives', async () => {
      const url = urlOf();
      const subscriber = await busOn(url);
      const deleter = await busOn(url);
      try {
        for (let round = 0; round < 8; round++) {
          const group = `g${round}`;
          const pattern = `race.${round}`;
          // Its queues exist already (subscribed before), as for a service that restarts.
          await (await subscriber.subscribe(pattern, () => {}, { group })).close();
          const got: number[] = [];
          const subscribing = subscriber.subscribe(pattern, (m) => void got.push(m.data as number), {
            group,
          });
          const deleted = await deleter.deleteSubscription(pattern, { group }).then(
            (n) => n,
            (error: { code?: string }) => error.code,
          );
          const subscription = await subscribing;
          expect([0, 'SUBSCRIPTION_IN_USE'], `round ${round}`).toContain(deleted);
          await deleter.publish(pattern, round);
          await waitFor(() => got.length === 1, `round ${round}: the message after the race delivered`);
          expect(got).toEqual([round]);
          await subscription.close();
        }
      } finally {
        await subscriber.close();
        await deleter.close();
      }
    }, 60_000);

    it('from the same bus, a delete then a subscribe in the same tick: the delete runs first, the subscription receives', async () => {
      const bus = await busOn(urlOf());
      try {
        await (await bus.subscribe('turns.one', () => {}, { group: 'turns' })).close();
        await bus.publish('turns.one', {}); // waits in the closed subscription's queue, deleted with it
        const got: string[] = [];
        const deleting = bus.deleteSubscription('turns.one', { group: 'turns' });
        const subscribing = bus.subscribe('turns.one', (m) => void got.push(m.id), { group: 'turns' });
        expect(await deleting).toBe(1);
        const subscription = await subscribing;
        await bus.publish('turns.one', {});
        await waitFor(() => got.length === 1, 'the message after the delete delivered');
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(got).toHaveLength(1);
        await subscription.close();
      } finally {
        await bus.close();
      }
    }, 30_000);

    it.each([
      ['the same bus', true],
      ['another bus', false],
    ])(
      'from %s while the subscription closes: waits for the close, and counts the retry its handler asked for',
      async (_, sameBus) => {
        // Must not be lost unseen: the message a handler held when close began. The delete deleted the
        // queue under it (the consumer cancelled, none counted) and resolved 0; the handler's retry then
        // went nowhere.
        const url = urlOf();
        const owner = await busOn(url);
        const deleter = sameBus ? owner : await busOn(url);
        try {
          let started!: () => void;
          const running = new Promise<void>((resolve) => {
            started = resolve;
          });
          const sub = await owner.subscribe(
            'closing.one',
            async () => {
              started();
              await new Promise((resolve) => setTimeout(resolve, 500));
              throw new Error('fails after the close began');
            },
            { group: 'closing' },
          );
          await owner.publish('closing.one', {});
          await running;
          const closing = sub.close();
          // From another process, the close is under way once its consumer holds the fence: a delete
          // reaching the broker before that sees a consumer still consuming, and is refused
          // (SUBSCRIPTION_IN_USE), as the README says. Under CI load the other connection got there
          // first, now and then.
          if (!sameBus && transport === 'amqp') await fenceHeld(url, 'closing', 'closing.one');
          const deleted = await deleter.deleteSubscription('closing.one', { group: 'closing' });
          await closing;
          expect(deleted).toBe(1);
        } finally {
          await owner.close();
          if (!sameBus) await deleter.close();
        }
      },
      30_000,
    );

    it('called before the bus closes: close waits for it', async () => {
      const bus = await busOn(urlOf());
      await (await bus.subscribe('last.one', () => {}, { group: 'last' })).close();
      await bus.publish('last.one', {});
      const deleting = bus.deleteSubscription('last.one', { group: 'last' });
      await bus.close();
      expect(await deleting).toBe(1);
    }, 30_000);

    it('from the same bus: refused while its own subscribe declares', async () => {
      const bus = await busOn(urlOf());
      try {
        const got: string[] = [];
        const subscribing = bus.subscribe('same.one', (m) => void got.push(m.id), { group: 'same' });
        await expect(bus.deleteSubscription('same.one', { group: 'same' })).rejects.toMatchObject({
          code: 'SUBSCRIPTION_IN_USE',
        });
        const subscription = await subscribing;
        await bus.publish('same.one', {});
        await waitFor(() => got.length === 1, 'the message delivered');
        await subscription.close();
        expect(await bus.deleteSubscription('same.one', { group: 'same' })).toBe(0);
      } finally {
        await bus.close();
      }
    }, 30_000);
  },
);

describe('a subscription fence held by another connection', () => {
  it('keeps a delete out (SUBSCRIPTION_IN_USE after its wait) and is dropped with its connection', async () => {
    const bus = await busOn(vhost.url);
    const other = await amqp.connect(vhost.url);
    try {
      await (await bus.subscribe('fenced.one', () => {}, { group: 'f' })).close();
      // A subscribe of another process between its declare and its consume.
      const release = await holdFenceOf(other, 'f', 'fenced.one');
      expect(release).toBeDefined();
      await expect(bus.deleteSubscription('fenced.one', { group: 'f' })).rejects.toMatchObject({
        code: 'SUBSCRIPTION_IN_USE',
      });
      // That process dies holding it: the broker drops the fence, and the delete goes through.
      await other.close();
      expect(await bus.deleteSubscription('fenced.one', { group: 'f' })).toBe(0);
    } finally {
      await other.close().catch(() => {});
      await bus.close();
    }
  }, 30_000);
});

describe('a broker refusal at subscribe', () => {
  it('is a FerryError: a queue the user may not configure is BROKER_PERMISSION_DENIED, and the bus goes on', async () => {
    const own = await createTestVhost('ferry-subscribe-denied');
    try {
      // May configure the exchange, group g's dead letters and its "ok" queues only.
      await runKillable(
        'rabbitmqctl',
        [
          'set_permissions',
          '-p',
          own.name,
          'guest',
          '^(ferry\\.events|ferry:g:ok\\..*|ferry:g:dead-letter)$',
          '.*',
          '.*',
        ],
        60_000,
      );
      const bus = await busOn(own.url);
      try {
        await expect(bus.subscribe('denied.one', () => {}, { group: 'g' })).rejects.toMatchObject({
          name: 'BrokerPermissionDeniedError',
          code: 'BROKER_PERMISSION_DENIED',
        });
        // The bus goes on: a subscription it may make receives.
        const got: string[] = [];
        const ok = await bus.subscribe('ok.one', (m) => void got.push(m.id), { group: 'g' });
        await bus.publish('ok.one', {});
        await waitFor(() => got.length === 1, 'the permitted subscription receives');
        await ok.close();
      } finally {
        await bus.close();
      }
    } finally {
      await own.dispose();
    }
  }, 60_000);

  it('at deleteSubscription too: a fence the user may not declare is BROKER_PERMISSION_DENIED naming it', async () => {
    const own = await createTestVhost('ferry-delete-denied');
    try {
      const bus = await busOn(own.url);
      try {
        await (await bus.subscribe('fenced.two', () => {}, { group: 'g' })).close();
        // Every name but the fences'.
        await runKillable(
          'rabbitmqctl',
          ['set_permissions', '-p', own.name, 'guest', '^(?!.*:fence$).*', '.*', '.*'],
          60_000,
        );
        await expect(bus.deleteSubscription('fenced.two', { group: 'g' })).rejects.toMatchObject({
          code: 'BROKER_PERMISSION_DENIED',
          message: expect.stringContaining(
            'denied the user access to queue "ferry:g:fenced.two:fence" in virtual host',
          ),
        });
      } finally {
        await bus.close();
      }
    } finally {
      await own.dispose();
    }
  }, 60_000);

  it('a deleteSubscription cut by a lost connection is BROKER_UNAVAILABLE, and the next one goes through', async () => {
    const proxy = await FaultProxy.start({
      host: '127.0.0.1',
      port: Number(new URL(vhost.url).port || 5672),
    });
    const proxied = new URL(vhost.url);
    proxied.port = String(proxy.port);
    const bus = await createBus({
      url: proxied.toString(),
      service: 'cut',
      logger: silentLogger,
      amqp: { queueType: 'classic', reconnect: { initialDelayMs: 50, maxDelayMs: 200 } },
    });
    const other = await amqp.connect(vhost.url);
    try {
      await (await bus.subscribe('cut.one', () => {}, { group: 'cut' })).close();
      // Another process's subscribe holds the fence: the delete waits for it, and its connection goes.
      const release = await holdFenceOf(other, 'cut', 'cut.one');
      const deleting = bus.deleteSubscription('cut.one', { group: 'cut' });
      await new Promise((resolve) => setTimeout(resolve, 200));
      proxy.reset();
      await expect(deleting).rejects.toMatchObject({
        name: 'BrokerConnectionError',
        code: 'BROKER_UNAVAILABLE',
        message: expect.stringContaining('the connection to RabbitMQ was lost meanwhile'),
      });
      await release?.();
      await waitFor(
        () =>
          bus.deleteSubscription('cut.one', { group: 'cut' }).then(
            () => true,
            () => false,
          ),
        'a delete once reconnected',
        10_000,
      );
    } finally {
      await other.close().catch(() => {});
      await bus.close();
      await proxy.close();
    }
  }, 60_000);
});
