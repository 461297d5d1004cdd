import { createHash } from 'node:crypto';
import type { Channel, ChannelModel } from 'amqplib';
import { InvalidTopicError, SubscriptionInUseError } from '../messaging/errors.js';
import { assertGroup, assertPattern } from '../messaging/topic.js';
import type { SubscriptionSpec } from '../messaging/transport.js';
import { closeChannel } from './close-channel.js';
import { InequivalentExchangeError } from './inequivalent-exchange-error.js';
import { InequivalentQueueError } from './inequivalent-queue-error.js';

/** Queue type of subscription, delay and dead-letter queues. */
export type QueueType = 'classic' | 'quorum';

/** Names of the broker objects behind one subscription. */
export interface SubscriptionTopology {
  /** The subscription's durable queue, bound to the exchange with the pattern. */
  readonly queue: string;
  /** Delay queues by delay in ms: messages wait out their TTL, then dead-letter back into `queue`. */
  readonly retryQueues: ReadonlyMap<number, string>;
  /**
   * Messages whose consumer stopped while holding them, each waiting to be tried alone (one at a
   * time, nothing else running in that process), so that only the message that crashes its consumer
   * is counted towards `maxRedeliveries`.
   */
  readonly redeliveredQueue: string;
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
/** The last segment of a subscription's queue of redelivered messages (shorter than the retry reserve). */
const REDELIVERED_SEGMENT = 'redelivered';

/**
 * Names are derived from group and pattern, so every instance of a service finds the same queues:
 * `ferry:<group>:<pattern>`, `ferry:<group>:<pattern>:retry-<ms>ms`, `ferry:<group>:<pattern>:redelivered`,
 * `ferry:<group>:dead-letter`.
 * Group names cannot contain `:`; the pattern is encoded ({@link encodePatternForQueue}) so that it
 * contains no `:` either and never equals `dead-letter`: a subscription queue has exactly two `:`,
 * a delay or redelivered queue three (their last segments differ), and the dead-letter segment is
 * reserved, so no two names can be equal.
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
  return {
    queue,
    retryQueues,
    redeliveredQueue: `${queue}:${REDELIVERED_SEGMENT}`,
    deadLetterQueue: deadLetterQueueName(spec.group),
  };
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

function delayQueueArguments(queueType: QueueType, delay: number, target: string): Record<string, unknown> {
  // A queue per delay: a per-message TTL would expire only at the head of the queue, so a long delay
  // would hold back shorter ones behind it. Classic queues dead-letter at most once (a broker crash
  // at that instant can drop the message); quorum queues here use the at-least-once strategy, which
  // RabbitMQ allows only with reject-publish overflow (no length limit is set, so nothing is refused).
  const args: Record<string, unknown> = {
    ...queueArguments(queueType),
    'x-message-ttl': delay,
    'x-dead-letter-exchange': '',
    'x-dead-letter-routing-key': target,
  };
  if (queueType === 'quorum') {
    args['x-dead-letter-strategy'] = 'at-least-once';
    args['x-overflow'] = 'reject-publish';
  }
  return args;
}

/** RabbitMQ's reply code for a declare that does not match what exists. */
const PRECONDITION_FAILED = 406;

/**
 * Declares the exchange every message is published to: durable, topic. One that exists with other
 * properties (another type, not durable) fails with `INEQUIVALENT_EXCHANGE`, which waiting cannot fix.
 */
export async function declareExchange(channel: Channel, exchange: string): Promise<void> {
  try {
    await channel.assertExchange(exchange, 'topic', { durable: true });
  } catch (error) {
    if ((error as { code?: unknown }).code !== PRECONDITION_FAILED) throw error;
    throw new InequivalentExchangeError(exchange, brokerText(error as Error), { cause: error });
  }
}

/** A queue that exists as the other queue type than the one asked for; it is used as it is. */
export interface QueueTypeMismatch {
  readonly queue: string;
  /** The type the queue has. */
  readonly existing: QueueType;
  /** The type the transport is configured with. */
  readonly requested: QueueType;
}

/** How a subscription's queues are declared. */
export interface DeclareOptions {
  readonly queueType: QueueType;
  /** Told of every queue that exists as the other type (on every declare: the caller dedupes). */
  readonly onQueueTypeMismatch: (mismatch: QueueTypeMismatch) => void;
}

/**
 * Declares (idempotently) every queue and binding of one subscription, on a channel of its own: a
 * refused declare closes its channel, and must not take a working one with it. A queue that already
 * exists as the other queue type (queues of an older Ferry, or of a deployment configured otherwise)
 * is used as it is and reported to `onQueueTypeMismatch`; a queue that matches neither type's
 * arguments fails with `INEQUIVALENT_QUEUE`.
 */
export async function declareSubscription(
  connection: ChannelModel,
  exchange: string,
  spec: SubscriptionSpec,
  topology: SubscriptionTopology,
  options: DeclareOptions,
): Promise<void> {
  const declarer = new QueueDeclarer(connection, options);
  try {
    await declarer.declare(topology.queue, queueArguments);
    for (const [delay, name] of topology.retryQueues) {
      await declarer.declare(name, (type) => delayQueueArguments(type, delay, topology.queue));
    }
    await declarer.declare(topology.redeliveredQueue, queueArguments);
    await declarer.declare(topology.deadLetterQueue, queueArguments);
    // Bound last: a subscription that fails on one of its queues (INEQUIVALENT_QUEUE) leaves no
    // queue collecting the pattern's messages for nobody, and its publishes stay unroutable.
    await (await declarer.channel()).bindQueue(topology.queue, exchange, spec.pattern);
  } finally {
    await declarer.close();
  }
}

/**
 * Declares queues as one type, falling back to the other. RabbitMQ refuses a declare whose arguments
 * differ from the existing queue's, naming only the first difference (for a delay queue that is often
 * `x-overflow` rather than `x-queue-type`), so the type is told by declaring again with the other
 * type's arguments: if that is accepted, the queue is exactly a queue of the other type.
 */
class QueueDeclarer {
  readonly #connection: ChannelModel;
  readonly #options: DeclareOptions;
  #channel: Channel | undefined;

