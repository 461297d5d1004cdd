import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { FerryError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import { isBrokerConnectionError } from '../messaging/errors.js';
import { isBrokerTlsMismatchError } from './connection-refusal.js';
import { connectFailure as busConnectFailure } from './fixtures/connect-failure.js';
import { testVhosts } from './fixtures/test-vhosts.js';

const { vhost, defer } = testVhosts('ferry-tls');

/** How the first connect fails, and how long it took. */
function connectFailure(url: string, connectTimeoutMs: number): Promise<{ error: unknown; ms: number }> {
  return busConnectFailure({ url, service: 'timeout', logger: silentLogger, amqp: { connectTimeoutMs } });
}

/** A TCP server that accepts connections and never says a word, as a hung broker or a proxy would. */
async function silentServer(): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as net.AddressInfo).port;
}

/** A port nothing listens on: every attempt is refused at once. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// The deadline bounds the whole first connect: the last backoff and the last socket stop at it, where
// both used to run past it (about twice connectTimeoutMs). The slack is for timers and a loaded CI.
const SLACK_MS = 600;

describe('RabbitMQ first connect within connectTimeoutMs', () => {
  it.each([700, 1500])(
    'gives up on a refused port after %i ms with BROKER_UNAVAILABLE',
    async (timeoutMs) => {
      const { error, ms } = await connectFailure(
        `amqp://guest:guest@127.0.0.1:${await closedPort()}/`,
        timeoutMs,
      );
      expect((error as FerryError).code, String(error)).toBe('BROKER_UNAVAILABLE');
      expect(ms).toBeGreaterThanOrEqual(timeoutMs);
      expect(ms).toBeLessThan(timeoutMs + SLACK_MS);
    },
  );

  it.each([700, 1500])(
    'gives up on a server that never answers after %i ms with BROKER_UNAVAILABLE',
    async (timeoutMs) => {
      const { error, ms } = await connectFailure(
        `amqp://guest:guest@127.0.0.1:${await silentServer()}/`,
        timeoutMs,
      );
      expect((error as FerryError).code, String(error)).toBe('BROKER_UNAVAILABLE');
      expect(ms).toBeGreaterThanOrEqual(timeoutMs - 50);
      expect(ms).toBeLessThan(timeoutMs + SLACK_MS);
    },
  );

  it('fails at once with BROKER_TLS_MISMATCH for amqps:// to the plain AMQP port, instead of retrying', async () => {
    const v = await vhost();
    const url = v.url.replace(/^amqp:/, 'amqps:');
    const { error, ms } = await connectFailure(url, 20_000);
    expect(isBrokerTlsMismatchError(error), String(error)).toBe(true);
    expect(isBrokerConnectionError(error)).toBe(true);
    expect((error as Error).message).toMatch(/amqp:\/\/.*amqps:\/\//);
    expect((error as Error).message).not.toContain('guest:guest');
    expect(ms).toBeLessThan(5000);
  }, 30_000);
});
