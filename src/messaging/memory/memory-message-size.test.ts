import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../logging/logger.js';
import { Bus } from '../bus.js';
import { isMessageTooLargeError } from '../errors.js';
import { MemoryBroker } from './memory-broker.js';
import { MemoryTransport } from './memory-transport.js';

/** A bus on a broker of its own with `maxMessageBytes`, and a subscription taking everything. */
async function busWithLimit(maxMessageBytes?: number): Promise<{ bus: Bus; received: unknown[] }> {
  const broker = new MemoryBroker(maxMessageBytes === undefined ? {} : { maxMessageBytes });
  const bus = new Bus(new MemoryTransport({ broker }), {
    service: `size-${randomUUID().slice(0, 8)}`,
    logger: silentLogger,
  });
  const received: unknown[] = [];
  await bus.subscribe('#', async (m) => void received.push(m.data));
  return { bus, received };
}

/** What publishing `data` gives: 'ok', or the error's code. */
async function outcome(bus: Bus, data: unknown): Promise<string> {
  return bus.publish('file.uploaded', data).then(
    () => 'ok',
    (e: unknown) => (isMessageTooLargeError(e) ? `too large: ${e.size} > ${e.limit}` : String(e)),
  );
}

describe('memory broker maxMessageBytes: the JSON of data in UTF-8, as on RabbitMQ', () => {
  it('takes a body of exactly the limit and refuses one byte more, counting UTF-8 and escapes', async () => {
    const { bus, received } = await busWithLimit(100);
    // {"s":"…"} is 8 bytes besides the string.
    expect(await outcome(bus, { s: 'x'.repeat(92) })).toBe('ok');
    expect(await outcome(bus, { s: 'x'.repeat(93) })).toBe('too large: 101 > 100');
    // é is 2 bytes, € 3, a control character 6 (\u0001), a quote 2 (\").
    expect(await outcome(bus, { s: 'é'.repeat(46) })).toBe('ok');
    expect(await outcome(bus, { s: `${'é'.repeat(46)}x` })).toBe('too large: 101 > 100');
    expect(await outcome(bus, { s: '€'.repeat(31) })).toBe('too large: 101 > 100');
    expect(await outcome(bus, { s: `${'\u0001'.repeat(15)}xx` })).toBe('ok');
    expect(await outcome(bus, { s: `${'\u0001'.repeat(15)}xxx` })).toBe('too large: 101 > 100');
    expect(await outcome(bus, { s: '"'.repeat(46) })).toBe('ok');
    expect(await outcome(bus, { s: '"'.repeat(47) })).toBe('too large: 102 > 100');
    // Keys, numbers and nesting count as JSON writes them.
    expect(await outcome(bus, { ['k'.repeat(90)]: 12345 })).toBe('ok'); // 2 + 92 + 1 + 5 = 100
    expect(await outcome(bus, { ['k'.repeat(90)]: 123456 })).toBe('too large: 101 > 100');
    expect(
      await outcome(
        bus,
        Array.from({ length: 50 }, () => 1),
      ),
    ).toBe('too large: 101 > 100');
    expect(
      await outcome(
        bus,
        Array.from({ length: 49 }, () => 1),
      ),
    ).toBe('ok');
    await bus.close();
    expect(received).toHaveLength(6);
  });

  it('counts data of a shape published often (copied by compiled code) and data that is not plain', async () => {
    const { bus } = await busWithLimit(200);
    const order = (note: string) => ({ id: 'o-1', lines: [{ sku: 'a', qty: 1 }], note });
    // Enough of one shape for the broker to compile a copier for it.
    for (let i = 0; i < 40; i++) expect(await outcome(bus, order('short'))).toBe('ok');
    const fits = order('n'.repeat(140));
    const size = Buffer.byteLength(JSON.stringify(fits));
    expect(size).toBeLessThanOrEqual(200);
    expect(await outcome(bus, order('n'.repeat(140 + 200 - size)))).toBe('ok');
    expect(await outcome(bus, order('n'.repeat(141 + 200 - size)))).toBe('too large: 201 > 200');
    expect(await outcome(bus, order('€'.repeat(60)))).toMatch(/^too large/);
    // A Date (not plain data) goes through the encoder: {"at":"2026-…Z"} is 33 bytes.
    const { bus: small } = await busWithLimit(32);
    expect(await outcome(small, { at: new Date(0) })).toBe('too large: 33 > 32');
    await bus.close();
    await small.close();
  });

  it('refuses with the default limit, 134217728 bytes as RabbitMQ, before routing', async () => {
    const { bus } = await busWithLimit();
    expect(await outcome(bus, 'x'.repeat(134_217_726))).toBe('ok');
    expect(await outcome(bus, 'x'.repeat(134_217_727))).toBe('too large: 134217729 > 134217728');
    await bus.close();
  });

  it('is checked by the outbox path too (transport.check), without publishing', () => {
    const broker = new MemoryBroker({ maxMessageBytes: 10 });
    const transport = new MemoryTransport({ broker });
    const envelope = {
      specversion: '1.0' as const,
      id: 'm-1',
      source: 's',
      type: 'a.b',
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: { s: 'x'.repeat(10) },
      correlationid: 'm-1',
    };
    expect(() => transport.check(envelope)).toThrow(
      expect.objectContaining({ code: 'MESSAGE_TOO_LARGE', size: 18 }),
    );
    expect(() => transport.check({ ...envelope, data: { s: 'x' } })).not.toThrow();
    expect(() => transport.check({ ...envelope, id: 5 as unknown as string })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    );
  });

  it('refuses a bad maxMessageBytes', () => {
    for (const maxMessageBytes of [0, -1, 1.5, Number.NaN]) {
      expect(() => new MemoryBroker({ maxMessageBytes })).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
    }
  });
});
