import { describe, expect, it, vi } from 'vitest';
import { createBus } from '../../connect/create-bus.js';
import { silentLogger } from '../../logging/logger.js';
import { testTransport } from '../../testing/transport-contract.js';
import { MemoryBroker } from './memory-broker.js';
import { MemoryTransport } from './memory-transport.js';

const broker = new MemoryBroker();

testTransport(
  'memory',
  {
    createTransport: () => new MemoryTransport({ broker }),
    publishRaw: (wire) => broker.publishRaw(wire),
  },
  { orderedPerPublisher: true },
);

describe('MemoryTransport.publishRaw', () => {
  it('refuses what is not a wire message (INVALID_OPTIONS) rather than crash the process at delivery', async () => {
    const own = new MemoryBroker();
    const transport = new MemoryTransport({ broker: own });
    const bus = await createBus({ service: 'raw', transport, logger: silentLogger });
    const handled: unknown[] = [];
    await bus.subscribe('raw.x', (m) => void handled.push(m.data));
    // Each of these crashed the process with a TypeError from the delivery loop.
    for (const wire of [
      { routingKey: 'raw.x', body: '{"a":1}' },
      { routingKey: 'raw.x', body: undefined },
      { routingKey: 'raw.x', body: Buffer.from('{}'), headers: 'oops' },
      { routingKey: 'raw.x', body: Buffer.from('{}'), messageId: 5 },
      { routingKey: 7, body: Buffer.from('{}') },
      null,
    ]) {
      await expect(transport.publishRaw(wire as never), JSON.stringify(wire)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
    }
    await transport.publishRaw({ routingKey: 'raw.x', body: Buffer.from('{"a":1}') });
    await vi.waitFor(() => expect(handled).toEqual([{ a: 1 }]));
    await bus.close();
  });
});
