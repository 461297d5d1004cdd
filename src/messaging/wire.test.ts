import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Message } from './envelope.js';
import type { Delivery } from './transport.js';
import { attemptOf, decodeWireMessage, HEADER, typeOf, type WireMessage } from './wire.js';

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

function decoded(wire: WireMessage): Message {
  const delivery = decodeWireMessage(wire);
  if (!delivery.ok) throw new Error(`expected a decoded message, got: ${delivery.reason}`);
  return delivery.message;
}

function failed(wire: WireMessage): Extract<Delivery, { ok: false }> {
  const delivery = decodeWireMessage(wire);
  if (delivery.ok) throw new Error('expected a failed delivery');
  return delivery;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('decodeWireMessage', () => {
  it('decodes a Ferry-encoded message with its CloudEvents headers', () => {
    const message = decoded({
      body: json({ orderId: 'o-1' }),
      routingKey: 'order.created',
      contentType: 'application/json',
      messageId: 'm-1',
      timestamp: Date.parse('2026-03-04T05:06:07.000Z'),
      appId: 'orders',
      correlationId: 'c-1',
      headers: {
        [HEADER.specversion]: '1.0',
        [HEADER.time]: '2026-03-04T05:06:07.890Z',
        [HEADER.causationid]: 'cause-1',
        [HEADER.attempt]: 3,
        tenant: 'acme',
      },
    });
    expect(message).toEqual({
      specversion: '1.0',
      id: 'm-1',
      source: 'orders',
      type: 'order.created',
      time: '2026-03-04T05:06:07.890Z',
      datacontenttype: 'application/json',
      data: { orderId: 'o-1' },
      correlationid: 'c-1',
      causationid: 'cause-1',
      attempt: 3,
      headers: { tenant: 'acme' },
    });
  });

  it('takes the type from x-ferry-routing-key over the routing key it arrived with', () => {
    const message = decoded({
      body: json({}),
      routingKey: 'ferry.retry.orders',
      messageId: 'm-1',
      headers: { [HEADER.routingKey]: 'order.created' },
    });
    expect(message.type).toBe('order.created');
  });

  it('reads headers an AMQP client delivers as Buffers', () => {
    const message = decoded({
      body: json({}),
      routingKey: 'r',
      messageId: 'm-1',
      headers: {
        [HEADER.time]: Buffer.from('2026-01-01T00:00:00.000Z'),
        [HEADER.causationid]: Buffer.from('cause-1'),
        [HEADER.attempt]: Buffer.from('2'),
        [HEADER.routingKey]: Buffer.from('order.paid'),
      },
    });
    expect(message).toMatchObject({
      time: '2026-01-01T00:00:00.000Z',
      causationid: 'cause-1',
      attempt: 2,
      type: 'order.paid',
    });
  });

  it('wraps a plain producer message: id from messageId, type from routing key, source from appId', () => {
    const message = decoded({
      body: json([1, 2, 3]),
      routingKey: 'legacy.event',
      messageId: 'legacy-1',
      appId: 'billing',
      timestamp: Date.parse('2026-01-02T03:04:05.678Z'),
    });
    expect(message).toEqual({
      specversion: '1.0',
      id: 'legacy-1',
      source: 'billing',
      type: 'legacy.event',
      time: '2026-01-02T03:04:05.678Z',
      datacontenttype: 'application/json',
      data: [1, 2, 3],
      correlationid: 'legacy-1',
      attempt: 1,
    });
  });

  it('reads a timestamp in seconds, as the AMQP spec defines it, as the same time', () => {
    const seconds = decoded({
      body: json({}),
      routingKey: 'r',
      messageId: 'm',
      timestamp: Date.parse('2026-01-02T03:04:05Z') / 1000,
    });
    const millis = decoded({
      body: json({}),
      routingKey: 'r',
      messageId: 'm',
      timestamp: Date.parse('2026-01-02T03:04:05Z'),
    });
    expect(seconds.time).toBe('2026-01-02T03:04:05.000Z');
    expect(millis.time).toBe('2026-01-02T03:04:05.000Z');
  });

  it('uses the current time when the message carries none', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-05-06T07:08:09.000Z'));
    expect(decoded({ body: json({}), routingKey: 'r', messageId: 'm' }).time).toBe(
      '2026-05-06T07:08:09.000Z',
    );
  });

  it("defaults source to 'unknown' and correlationid to the id", () => {
    const message = decoded({ body: json({}), routingKey: 'r', messageId: 'm-9' });
    expect(message.source).toBe('unknown');
    expect(message.correlationid).toBe('m-9');
    expect(message.causationid).toBeUndefined();
    expect(message.headers).toBeUndefined();
  });

  it('keeps a correlation id the producer set', () => {
    expect(
      decoded({ body: json({}), routingKey: 'r', messageId: 'm', correlationId: 'c' }).correlationid,
    ).toBe('c');
  });

  it('generates a distinct id for a message without messageId', () => {
    const first = decoded({ body: json({}), routingKey: 'r' });
    const second = decoded({ body: json({}), routingKey: 'r', messageId: '' });
    expect(first.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(second.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(first.id).not.toBe(second.id);
    expect(first.correlationid).toBe(first.id);
  });

  it.each([
    'application/json',
    'application/json; charset=utf-8',
    'Application/JSON',
    'application/cloudevents+json',
    'text/json',
  ])('accepts content type %s and keeps it as datacontenttype', (contentType) => {
    const message = decoded({ body: json({ a: 1 }), routingKey: 'r', messageId: 'm', contentType });
    expect(message.data).toEqual({ a: 1 });
    expect(message.datacontenttype).toBe(contentType);
  });

  it.each(['text/plain', 'application/octet-stream', 'application/xml'])(
    'fails content type %s with a reason and the attempt',
    (contentType) => {
      const delivery = failed({
        body: json({ a: 1 }),
        routingKey: 'r',
        contentType,
        headers: { [HEADER.attempt]: 2 },
      });
      expect(delivery.reason).toContain(contentType);
      expect(delivery.attempt).toBe(2);
    },
  );

  it('fails an empty body with a reason', () => {
    expect(failed({ body: new Uint8Array(0), routingKey: 'r' }).reason).toMatch(/empty/);
  });

  it('fails a body that is not JSON with a reason instead of throwing', () => {
    const delivery = failed({ body: Buffer.from('{not json'), routingKey: 'r', messageId: 'm' });
    expect(delivery.reason).toMatch(/not valid JSON/);
    expect(delivery.attempt).toBe(1);
  });

  it('decodes only the bytes of a view into a larger buffer', () => {
    const backing = Buffer.from('xxxx{"a":1}yyyy');
    const body = new Uint8Array(backing.buffer, backing.byteOffset + 4, 7);
    expect(decoded({ body, routingKey: 'r', messageId: 'm' }).data).toEqual({ a: 1 });
  });

  it('keeps string, number, boolean and Buffer user headers as strings and drops reserved ones', () => {
    const message = decoded({
      body: json({}),
      routingKey: 'r',
      messageId: 'm',
      headers: {
        tenant: 'acme',
        retries: 3,
        priority: 1.5,
        vip: true,
        draft: false,
        region: Buffer.from('eu'),
        nested: { a: 1 },
        missing: null,
        [HEADER.specversion]: '1.0',
        [HEADER.time]: '2026-01-01T00:00:00.000Z',
        [HEADER.attempt]: 2,
        [HEADER.routingKey]: 'x',
        'x-ferry-anything': 'y',
        'x-death': [{ count: 1 }],
        'x-first-death-queue': 'q',
        'x-last-death-reason': 'expired',
      },
    });
    expect(message.headers).toEqual({
      tenant: 'acme',
      retries: '3',
      priority: '1.5',
      vip: 'true',
      draft: 'false',
      region: 'eu',
    });
  });
});

describe('attemptOf', () => {
  it('reads the attempt header as a number or a numeric string', () => {
    expect(attemptOf({ [HEADER.attempt]: 4 })).toBe(4);
    expect(attemptOf({ [HEADER.attempt]: '5' })).toBe(5);
    expect(attemptOf({ [HEADER.attempt]: Buffer.from('6') })).toBe(6);
  });

  it('is 1 without headers, without the header, or with a value that is not a positive integer', () => {
    expect(attemptOf(undefined)).toBe(1);
    expect(attemptOf({})).toBe(1);
    for (const value of [0, -2, 1.5, 'x', '', null, true, Number.NaN]) {
      expect(attemptOf({ [HEADER.attempt]: value })).toBe(1);
    }
  });
});

describe('typeOf', () => {
  it('is the routing key without the override header', () => {
    expect(typeOf({ body: new Uint8Array(0), routingKey: 'order.created' })).toBe('order.created');
    expect(typeOf({ body: new Uint8Array(0), routingKey: 'order.created', headers: { a: 'b' } })).toBe(
      'order.created',
    );
  });

  it('is the x-ferry-routing-key header when present', () => {
    expect(
      typeOf({
        body: new Uint8Array(0),
        routingKey: 'retry',
        headers: { [HEADER.routingKey]: 'order.paid' },
      }),
    ).toBe('order.paid');
  });
});

describe('headers of a received message', () => {
  it("hands handlers the application's headers, not Ferry's nor the broker's", () => {
    const delivery = decodeWireMessage({
      body: Buffer.from('{}'),
      routingKey: 'order.paid',
      headers: {
        'x-ferry-attempt': 2,
        'x-ferry-whatever': 'w',
        'cloudEvents:custom': 'c',
        'x-death': [],
        'x-first-death-exchange': 'e',
        'x-last-death-queue': 'q',
        'x-delivery-count': 3,
        CC: Buffer.from('q'),
        tenant: 'acme',
        // A plain producer's own x- header: refused at publish by Ferry, but its producer's to send.
        'x-request-id': 'r-1',
      },
    });
    expect(delivery.ok && delivery.message.headers).toEqual({ tenant: 'acme', 'x-request-id': 'r-1' });
  });

  it('keeps from handlers exactly the names publishing refuses: not those that only start like one', () => {
    const own = {
      'x-deathly': 'a',
      'x-death-note': 'b',
      'x-delivery-count2': 'c',
      'x-delivery-countdown': 'd',
      'x-delays': 'e',
      'x-received-from-app': 'f',
    };
    const delivery = decodeWireMessage({
      body: Buffer.from('{}'),
      routingKey: 'order.paid',
      headers: {
        ...own,
        // Reserved in any case, as publishing refuses them.
        'X-Ferry-Attempt': 2,
        'CloudEvents:custom': 'c',
        'X-Death': 'd',
        'x-delay': 500,
        'x-received-from': 'shovel',
      },
    });
    expect(delivery.ok && delivery.message.headers).toEqual(own);
  });
});

describe('expiresat', () => {
  it('reads the expiresat extension attribute from its CloudEvents header, not as an application header', () => {
    const delivery = decodeWireMessage({
      body: Buffer.from('{}'),
      routingKey: 'offer.made',
      headers: { [HEADER.expiresat]: Buffer.from('2026-01-02T03:04:05.678Z'), tenant: 'acme' },
    });
    expect(delivery.ok && delivery.message.expiresat).toBe('2026-01-02T03:04:05.678Z');
    expect(delivery.ok && delivery.message.headers).toEqual({ tenant: 'acme' });
    const plain = decodeWireMessage({ body: Buffer.from('{}'), routingKey: 'offer.made' });
    expect(plain.ok && plain.message.expiresat).toBeUndefined();
  });
});
