import type { Channel, ChannelModel, GetMessage } from 'amqplib';
import type { Logger } from '../logging/logger.js';
import { KeyedTurns } from '../messaging/keyed-turns.js';
import type { DeadLetter, DeadLetterReason, ReplayOptions } from '../messaging/transport.js';
import { decodeWireMessage, HEADER, typeOf } from '../messaging/wire.js';
import { closeChannel } from './close-channel.js';
import { republishOptions, wireMessageOf } from './codec.js';
import { handBack } from './hand-back.js';
import type { ConfirmPublisher } from './publisher.js';
import { deadLetterQueueName, openChannel } from './topology.js';

/** Headers a dead-lettered message carries: why, where from, and how to send it back. */
export const DEAD_LETTER_HEADER = Object.freeze({
  id: 'x-ferry-dead-letter-id',
  at: 'x-ferry-dead-lettered-at',
  kind: 'x-ferry-reason',
  error: 'x-ferry-error',
  stack: 'x-ferry-error-stack',
  attempts: 'x-ferry-attempts',
  group: 'x-ferry-group',
  pattern: 'x-ferry-pattern',
  queue: 'x-ferry-queue',
  exchange: 'x-ferry-exchange',
});

const REASON_KINDS = new Set<DeadLetterReason['kind']>([
  'handler-error',
  'malformed',
  'invalid',
  'redelivered',
  'timeout',
  'expired',
]);

/** Listings and replays of this process, by broker and dead-letter queue. */
const turns = new KeyedTurns();

/**
 * Runs `task` (a listing or a replay of `group`'s dead letters on the broker `broker` names) once the
 * listings and replays of that queue asked for before it in this process have ended. Both fetch
 * letters unacknowledged and hand some back: side by side, one would find the letters the other
 * holds missing (a replay reporting 0, a listing coming back short or reordered). Processes do not
 * take turns with each other.
 */
export function deadLetterTurn<T>(broker: string, group: string, task: () => Promise<T>): Promise<T> {
  return turns.run(`${broker}\u0000${deadLetterQueueName(group)}`, task);
}

function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

/**
 * Opens a channel on which unacknowledged gets go back to the queue when it closes. With
 * `confirmClose`, a close the broker did not confirm (the connection dropped) rejects: what was sent
 * on the channel last (acks) may not have reached it.
 */
async function withChannel<T>(
  connection: ChannelModel,
  fn: (channel: Channel) => Promise<T>,
  confirmClose = false,
): Promise<T> {
  const channel = await openChannel(connection);
  let result: T;
  try {
    result = await fn(channel);
  } catch (error) {
    await closeChannel(channel);
    throw error;
  }
  if (!(await closeChannel(channel)) && confirmClose) {
    throw new Error('the connection closed before the broker confirmed the close of the channel');
  }
  return result;
}

/** Messages in the queue, or 0 when it does not exist (no subscription of the group ever failed). */
async function depth(connection: ChannelModel, queue: string): Promise<number> {
  // checkQueue on a missing queue closes its channel, so it gets a channel of its own.
  return withChannel(connection, async (channel) => (await channel.checkQueue(queue)).messageCount).catch(
    (error: { code?: number }) => {
      if (error.code === 404) return 0;
      throw error;
    },
  );
}

function toDeadLetter(message: GetMessage, group: string): DeadLetter {
  const h = (message.properties.headers ?? {}) as Record<string, unknown>;
  const kind = text(h[DEAD_LETTER_HEADER.kind]) as DeadLetterReason['kind'] | undefined;
  const stack = text(h[DEAD_LETTER_HEADER.stack]);
  const reason: DeadLetterReason = {
    kind: kind !== undefined && REASON_KINDS.has(kind) ? kind : 'handler-error',
    message: text(h[DEAD_LETTER_HEADER.error]) ?? '(no reason recorded)',
    ...(stack === undefined ? {} : { stack }),
  };
  const delivery = decodeWireMessage(wireMessageOf(message));
  const envelope = delivery.ok ? (({ attempt: _a, ...rest }) => rest)(delivery.message) : undefined;
  return {
    deadLetterId: text(h[DEAD_LETTER_HEADER.id]) ?? text(message.properties.messageId) ?? '',
    group,
    pattern: text(h[DEAD_LETTER_HEADER.pattern]) ?? '',
    routingKey: typeOf(wireMessageOf(message)),
    reason,
    attempts: Number(h[DEAD_LETTER_HEADER.attempts] ?? 0),
    deadLetteredAt: text(h[DEAD_LETTER_HEADER.at]) ?? '',
    body: message.content.toString('utf8'),
    ...(envelope === undefined ? {} : { envelope }),
  };
}

/**
 * Reads up to `limit` dead letters of `group` without removing them: they are fetched unacknowledged,
 * then handed back. A quorum queue puts returned messages at its back, so handing back only the
 * first `limit` would rotate the queue (each listing another slice, replays by position picking
 * other letters): every letter (up to {@link MAX_ROTATION}) is fetched and handed back in order (see
 * {@link handBack}), which leaves the order as it was.
 */
