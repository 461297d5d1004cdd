import { randomUUID } from 'node:crypto';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
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
 * What a vhost name's prefix may be: ASCII letters, digits, `.`, `_` and `-`, 1 to 200 of them, the
 * first a letter or digit (`rabbitmqctl` read `-x…` as an option). AMQP
 * carries a vhost name in at most 255 bytes (a longer one was created, and no client could open
 * it), and `rabbitmqctl` wrappers pass their arguments through a shell.
 */
const VHOST_PREFIX = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/**
 * Creates a fresh vhost named `<prefix>-<8 random hex digits>` with full permissions for the base
 * URL's user (`rabbitmqctl` must be on the PATH and allowed to talk to the node, as it is for root
 * on a local broker). @throws InvalidOptionsError for a prefix {@link VHOST_PREFIX} refuses
 */
export async function createTestVhost(prefix = 'ferry-test'): Promise<TestVhost> {
  if (typeof prefix !== 'string' || !VHOST_PREFIX.test(prefix)) {
    throw new InvalidOptionsError(
      `createTestVhost prefix must be 1 to 200 ASCII letters, digits, ".", "_" or "-", starting with a letter or digit, not ${describeValue(typeof prefix === 'string' && prefix.length > 40 ? `${prefix.slice(0, 40)}…` : prefix)}`,
    );
  }
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
