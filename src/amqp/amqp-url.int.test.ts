import { describe, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { silentLogger } from '../logging/logger.js';

describe('AmqpTransport URL query on a real broker', () => {
  it('connects with the query parameters amqplib reads, a heartbeat and a frame size of the URL', async () => {
    const bus = await createBus({
      url: 'amqp://guest:guest@127.0.0.1:5672/?heartbeat=10&frameMax=131072&locale=en_US',
      service: 'svc',
      logger: silentLogger,
    });
    await bus.close();
  });
});
