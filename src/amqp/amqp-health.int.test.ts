import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { silentLogger } from '../logging/logger.js';
import { createTestVhost, type TestVhost } from '../testing/rabbitmq.js';
import { runKillable } from '../testing/run-killable.js';
import { waitFor } from '../testing/wait.js';

// A service cut off from RabbitMQ (its connection closed, and the broker refusing it back) kept
// answering ready: nothing in its readiness looked at the bus. Must hold: the check fails within
// its grace once the connection is gone, says why without the password, and passes again once the
// bus has reconnected.

let vhost: TestVhost;

beforeAll(async () => {
  vhost = await createTestVhost('ferry-bus-health');
});

afterAll(async () => {
  await vhost?.dispose();
});

const rabbitmqctl = (...args: string[]) => runKillable('rabbitmqctl', args, 60_000);

describe('bus.healthCheck on RabbitMQ', () => {
  it('fails with BROKER_UNAVAILABLE once the broker connection has been down longer than maxDownMs, then passes again', async () => {
    const bus = await createBus({
      url: vhost.url,
      service: 'health',
      logger: silentLogger,
      amqp: { reconnect: { initialDelayMs: 100, maxDelayMs: 500 } },
    });
    const check = bus.healthCheck({ maxDownMs: 1_000 });
    type Failure = { code?: string; message?: string };
    const outcome = (): Promise<'ok' | Failure> =>
      check().then(
        () => 'ok' as const,
        (error: Failure) => error,
      );
    try {
      expect(await outcome()).toBe('ok');
      await rabbitmqctl('clear_permissions', '-p', vhost.name, 'guest');
      const cutAt = Date.now();
      await vhost.closeConnections();
      // Within its grace it still passes: a dropped connection that comes back at once is no outage.
      expect(await outcome()).toBe('ok');
      let failed: Failure | undefined;
      await waitFor(
        async () => {
          const now = await outcome();
          if (now !== 'ok') failed = now;
          return failed !== undefined;
        },
        'the check to fail',
        15_000,
      );
      expect(Date.now() - cutAt).toBeGreaterThanOrEqual(1_000);
      expect(failed).toMatchObject({
        code: 'BROKER_UNAVAILABLE',
        message: expect.stringMatching(/^not connected to the broker for \d+ ms: .*(denied|refused)/i),
      });
      expect(failed?.message).not.toContain('guest:guest@');
      await rabbitmqctl('set_permissions', '-p', vhost.name, 'guest', '.*', '.*', '.*');
      await waitFor(async () => (await outcome()) === 'ok', 'the check to pass again', 20_000);
    } finally {
      await rabbitmqctl('set_permissions', '-p', vhost.name, 'guest', '.*', '.*', '.*');
      await bus.close();
    }
  }, 60_000);
});
