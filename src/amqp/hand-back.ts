import type { Channel, ChannelModel, GetMessage } from 'amqplib';
import { closeChannel } from './close-channel.js';

/**
 * Most returns handed to the broker before waiting for the queue to show them. A quorum queue takes
 * returned messages back at its end, in order only while few are pending: RabbitMQ 3.10 puts the
 * first ~33 of a larger batch back in order and the rest in no order (a closing channel returns
 * even 20 in no order).
 */
const BATCH = 32;

/** How long one batch may take to show in the queue before the rest is handed back at once. */
const BATCH_WAIT_MS = 2000;

/**
 * Hands `messages` (fetched on `channel` with `noAck: false`, not yet settled) back to `queue` in the
 * order given, and resolves once the queue holds them again (or after a few seconds). A classic queue
 * puts each back where it was; a quorum queue at its end, so a caller that fetched the whole queue
 * gets it back as it was.
 *
 * Nothing is lost whatever happens: a message not yet handed back when the channel or connection
 * closes goes back to the queue with it, only not in order. If a batch does not show in time
 * (another process fetched from the queue meanwhile), the rest is handed back at once.
 */
export async function handBack(
  connection: ChannelModel,
  channel: Channel,
  queue: string,
  messages: readonly GetMessage[],
): Promise<void> {
  if (messages.length === 0) return;
  // checkQueue on a queue deleted meanwhile closes its channel: the probe is not the one holding messages.
  const probe = await connection.createChannel().catch(() => undefined);
  probe?.on('error', () => {});
  try {
    const before = probe === undefined ? undefined : await depth(probe, queue);
    let inOrder = before !== undefined;
    let sent = 0;
    while (sent < messages.length) {
      const end = inOrder ? Math.min(sent + BATCH, messages.length) : messages.length;
      for (const message of messages.slice(sent, end)) channel.nack(message, false, true);
      sent = end;
      const shown =
        probe !== undefined && before !== undefined && (await untilDepth(probe, queue, before + sent));
      inOrder &&= shown;
    }
  } finally {
    if (probe !== undefined) await closeChannel(probe);
  }
}

function depth(probe: Channel, queue: string): Promise<number | undefined> {
  return probe.checkQueue(queue).then(
    (ok) => ok.messageCount,
    () => undefined,
  );
}

/** Waits until `queue` holds `atLeast` messages: true if it did in time (false also if it is gone). */
async function untilDepth(probe: Channel, queue: string, atLeast: number): Promise<boolean> {
  const deadline = Date.now() + BATCH_WAIT_MS;
  for (;;) {
    const count = await depth(probe, queue);
    if (count === undefined) return false;
    if (count >= atLeast) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