  constructor(connection: ChannelModel, options: DeclareOptions) {
    this.#connection = connection;
    this.#options = options;
  }

  async channel(): Promise<Channel> {
    if (this.#channel === undefined) {
      this.#channel = await openChannel(this.#connection);
    }
    return this.#channel;
  }

  async declare(name: string, argumentsOf: (type: QueueType) => Record<string, unknown>): Promise<void> {
    const requested = this.#options.queueType;
    const refusal = await this.#tryDeclare(name, argumentsOf(requested));
    if (refusal === undefined) return;
    const existing: QueueType = requested === 'quorum' ? 'classic' : 'quorum';
    if ((await this.#tryDeclare(name, argumentsOf(existing))) !== undefined) {
      throw new InequivalentQueueError(name, requested, brokerText(refusal), { cause: refusal });
    }
    this.#options.onQueueTypeMismatch({ queue: name, existing, requested });
  }

  /** Resolves the broker's refusal (PRECONDITION_FAILED), if it refused; any other failure throws. */
  async #tryDeclare(name: string, args: Record<string, unknown>): Promise<Error | undefined> {
    try {
      await (await this.channel()).assertQueue(name, { durable: true, arguments: args });
      return undefined;
    } catch (error) {
      if ((error as { code?: unknown }).code !== PRECONDITION_FAILED) throw error;
      this.#channel = undefined; // the refusal closed it
      return error as Error;
    }
  }

