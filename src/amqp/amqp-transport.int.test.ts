import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib';
import { afterAll, beforeAll } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import type { WireMessage } from '../messaging/wire.js';
import { createTestVhost, type TestVhost } from '../testing/rabbitmq.js';
import { testTransport } from '../testing/transport-contract.js';
import { AmqpTransport } from './amqp-transport.js';

let vhost: TestVhost;
let producer: ChannelModel;
let channel: ConfirmChannel;

beforeAll(async () => {
  vhost = await createTestVhost('ferry-contract');
  producer = await amqp.connect(vhost.url);
  channel = await producer.createConfirmChannel();
  await channel.assertExchange('ferry.events', 'topic', { durable: true });
});

afterAll(async () => {
  await producer?.close().catch(() => {});
  await vhost?.dispose();
});

// What a plain amqplib producer (the classic tutorial's) sends: JSON body, messageId, timestamp.
async function publishRaw(wire: WireMessage): Promise<void> {
  const options: amqp.Options.Publish = { persistent: true };
  if (wire.messageId !== undefined) options.messageId = wire.messageId;
  if (wire.timestamp !== undefined) options.timestamp = wire.timestamp;
  if (wire.contentType !== undefined) options.contentType = wire.contentType;
  if (wire.correlationId !== undefined) options.correlationId = wire.correlationId;
  if (wire.appId !== undefined) options.appId = wire.appId;
  if (wire.headers !== undefined) options.headers = wire.headers;
  channel.publish('ferry.events', wire.routingKey, Buffer.from(wire.body), options);
  await channel.waitForConfirms();
}

// The default options: quorum queues.
testTransport(
  'amqp',
  { createTransport: () => new AmqpTransport({ url: vhost.url, logger: silentLogger }), publishRaw },
  { orderedPerPublisher: true },
);

testTransport(
  'amqp with classic queues',
  {
    createTransport: () => new AmqpTransport({ url: vhost.url, logger: silentLogger, queueType: 'classic' }),
    publishRaw,
  },
  { orderedPerPublisher: true },
);
