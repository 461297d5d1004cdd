import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { integerOption } from '../errors/integer-option.js';
import { knownOptions, refuseUnknownKeys } from '../errors/options-object.js';
import type { Logger } from '../logging/logger.js';
import type { AmqpUrlOptions } from '../messaging/amqp-url-options.js';
import { isWellFormed } from '../messaging/well-formed.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';

/**
 * Options of the RabbitMQ transport: the ones a bus URL passes on ({@link AmqpUrlOptions}, written
 * in the messaging core so that the root entry's types never reach amqplib) plus the URL and logger.
 */
export interface AmqpTransportOptions extends AmqpUrlOptions {
  /** `amqp://user:password@host:5672/vhost`; keep credentials in the environment, not in code. */
  readonly url: string;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

export type ResolvedAmqpOptions = Required<Omit<AmqpTransportOptions, 'url' | 'logger' | 'reconnect'>> & {
  readonly reconnect: { readonly initialDelayMs: number; readonly maxDelayMs: number };
};

export const DEFAULT_AMQP_TRANSPORT_OPTIONS: ResolvedAmqpOptions = Object.freeze({
  exchange: 'ferry.events',
  queueType: 'quorum',
  publishWindow: 1000,
  maxBufferedPublishes: 100_000,
  maxMessageBytes: 134_217_728,
  confirmTimeoutMs: 30_000,
  connectTimeoutMs: 30_000,
  reconnect: Object.freeze({ initialDelayMs: 100, maxDelayMs: 5000 }),
  maxRedeliveries: 5,
  heartbeatSeconds: 10,
  connectionName: 'ferry',
});

/** The keys of {@link AmqpUrlOptions}: what `createBus`'s `amqp` takes. */
export const AMQP_URL_OPTION_NAMES = [
  'exchange',
  'queueType',
  'publishWindow',
  'maxBufferedPublishes',
  'maxMessageBytes',
  'confirmTimeoutMs',
  'connectTimeoutMs',
  'reconnect',
  'maxRedeliveries',
  'heartbeatSeconds',
  'connectionName',
] as const satisfies readonly (keyof AmqpUrlOptions)[];

/**
 * The options with defaults filled in (an explicit `undefined` takes the default), or
 * `INVALID_OPTIONS` naming the first bad one, before anything connects. A key the transport does not
 * read (a misspelt `queuetype`, `reconnect: { initialDelay }`) is refused, not dropped for its default.
 */
export function resolveAmqpOptions(options: AmqpTransportOptions): ResolvedAmqpOptions {
  refuseUnknownKeys('the amqp transport', options, [...AMQP_URL_OPTION_NAMES, 'url', 'logger']);
  const reconnect = knownOptions('amqp reconnect', options.reconnect, ['initialDelayMs', 'maxDelayMs']);
  const d = DEFAULT_AMQP_TRANSPORT_OPTIONS;
  // Only `undefined` takes the default, as for every other option: null was taken as quorum.
  const queueType = options.queueType === undefined ? d.queueType : options.queueType;
  if (queueType !== 'quorum' && queueType !== 'classic') {
    throw new InvalidOptionsError(`queueType must be 'quorum' or 'classic', not ${describeValue(queueType)}`);
  }
  const exchange = options.exchange === undefined ? d.exchange : options.exchange;
  if (
    typeof exchange !== 'string' ||
    exchange === '' ||
    Buffer.byteLength(exchange) > 255 ||
    !isWellFormed(exchange)
  ) {
    throw new InvalidOptionsError(
      'exchange must be a non-empty string of at most 255 bytes of UTF-8, without lone surrogates',
    );
  }
  // RabbitMQ refuses to declare one (ACCESS_REFUSED, which read as missing permissions); of its
  // own, amq.topic is the one topic exchange.
  if (exchange.startsWith('amq.') && exchange !== 'amq.topic') {
    throw new InvalidOptionsError(
      `exchange ${describeValue(exchange)} is in the amq. namespace RabbitMQ reserves for its own exchanges: choose another name (or amq.topic)`,
    );
  }
  const connectionName = options.connectionName === undefined ? d.connectionName : options.connectionName;
  if (typeof connectionName !== 'string') throw new InvalidOptionsError('connectionName must be a string');
  const initialDelayMs = integerOption(
    'reconnect.initialDelayMs',
    reconnect.initialDelayMs,
    d.reconnect.initialDelayMs,
    1,
    MAX_TIMER_MS,
  );
  const maxDelayMs = integerOption(
    'reconnect.maxDelayMs',
    reconnect.maxDelayMs,
    d.reconnect.maxDelayMs,
    1,
    MAX_TIMER_MS,
  );
  if (maxDelayMs < initialDelayMs) {
    throw new InvalidOptionsError('reconnect.maxDelayMs must be at least reconnect.initialDelayMs');
  }
  return {
    exchange,
    queueType,
    publishWindow: integerOption('publishWindow', options.publishWindow, d.publishWindow, 1),
    maxBufferedPublishes: integerOption(
      'maxBufferedPublishes',
      options.maxBufferedPublishes,
      d.maxBufferedPublishes,
      1,
    ),
    maxMessageBytes: integerOption('maxMessageBytes', options.maxMessageBytes, d.maxMessageBytes, 1),
    confirmTimeoutMs: integerOption(
      'confirmTimeoutMs',
      options.confirmTimeoutMs,
      d.confirmTimeoutMs,
      1,
      MAX_TIMER_MS,
    ),
    connectTimeoutMs: integerOption(
      'connectTimeoutMs',
      options.connectTimeoutMs,
      d.connectTimeoutMs,
      1,
      MAX_TIMER_MS,
    ),
    reconnect: { initialDelayMs, maxDelayMs },
    maxRedeliveries: integerOption('maxRedeliveries', options.maxRedeliveries, d.maxRedeliveries, 0),
    // AMQP carries the heartbeat as an unsigned short.
    heartbeatSeconds: integerOption(
      'heartbeatSeconds',
      options.heartbeatSeconds,
      d.heartbeatSeconds,
      0,
      65_535,
    ),
    connectionName,
  };
}
