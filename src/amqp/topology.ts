import { createHash } from 'node:crypto';
import type { Channel, ChannelModel } from 'amqplib';
import { InvalidTopicError, SubscriptionInUseError } from '../messaging/errors.js';
import { assertGroup, assertPattern } from '../messaging/topic.js';
import type { SubscriptionSpec } from '../messaging/transport.js';

/** Queue type of subscription and dead-letter queues. */
export type QueueType = 'classic' | 'quorum';

/** Names of the broker objects behind one subscription. */
export interface SubscriptionTopology {
  /** The subscription's durable queue, bound to the exchange with the pattern. */
  readonly queue: string;
  /** Delay queues by delay in ms: messages wait out their TTL, then dead-letter back into `queue`. */
  readonly retryQueues: ReadonlyMap<number, string>;
  /** The group's dead-letter queue, shared by its subscriptions. */
  readonly deadLetterQueue: string;
}

/** RabbitMQ's limit on queue names (a short string: at most 255 bytes of UTF-8). */
export const MAX_QUEUE_NAME_BYTES = 255;
/** Bytes kept free after a subscription queue's name for its delay queues' `:retry-<ms>ms` suffix. */
const RETRY_SUFFIX_RESERVE = ':retry-'.length + 16 + 'ms'.length;
const MAX_SUBSCRIPTION_QUEUE_BYTES = MAX_QUEUE_NAME_BYTES - RETRY_SUFFIX_RESERVE;
/** The last segment of the group's dead-letter queue name; no encoded pattern equals it. */
const DEAD_LETTER_SEGMENT = 'dead-letter';

/**
 * Names are derived from group and pattern, so every instance of a service finds the same queues:
 * `ferry:<group>:<pattern>`, `ferry:<group>:<pattern>:retry-<ms>ms`, `ferry:<group>:dead-letter`.
 * Group names cannot contain `:`; the pattern is encoded ({@link encodePatternForQueue}) so that it
 * contains no `:` either and never equals `dead-letter`: a subscription queue has exactly two `:`,
 * a delay queue three, and the dead-letter segment is reserved, so no two names can be equal.
 * Throws `INVALID_TOPIC` (before anything is declared) when the group or pattern is invalid.
 */
export function subscriptionTopology(spec: SubscriptionSpec): SubscriptionTopology {
  assertGroup(spec.group);
  assertPattern(spec.pattern);
  const queue = subscriptionQueueName(spec.group, spec.pattern);
  const retryQueues = new Map<number, string>();
  for (const delay of spec.retryDelays) {
    const name = `${queue}:retry-${delay}ms`;
    if (Buffer.byteLength(name) > MAX_QUEUE_NAME_BYTES) {
      throw new InvalidTopicError(
        spec.pattern,
        `the delay queue name for a ${delay} ms delay would exceed ${MAX_QUEUE_NAME_BYTES} bytes`,
      );
    }
    retryQueues.set(delay, name);
  }
  return { queue, retryQueues, deadLetterQueue: deadLetterQueueName(spec.group) };
}

/**
 * The queue name segment of a pattern. `%` and `:` are percent-encoded (`%25`, `%3A`) and the
 * pattern `dead-letter` becomes `dead%2Dletter`; every other pattern is kept as it is, so the queues
 * of existing subscriptions keep their names. Percent-decoding gives the pattern back, so two
 * patterns never share a segment.
 */
export function encodePatternForQueue(pattern: string): string {
  if (pattern === DEAD_LETTER_SEGMENT) return 'dead%2Dletter';
  return pattern.replace(/[%:]/g, (c) => (c === '%' ? '%25' : '%3A'));
}

/**
 * `ferry:<group>:<encoded pattern>`. A name that would leave no room for the delay queues' suffix
 * within 255 bytes is cut and ends with `%~` and a hash of the whole pattern: `%~` never occurs in
 * an encoded pattern (its `%` is always followed by two hex digits), so a cut name equals no other.
 */
