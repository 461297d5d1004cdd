import { randomUUID } from 'node:crypto';
import { runKillable } from './run-killable.js';

/** Broker of the integration tests, from the environment; the default is the local RabbitMQ. */
export function rabbitmqBaseUrl(): string {
  return process.env.FERRY_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
}

function rabbitmqctl(...args: string[]): Promise<string> {
  return runKillable('rabbitmqctl', args, 60_000);
}

/** A RabbitMQ virtual host of one's own, so that one test's faults never hit another's connections. */
export interface TestVhost {
  readonly name: string;
  /** AMQP URL of the vhost, with the base URL's credentials. */
  readonly url: string;
  /** Closes every client connection of this vhost, as a network failure or broker restart would. */
  closeConnections(reason?: string): Promise<number>;
  /** Deletes the vhost and everything in it. */
  dispose(): Promise<void>;
}

/**
 * Creates a fresh vhost with full permissions for the base URL's user (`rabbitmqctl` must be on the
 * PATH and allowed to talk to the node, as it is for root on a local broker).
 */
export async function createTestVhost(prefix = 'ferry-test'): Promise<TestVhost> {
  const name = `${prefix}-${randomUUID().slice(0, 8)}`;
  const base = new URL(rabbitmqBaseUrl());
  const user = decodeURIComponent(base.username || 'guest');
  await rabbitmqctl('add_vhost', name);
  await rabbitmqctl('set_permissions', '-p', name, user, '.*', '.*', '.*');
  const url = new URL(base.toString());
  url.pathname = `/${encodeURIComponent(name)}`;
  return {
    name,
    url: url.toString(),
    async closeConnections(reason = 'fault injected by a test') {
      const out = await rabbitmqctl('close_all_connections', '--vhost', name, reason);
      const match = /Closed (\d+) connections/.exec(out);
      return match ? Number(match[1]) : 0;
    },
    async dispose() {
      await rabbitmqctl('delete_vhost', name).catch(() => {});
    },
  };
}
