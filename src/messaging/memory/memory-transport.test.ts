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

  it('stamps with the time of publishRaw a timestamp no RFC 3339 time can say (before 1970, past 9999)', async () => {
    const own = new MemoryBroker();
    const transport = new MemoryTransport({ broker: own });
    const bus = await createBus({ service: 'raw', transport, logger: silentLogger });
    const times: string[] = [];
    await bus.subscribe('raw.t', (m) => void times.push(m.time));
    const before = Date.now();
    // -1 arrived as 1969-12-31T23:59:59.000Z, 8.64e15 as +275760-09-13T00:00:00.000Z.
    for (const timestamp of [-1, 8.64e15]) {
      await transport.publishRaw({ routingKey: 'raw.t', body: Buffer.from('{}'), timestamp });
    }
    await vi.waitFor(() => expect(times).toHaveLength(2));
    for (const time of times) {
      expect(time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(Date.parse(time)).toBeGreaterThanOrEqual(before - 1000);
    }
    await bus.close();
  });

  it('dead-letters a message id or correlation id over 255 bytes as malformed, which RabbitMQ cannot carry', async () => {
    // Delivered, its handler's own publishes (taking its correlation id) were refused: a handler
    // error on every attempt.
    const own = new MemoryBroker();
    const transport = new MemoryTransport({ broker: own });
    const bus = await createBus({ service: 'raw', transport, logger: silentLogger });
    const handled: string[] = [];
    await bus.subscribe('raw.id', (m) => void handled.push(m.id));
    const body = Buffer.from('{}');
    await transport.publishRaw({ routingKey: 'raw.id', body, messageId: 'i'.repeat(256) });
    await transport.publishRaw({
      routingKey: 'raw.id',
      body,
      messageId: 'c',
      correlationId: 'c'.repeat(300),
    });
    await transport.publishRaw({ routingKey: 'raw.id', body, messageId: 'i'.repeat(255) });
    await vi.waitFor(async () => expect(await bus.listDeadLetters()).toHaveLength(2));
    expect((await bus.listDeadLetters()).map((d) => [d.reason.kind, d.reason.message])).toEqual([
      ['malformed', 'the message id is 256 bytes long (at most 255)'],
      ['malformed', 'the correlation id is 300 bytes long (at most 255)'],
    ]);
    await vi.waitFor(() => expect(handled).toEqual(['i'.repeat(255)]));
    await bus.close();
  });
});
