import { describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import { AmqpTransport } from './amqp-transport.js';

const PASSWORD = 'Sup3rS3cret';

/** Every property of `error`, own and inherited from `Error` (message, stack, cause…), as text. */
function everything(error: unknown): string {
  const object = error as Record<string, unknown>;
  const names = new Set([...Object.getOwnPropertyNames(object), 'message', 'stack', 'cause']);
  return [...names]
    .map((name) => `${name}=${String(object[name])} ${JSON.stringify(object[name])}`)
    .join('\n');
}

const malformed: [string, string, RegExp][] = [
  ['a port over 65535', `amqp://guest:${PASSWORD}@127.0.0.1:99999/vh`, /not a valid URL/],
  ['a port that is not a number', `amqp://guest:${PASSWORD}@127.0.0.1:abc/vh`, /not a valid URL/],
  [
    'port 0 (amqplib would take 5672)',
    `amqp://guest:${PASSWORD}@127.0.0.1:0/vh`,
    /port of the bus URL .* must be from 1 to 65535/,
  ],
  ['a space in the host', `amqp://guest:${PASSWORD}@rabbit host/vh`, /not a valid URL/],
  ['an unclosed IPv6 address', `amqps://guest:${PASSWORD}@[::1/vh`, /not a valid URL/],
  ['no host', `amqp://guest:${PASSWORD}@/vh`, /not a valid URL/],
  ['a slash in the password', `amqp://guest:${PASSWORD}/x@127.0.0.1/vh`, /not a valid URL/],
  [
    'a bad percent-escape in the password',
    `amqp://guest:${PASSWORD}%zz@127.0.0.1/vh`,
    /password .*percent-escape/,
  ],
  [
    'a truncated percent-escape in the password',
    `amqp://guest:${PASSWORD}%4@127.0.0.1/vh`,
    /password .*percent-escape/,
  ],
  [
    'a percent-escape of no UTF-8 in the password',
    `amqp://guest:${PASSWORD}%C3@127.0.0.1/vh`,
    /password .*percent-escape/,
  ],
  [
    'a bad percent-escape in the user name',
    `amqp://gu%zzest:${PASSWORD}@127.0.0.1/vh`,
    /user name .*percent-escape/,
  ],
  [
    'a bad percent-escape in the vhost',
    `amqp://guest:${PASSWORD}@127.0.0.1/v%zzh`,
    /virtual host .*percent-escape/,
  ],
  // amqplib reads heartbeat, channelMax, frameMax, maxFrameSize and locale from the query: a value it
  // cannot use failed every connect (a TypeError, or the broker dropping the socket) and surfaced as
  // BROKER_UNAVAILABLE only after the whole connect timeout; others were misread or ignored.
  [
    'heartbeat that is not a number',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?heartbeat=abc`,
    /heartbeat .*must be seconds.*"abc"/,
  ],
  ['an empty heartbeat', `amqp://guest:${PASSWORD}@127.0.0.1/vh?heartbeat=`, /heartbeat .*must be/],
  ['a negative heartbeat', `amqp://guest:${PASSWORD}@127.0.0.1/vh?heartbeat=-1`, /heartbeat .*must be/],
  [
    'heartbeat with a unit (read as seconds)',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?heartbeat=30m`,
    /heartbeat .*must be/,
  ],
  ['a heartbeat over 65535', `amqp://guest:${PASSWORD}@127.0.0.1/vh?heartbeat=65536`, /heartbeat .*must be/],
  [
    'channelMax that is not a number',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?channelMax=x`,
    /channelMax .*must be/,
  ],
  [
    'frameMax under the protocol minimum',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?frameMax=4095`,
    /frameMax .*4096/,
  ],
  [
    'maxFrameSize that is not a number',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?maxFrameSize=x`,
    /maxFrameSize .*must be/,
  ],
  [
    "RabbitMQ's connection_timeout (amqplib ignores it)",
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?connection_timeout=5000`,
    /does not read \("connection_timeout"\).*heartbeat, channelMax, frameMax, maxFrameSize, locale.*connectTimeoutMs/,
  ],
  [
    'a misspelt heartbeat',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?hearbeat=5`,
    /does not read \("hearbeat"\)/,
  ],
  [
    'a parameter given twice',
    `amqp://guest:${PASSWORD}@127.0.0.1/vh?heartbeat=5&heartbeat=abc`,
    /heartbeat more than once/,
  ],
];

describe('AmqpTransport URL', () => {
  it.each(malformed)(
    'refuses %s with INVALID_OPTIONS that never shows the password',
    async (_, url, reason) => {
      let thrown: unknown;
      try {
        new AmqpTransport({ url, logger: silentLogger });
      } catch (error) {
        thrown = error;
      }
      const viaBus = await createBus({ url, service: 'svc', logger: silentLogger }).then(
        async (bus) => {
          await bus.close();
          return new Error('connected');
        },
        (e: unknown) => e,
      );
      for (const error of [thrown, viaBus]) {
        expect(isInvalidOptionsError(error), String(error)).toBe(true);
        expect((error as Error).message).toMatch(reason);
        expect((error as Error).message).toContain(':***@');
        expect(everything(error)).not.toContain(PASSWORD);
        expect((error as Error).cause).toBeUndefined();
      }
    },
  );

  it('takes well-formed URLs, percent-escapes and IPv6 hosts included, without connecting', () => {
    for (const url of [
      'amqp://guest:guest@127.0.0.1:5672/vh',
      'amqp://localhost',
      'AMQPS://user:p%40ss%2Fw%C3%B6rd@rabbit.example:5671/%2F',
      'amqp://guest:guest@[::1]:5672/',
      'amqp://guest:guest@host:65535/v?heartbeat=5',
      'amqp://guest:guest@host/v?heartbeat=0&channelMax=0&frameMax=0&maxFrameSize=0&locale=en_US',
      'amqp://guest:guest@host/v?heartbeat=65535&channelMax=65535&frameMax=4096&maxFrameSize=4294967295',
      'amqp://guest:guest@host/v?',
    ]) {
      expect(() => new AmqpTransport({ url, logger: silentLogger })).not.toThrow();
    }
  });

  it('never quotes the value of a secret-looking query parameter it refuses', () => {
    const url = `amqp://guest:guest@127.0.0.1/vh?api_key=${PASSWORD}`;
    let thrown: unknown;
    try {
      new AmqpTransport({ url, logger: silentLogger });
    } catch (error) {
      thrown = error;
    }
    expect(isInvalidOptionsError(thrown)).toBe(true);
    expect((thrown as Error).message).toContain('("api_key")');
    expect(everything(thrown)).not.toContain(PASSWORD);
  });
});