export function subscriptionQueueName(group: string, pattern: string): string {
  const name = `ferry:${group}:${encodePatternForQueue(pattern)}`;
  if (Buffer.byteLength(name) <= MAX_SUBSCRIPTION_QUEUE_BYTES) return name;
  const hash = createHash('sha256').update(pattern).digest('base64url').slice(0, 32);
  const suffix = `%~${hash}`;
  let cut = '';
  let bytes = suffix.length;
  for (const ch of name) {
    const size = Buffer.byteLength(ch);
    if (bytes + size > MAX_SUBSCRIPTION_QUEUE_BYTES) break;
    cut += ch;
    bytes += size;
  }
  return cut + suffix;
}

export function deadLetterQueueName(group: string): string {
  return `ferry:${group}:${DEAD_LETTER_SEGMENT}`;
}

function queueArguments(queueType: QueueType): Record<string, unknown> {
  return { 'x-queue-type': queueType };
}

/** Declares the exchange every message is published to: durable, topic. */
export async function declareExchange(channel: Channel, exchange: string): Promise<void> {
  await channel.assertExchange(exchange, 'topic', { durable: true });
}

/** Declares (idempotently) every queue and binding of one subscription. */
export async function declareSubscription(
  channel: Channel,
  exchange: string,
  spec: SubscriptionSpec,
  topology: SubscriptionTopology,
  queueType: QueueType,
): Promise<void> {
  await channel.assertQueue(topology.queue, { durable: true, arguments: queueArguments(queueType) });
  await channel.bindQueue(topology.queue, exchange, spec.pattern);
  for (const [delay, name] of topology.retryQueues) {
    // A queue per delay: a per-message TTL would expire only at the head of the queue, so a long delay
    // would hold back shorter ones behind it. Classic queues dead-letter at most once (a broker crash
    // at that instant can drop the message); quorum queues here use the at-least-once strategy.
    const retryArguments: Record<string, unknown> = {
      ...queueArguments(queueType),
      'x-message-ttl': delay,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': topology.queue,
    };
    if (queueType === 'quorum') {
      retryArguments['x-dead-letter-strategy'] = 'at-least-once';
      retryArguments['x-overflow'] = 'reject-publish';
    }
    await channel.assertQueue(name, { durable: true, arguments: retryArguments });
  }
  await declareDeadLetterQueue(channel, topology.deadLetterQueue, queueType);
}

export async function declareDeadLetterQueue(
  channel: Channel,
  name: string,
  queueType: QueueType,
): Promise<void> {
  await channel.assertQueue(name, { durable: true, arguments: queueArguments(queueType) });
}

/**
 * Deletes a subscription's queue (only while no consumer is attached) and its delay queues, with what
 * they hold. Resolves the number of messages discarded. Consumers are counted first rather than with
 * `if-unused`, which quorum queues answer by closing the whole connection; one that attaches between
 * the count and the delete is cancelled and redeclares the queue.
 */
export async function deleteSubscriptionQueues(
  connection: ChannelModel,
  spec: SubscriptionSpec,
): Promise<number> {
  const topology = subscriptionTopology(spec);
  const open = async (): Promise<Channel> => {
    const channel = await connection.createChannel();
    channel.on('error', () => {
      // Reported through the failing call.
    });
    return channel;
  };
  let channel = await open();
  try {
    let consumers = 0;
    try {
      consumers = (await channel.checkQueue(topology.queue)).consumerCount;
    } catch (error) {
      if ((error as { code?: number }).code !== 404) throw error;
      channel = await open(); // no such queue: the check closed the channel
    }
    if (consumers > 0) throw new SubscriptionInUseError(spec.group, spec.pattern);
    let discarded = 0;
    for (const name of [topology.queue, ...topology.retryQueues.values()]) {
      discarded += (await channel.deleteQueue(name)).messageCount;
    }
    return discarded;
  } finally {
    await channel.close().catch(() => {});
  }
}
