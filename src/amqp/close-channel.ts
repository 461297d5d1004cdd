import type { Channel } from 'amqplib';

/**
 * Closes `channel` and resolves once it is closed (true: the broker confirmed the close, so it had
 * handled everything sent on the channel before), or once its connection is gone (false); never rejects.
 * amqplib's `close()` waits for the broker's CloseOk, and when the connection drops meanwhile that
 * promise never settles: a listing or replay cut at that instant hung for good. The channel's
 * 'close' event, which amqplib emits for every channel of a lost connection, ends the wait too.
 */
export function closeChannel(channel: Channel): Promise<boolean> {
  return new Promise((resolve) => {
    // amqplib emits 'close' just before it settles close() on the broker's CloseOk: a turn later,
    // an unsettled close() means the channel ended without it.
    channel.once('close', () => setImmediate(() => resolve(false)));
    channel.close().then(
      () => resolve(true),
      () => resolve(false),
    );
  });
}