export async function listDeadLetters(
  connection: ChannelModel,
  group: string,
  limit: number,
): Promise<DeadLetter[]> {
  const queue = deadLetterQueueName(group);
  const before = await depth(connection, queue);
  if (before === 0 || limit <= 0) return [];
  return withChannel(connection, async (channel) => {
    const got: DeadLetter[] = [];
    const fetched: GetMessage[] = [];
    while (fetched.length < Math.max(limit, Math.min(before, MAX_ROTATION))) {
      const message = await channel.get(queue, { noAck: false });
      if (message === false) break;
      fetched.push(message);
      if (got.length < limit) got.push(toDeadLetter(message, group));
    }
    await handBack(connection, channel, queue, fetched);
    return got;
  });
}

/** Most dead letters a listing or replay fetches to hand them back in order (a larger queue rotates). */
const MAX_ROTATION = 10_000;

/** How far a replay got, for the error of one the loss of its channel cuts short. */
export interface ReplayProgress {
  /** Letters sent back, confirmed by the broker and removed from the dead-letter queue. */
  replayed: number;
  /** A letter is being sent back: it may have gone out although the cut keeps it listed. */
  sending: boolean;
  /**
   * The last letter counted in `replayed` was removed with an ack the broker has not answered yet
   * (an ack has no reply; the channel's next round trip proves it arrived): a cut now may leave it
   * listed, although its copy went out.
   */
  removing: boolean;
}

/**
 * Sends selected dead letters back to the queue of the subscription that gave up on them, attempt
 * count reset. Each is removed from the dead-letter queue only after the broker confirmed the copy.
 * Scans at most the messages present at the start, so letters that fail again are not replayed twice.
 * The letters it fetched and left are back in the queue, in their order, when it resolves: once it
 * leaves one, it fetches the rest of the queue (up to {@link MAX_ROTATION}) to hand it all back in
 * order, as a listing does. `progress` says how far it got, for a caller whose replay the loss of
 * the channel cuts short.
 */
export async function replayDeadLetters(
  connection: ChannelModel,
  publisher: ConfirmPublisher,
  group: string,
  options: ReplayOptions,
  logger: Logger,
  progress: ReplayProgress = { replayed: 0, sending: false, removing: false },
): Promise<number> {
  const queue = deadLetterQueueName(group);
  const present = await depth(connection, queue);
  if (present === 0) return 0;
  const wanted = options.deadLetterIds === undefined ? undefined : new Set(options.deadLetterIds);
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  return withChannel(
    connection,
    async (channel) => {
      let replayed = 0;
      const left: GetMessage[] = [];
      for (let fetched = 0; fetched < present; fetched++) {
        const searching = replayed < limit && (wanted === undefined || wanted.size > 0);
        if (!searching && (left.length === 0 || fetched >= MAX_ROTATION)) break;
        const message = await channel.get(queue, { noAck: false });
        // The broker answers a channel's frames in order: the acks sent before this get arrived.
        progress.removing = false;
        if (message === false) break;
        const id = text(message.properties.headers?.[DEAD_LETTER_HEADER.id]) ?? '';
        if (!searching || (wanted !== undefined && !wanted.has(id))) {
          left.push(message);
        } else {
          progress.sending = true;
          if (await replayOne(publisher, queue, message, id, logger)) {
            channel.ack(message);
            wanted?.delete(id);
            replayed++;
            progress.replayed = replayed;
            progress.sending = false;
            progress.removing = true;
            continue;
          }
          progress.sending = false;
          left.push(message);
        }
      }
      // Until handed back, the letters left are held by this channel: if it or the connection closes
      // first, the broker puts them back itself (out of order, but none lost).
      await handBack(connection, channel, queue, left);
      return replayed;
    },
    true,
  );
}

/** Publishes `message`'s copy to its subscription's queue: true once the broker confirmed it. */
async function replayOne(
  publisher: ConfirmPublisher,
  queue: string,
  message: GetMessage,
  id: string,
  logger: Logger,
): Promise<boolean> {
  const target = text(message.properties.headers?.[DEAD_LETTER_HEADER.queue]);
  if (target === undefined) {
    logger.warn(`dead letter ${id} in ${queue} does not say which queue it came from; left in place`);
    return false;
  }
  const options = republishOptions(message, { [HEADER.attempt]: 1 });
  const headers = options.headers as Record<string, unknown>;
  for (const name of Object.values(DEAD_LETTER_HEADER)) {
    if (name !== DEAD_LETTER_HEADER.exchange) delete headers[name];
  }
  try {
    await publisher.move(target, message.content, options);
    return true;
  } catch (error) {
    logger.warn(`could not replay dead letter ${id} to ${target}; left in place`, { error: String(error) });
    return false;
  }
}
