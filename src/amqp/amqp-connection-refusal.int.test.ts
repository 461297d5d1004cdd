import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import type { FerryError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import { isBrokerConnectionError } from '../messaging/errors.js';
import { createTestVhost, rabbitmqBaseUrl, type TestVhost } from '../testing/rabbitmq.js';
import {
  isBrokerAccessRefusedError,
  isBrokerPermissionDeniedError,
  isBrokerVhostNotFoundError,
} from './connection-refusal.js';
import { connectFailure as busConnectFailure } from './fixtures/connect-failure.js';

const run = promisify(execFile);
const rabbitmqctl = (...args: string[]) => run('rabbitmqctl', args, { timeout: 60_000 });

const suffix = randomUUID().slice(0, 8);
const user = `ferry-refusal-${suffix}`;
const password = `secret-${randomUUID()}`;
let vhost: TestVhost;

beforeAll(async () => {
  vhost = await createTestVhost('ferry-refusal');
  await rabbitmqctl('add_user', user, password);
});

afterAll(async () => {
  await rabbitmqctl('delete_user', user).catch(() => {});
  await vhost?.dispose();
});

function urlFor(name: string, pass: string, vhostName: string): string {
  const url = new URL(rabbitmqBaseUrl());
  url.username = encodeURIComponent(name);
  url.password = encodeURIComponent(pass);
  url.pathname = `/${encodeURIComponent(vhostName)}`;
  return url.toString();
}

/** How createBus fails, and how long it took. */
function connectFailure(url: string): Promise<{ error: unknown; ms: number }> {
  return busConnectFailure({ url, service: 'refused', logger: silentLogger });
}

describe('RabbitMQ connection refusals fail fast', () => {
  it('a wrong password rejects at once with BROKER_ACCESS_REFUSED, the password masked', async () => {
    const wrong = `wrong-${randomUUID()}`;
    const { error, ms } = await connectFailure(urlFor(user, wrong, vhost.name));
    expect(isBrokerAccessRefusedError(error)).toBe(true);
    // Still a failure to connect: the general guard covers every refusal too.
    expect(isBrokerConnectionError(error)).toBe(true);
    expect((error as FerryError).code).toBe('BROKER_ACCESS_REFUSED');
    expect(ms).toBeLessThan(5000);
    const message = (error as Error).message;
    expect(message).not.toContain(wrong);
    expect(message).toContain('***');
    expect(message).toMatch(/user name and password/);
  }, 60_000);

  it('a vhost that does not exist rejects at once with BROKER_VHOST_NOT_FOUND, naming it', async () => {
    const missing = `ferry-missing-${suffix}`;
    const { error, ms } = await connectFailure(urlFor(user, password, missing));
    expect(isBrokerVhostNotFoundError(error)).toBe(true);
    expect(isBrokerConnectionError(error)).toBe(true);
    expect(ms).toBeLessThan(5000);
    const message = (error as Error).message;
    expect(message).toContain(`"${missing}"`);
    expect(message).toMatch(/add_vhost/);
    expect(message).not.toContain(password);
  }, 60_000);

  it('a user without permissions on the vhost rejects at once with BROKER_PERMISSION_DENIED', async () => {
    const { error, ms } = await connectFailure(urlFor(user, password, vhost.name));
    expect(isBrokerPermissionDeniedError(error)).toBe(true);
    expect(isBrokerConnectionError(error)).toBe(true);
    expect(ms).toBeLessThan(5000);
    const message = (error as Error).message;
    expect(message).toContain(`"${vhost.name}"`);
    expect(message).toMatch(/set_permissions/);
    expect(message).not.toContain(password);
  }, 60_000);

  it("a user who may open the vhost but not declare Ferry's exchange rejects at once with BROKER_PERMISSION_DENIED", async () => {
    await rabbitmqctl('set_permissions', '-p', vhost.name, user, '^$', '^$', '^$');
    try {
      const { error, ms } = await connectFailure(urlFor(user, password, vhost.name));
      expect(isBrokerPermissionDeniedError(error)).toBe(true);
      expect(ms).toBeLessThan(5000);
      expect((error as Error).message).toMatch(/ferry\.events/);
    } finally {
      await rabbitmqctl('clear_permissions', '-p', vhost.name, user).catch(() => {});
    }
  }, 60_000);

  it('a vhost connection limit is waited out like an outage, not reported as a permission problem', async () => {
    await rabbitmqctl('set_permissions', '-p', vhost.name, user, '.*', '.*', '.*');
    await rabbitmqctl('set_vhost_limits', '-p', vhost.name, '{"max-connections": 0}');
    try {
      const started = Date.now();
      const error = await createBus({
        url: urlFor(user, password, vhost.name),
        service: 'limited',
        logger: silentLogger,
        amqp: { connectTimeoutMs: 1500, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } },
      }).then(
        async (bus) => {
          await bus.close();
          return new Error('connected');
        },
        (e: unknown) => e,
      );
      expect(isBrokerConnectionError(error)).toBe(true);
      expect((error as FerryError).code).toBe('BROKER_UNAVAILABLE');
      expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    } finally {
      await rabbitmqctl('clear_vhost_limits', '-p', vhost.name).catch(() => {});
      await rabbitmqctl('clear_permissions', '-p', vhost.name, user).catch(() => {});
    }
  }, 60_000);

  it('the right credentials still connect', async () => {
    await rabbitmqctl('set_permissions', '-p', vhost.name, user, '.*', '.*', '.*');
    try {
      const bus = await createBus({
        url: urlFor(user, password, vhost.name),
        service: 'ok',
        logger: silentLogger,
      });
      await bus.close();
    } finally {
      await rabbitmqctl('clear_permissions', '-p', vhost.name, user).catch(() => {});
    }
  }, 60_000);
});