  async close(): Promise<void> {
    if (this.#channel !== undefined) await closeChannel(this.#channel);
    this.#channel = undefined;
  }
}

/** `PRECONDITION_FAILED - inequivalent arg …` out of amqplib's "Operation failed: …" message. */
function brokerText(error: Error): string {
  return /with message "(.*)"$/s.exec(error.message)?.[1] ?? error.message;
}

/** RabbitMQ's reply code for an exclusive queue that another connection holds. */
const RESOURCE_LOCKED = 405;
/** How long a subscribe or a delete waits for a subscription's fence held by another process. */
export const FENCE_WAIT_MS = 5_000;
/** The last segment of a subscription's fence queue (see {@link holdFence}). */
const FENCE_SEGMENT = 'fence';

/** A channel whose errors are reported through the failing call (a listener keeps them from crashing the process). */
export async function openChannel(connection: ChannelModel): Promise<Channel> {
  const channel = await connection.createChannel();
  channel.on('error', () => {
    // Reported through the failing call.
  });
  return channel;
}

/**
 * Holds a subscription's fence: an exclusive queue, `<queue>:fence`, that one connection at a time
 * can declare. A subscribe holds it from its first declare until it consumes, and a delete while it
 * counts consumers and deletes, so that a delete in another process never runs between a
 * subscribe's declare and its consume (it saw no consumer and deleted the queues under the
 * subscribe: the memory broker refuses that delete, and RabbitMQ 3.10 lost its quorum queues'
 * dead-letter supervisor to the race). Resolves the release, or undefined when another connection
 * held it for `waitMs`. The broker drops the fence with its connection: a process that dies holding
 * it holds nothing.
 */
export async function holdFence(
  connection: ChannelModel,
  topology: SubscriptionTopology,
  waitMs: number = FENCE_WAIT_MS,
): Promise<(() => Promise<void>) | undefined> {
  const name = `${topology.queue}:${FENCE_SEGMENT}`;
  const deadline = Date.now() + waitMs;
  for (let pause = 10; ; pause = Math.min(pause * 2, 100)) {
    const channel = await openChannel(connection);
    try {
      await channel.assertQueue(name, {
        exclusive: true,
        durable: false,
        arguments: { 'x-queue-type': 'classic' },
      });
    } catch (error) {
      if ((error as { code?: unknown }).code !== RESOURCE_LOCKED) throw error;
      // The refusal closed the channel. Held by another connection: wait for its release.
      if (Date.now() + pause > deadline) return undefined;
      await new Promise((resolve) => setTimeout(resolve, pause));
      continue;
    }
    return async () => {
      try {
        await channel.deleteQueue(name);
      } catch {
        // The connection went, and the broker dropped the fence with it.
      }
      await closeChannel(channel);
    };
  }
}

/**
 * Deletes a subscription's queue (only while no consumer is attached) and its delay queues, with what
 * they hold. Resolves the number of messages discarded. Consumers are counted first rather than with
 * `if-unused`, which quorum queues answer by closing the whole connection, and under the
 * subscription's fence (see {@link holdFence}): a subscribe of another process between its declare
 * and its consume counts as a consumer. One that attaches some other way between the count and the
 * delete is cancelled and redeclares the queue.
 */
export async function deleteSubscriptionQueues(
  connection: ChannelModel,
  spec: SubscriptionSpec,
): Promise<number> {
  const topology = subscriptionTopology(spec);
  const release = await holdFence(connection, topology);
  if (release === undefined) throw new SubscriptionInUseError(spec.group, spec.pattern);
  try {
    return await deleteUnused(connection, spec, topology);
  } finally {
    await release();
  }
}

/** Looks again at a queue's consumers before refusing a delete, and the pause between looks. */
const CONSUMER_SETTLE_LOOKS = 10;
const CONSUMER_SETTLE_MS = 50;

async function deleteUnused(
  connection: ChannelModel,
  spec: SubscriptionSpec,
  topology: SubscriptionTopology,
): Promise<number> {
  const open = () => openChannel(connection);
  let channel = await open();
  try {
    let consumers = 0;
    // A consumer that has just closed (its channel closed, its fence let go: the delete waited for
    // it) may still be counted by the queue for a moment: looked at again for up to half a second
    // before the delete is refused (CI saw it refused right after such a close).
    for (let look = 0; look <= CONSUMER_SETTLE_LOOKS; look++) {
      if (look > 0) await new Promise((resolve) => setTimeout(resolve, CONSUMER_SETTLE_MS));
      try {
        consumers = (await channel.checkQueue(topology.queue)).consumerCount;
      } catch (error) {
        if ((error as { code?: number }).code !== 404) throw error;
        channel = await open(); // no such queue: the check closed the channel
        consumers = 0;
      }
      if (consumers === 0) break;
    }
    if (consumers > 0) throw new SubscriptionInUseError(spec.group, spec.pattern);
    let discarded = 0;
    for (const name of [topology.queue, topology.redeliveredQueue, ...topology.retryQueues.values()]) {
      discarded += (await channel.deleteQueue(name)).messageCount;
    }
    return discarded;
  } finally {
    await closeChannel(channel);
  }
}
