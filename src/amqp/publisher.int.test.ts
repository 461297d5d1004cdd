import amqp, { type ChannelModel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { isPublishNackedError } from '../messaging/errors.js';
import { testVhosts } from './fixtures/test-vhosts.js';
import { ConfirmPublisher } from './publisher.js';

const { vhost, defer } = testVhosts('ferry-publisher');

describe('ConfirmPublisher', () => {
  it('stops re-sending a publish the broker answers by closing the channel, after three sends', async () => {
    const v = await vhost();
    const connection: ChannelModel = await amqp.connect(v.url);
    defer(() => connection.close());
    let channelsClosed = 0;
    // As the transport does after a channel failure: a new channel, then everything unconfirmed re-sent.
    const recover = async () => {
      channelsClosed++;
      publisher.resume(await publisher.attach(connection));
    };
    const publisher: ConfirmPublisher = new ConfirmPublisher({
      window: 10,
      maxBuffered: 100,
      confirmTimeoutMs: 600_000,
      maxMessageBytes: 1_000_000,
      onChannelFailure: () => void recover(),
    });
    defer(() => publisher.close(100));
    const channel = await publisher.attach(connection);
    await channel.assertExchange('real', 'topic', { durable: false });
    await channel.assertQueue('sink', { durable: false });
    await channel.bindQueue('sink', 'real', '#');
    publisher.resume(channel);

    // Publishing to a missing exchange makes RabbitMQ close the channel (404 NOT_FOUND).
    const refused = await publisher
      .publish('missing', 'x', Buffer.from('{}'), { messageId: 'refused', mandatory: true })
      .catch((e: unknown) => e);
    expect(isPublishNackedError(refused)).toBe(true);
    expect((refused as Error).message).toMatch(/closed the channel 3 times.*NOT_FOUND/s);
    expect(channelsClosed).toBe(3);
    // The publisher goes on working.
    await publisher.publish('real', 'x', Buffer.from('{}'), { messageId: 'ok', mandatory: true });
    expect(publisher.stats).toMatchObject({ inFlight: 0, waiting: 0 });
  }, 30_000);
});
