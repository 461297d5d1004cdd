import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import { AmqpTransport } from './amqp-transport.js';
import {
  type AmqpTransportOptions,
  DEFAULT_AMQP_TRANSPORT_OPTIONS,
  resolveAmqpOptions,
} from './transport-options.js';

const URL = 'amqp://guest:guest@127.0.0.1:1/nowhere';

const refused: [string, Omit<AmqpTransportOptions, 'url'>][] = [
  ['queueType', { queueType: 'stream' as never }],
  ['queueType', { queueType: 'Quorum' as never }],
  ['queueType', { queueType: '' as never }],
  ['heartbeatSeconds', { heartbeatSeconds: Number.NaN }],
  ['heartbeatSeconds', { heartbeatSeconds: -1 }],
  ['heartbeatSeconds', { heartbeatSeconds: 1.5 }],
  ['heartbeatSeconds', { heartbeatSeconds: 65_536 }],
  ['heartbeatSeconds', { heartbeatSeconds: '10' as never }],
  ['publishWindow', { publishWindow: 0 }],
  ['publishWindow', { publishWindow: 2.5 }],
  ['maxBufferedPublishes', { maxBufferedPublishes: Number.NaN }],
  ['maxMessageBytes', { maxMessageBytes: 0 }],
  ['confirmTimeoutMs', { confirmTimeoutMs: Number.POSITIVE_INFINITY }],
  ['connectTimeoutMs', { connectTimeoutMs: -5 }],
  ['connectTimeoutMs', { connectTimeoutMs: 2 ** 31 }],
  ['reconnect.initialDelayMs', { reconnect: { initialDelayMs: 0 } }],
  ['reconnect.maxDelayMs', { reconnect: { maxDelayMs: Number.NaN } }],
  ['reconnect.maxDelayMs', { reconnect: { initialDelayMs: 500, maxDelayMs: 100 } }],
  ['maxRedeliveries', { maxRedeliveries: -1 }],
  ['exchange', { exchange: '' }],
  ['connectionName', { connectionName: 5 as never }],
  // null took the default, where every number option refused it.
  ['queueType', { queueType: null as never }],
  ['exchange', { exchange: null as never }],
  ['connectionName', { connectionName: null as never }],
  // RabbitMQ refused to declare it with ACCESS_REFUSED, reported as missing permissions.
  ['exchange', { exchange: 'amq.orders' }],
  ['exchange', { exchange: 'amq.direct' }],
];

describe('AmqpTransport options', () => {
  it.each(refused)('refuses a bad %s with INVALID_OPTIONS before connecting (%o)', (name, options) => {
    let error: unknown;
    try {
      new AmqpTransport({ url: URL, logger: silentLogger, ...options });
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error), String(error)).toBe(true);
    expect((error as Error).message.startsWith(name)).toBe(true);
  });

  it('refuses them through createBus too, instead of connecting', async () => {
    const error = await createBus({
      url: URL,
      service: 's',
      logger: silentLogger,
      amqp: { queueType: 'stream' as never, connectTimeoutMs: 60_000 },
    }).catch((e: unknown) => e);
    expect(isInvalidOptionsError(error), String(error)).toBe(true);
  });

  it('takes the default for an explicit undefined, and accepts the edges', () => {
    const undefinedEverywhere = Object.fromEntries(
      Object.keys(DEFAULT_AMQP_TRANSPORT_OPTIONS).map((k) => [k, undefined]),
    ) as unknown as Omit<AmqpTransportOptions, 'url'>;
    expect(
      resolveAmqpOptions({
        url: URL,
        ...undefinedEverywhere,
        reconnect: { initialDelayMs: undefined, maxDelayMs: undefined } as never,
      }),
    ).toEqual(DEFAULT_AMQP_TRANSPORT_OPTIONS);
    expect(
      resolveAmqpOptions({ url: URL, heartbeatSeconds: 0, maxRedeliveries: 0, queueType: 'classic' }),
    ).toMatchObject({ heartbeatSeconds: 0, maxRedeliveries: 0, queueType: 'classic' });
  });

  it.each([Number.NaN, -1, Number.POSITIVE_INFINITY, '10'])(
    'close(%s) rejects with INVALID_OPTIONS',
    async (timeoutMs) => {
      const transport = new AmqpTransport({ url: URL, logger: silentLogger });
      const error = await transport.close(timeoutMs as never).catch((e: unknown) => e);
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(/^timeoutMs /);
    },
  );
});
