import { describe, expect, it } from 'vitest';
import { isRequestBodyNotSerializableError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { server, client } = clientKit({ retry: { maxAttempts: 2, backoff: () => 20 } });

describe('ServiceClient byte bodies', () => {
  it('sends on every attempt the bytes the body held when the call was made', async () => {
    const s = await server();
    const c = client(s);
    const bodies: [string, () => { body: unknown; bytes: Uint8Array }][] = [
      ['ArrayBuffer', () => withBytes(new ArrayBuffer(4))],
      ['DataView', () => withBytes(new DataView(new ArrayBuffer(6), 1, 4))],
      ['Uint8Array', () => withBytes(new Uint8Array(4))],
      ['Uint16Array', () => withBytes(new Uint16Array(2))],
      ['Buffer', () => withBytes(Buffer.alloc(4))],
    ];
    for (const [kind, make] of bodies) {
      const { body, bytes } = make();
      bytes.set([0x61, 0x62, 0x63, 0x64]); // "abcd"
      s.clear().enqueue({ status: 503 }, { status: 200, body: {} });
      // The caller reuses its buffer at once, and again while the call waits to retry.
      const off = c.on('retry', () => bytes.fill(0x7a));
      const call = c.put('/bytes', body);
      bytes.fill(0x78);
      await call;
      off();
      expect(
        s.requests.map((request) => request.body),
        kind,
      ).toEqual(['abcd', 'abcd']);
    }
  });
});

describe('ServiceClient JSON bodies', () => {
  it('refuses an object whose toJSON() gives a Map or Set, which JSON would send as {}', async () => {
    const s = await server();
    const c = client(s);
    class Inventory {
      constructor(readonly stock: Map<string, number>) {}
      toJSON(): Map<string, number> {
        return this.stock;
      }
    }
    const tagged = { toJSON: () => new Set(['gift']) };
    for (const [body, kind] of [
      [new Inventory(new Map([['tea', 3]])), 'Map'],
      [tagged, 'Set'],
    ] as const) {
      const error = await rejection(c.post('/stock', body));
      expect(isRequestBodyNotSerializableError(error), `${kind}: ${String(error)}`).toBe(true);
      expect((error as Error).message).toMatch(new RegExp(`toJSON\\(\\).*${kind}`));
    }
    expect(s.requests).toHaveLength(0);
    // A toJSON() giving a JSON value is sent as that value, as before.
    class Tags extends Set<string> {
      toJSON(): string[] {
        return [...this];
      }
    }
    await c.post('/tags', new Tags(['a']));
    await c.post('/when', { toJSON: () => ({ at: new Date(0) }) });
    // A String object is its text in JSON, as a Number object is its number: sent, not refused.
    await c.post('/text', new String('abc'));
    expect(s.requests.map((request) => request.body)).toEqual([
      '["a"]',
      '{"at":"1970-01-01T00:00:00.000Z"}',
      '"abc"',
    ]);
  });

  it('refuses a Response, a Request or an Error, saying what to send instead', async () => {
    const s = await server();
    const c = client(s);
    class OrderRefused extends Error {
      readonly code = 'OUT_OF_STOCK';
    }
    const bodies: [unknown, RegExp][] = [
      [new Response('{"a":1}'), /Response.*response\.json\(\)/],
      [new Request('http://127.0.0.1/x', { method: 'POST', body: '{}' }), /Request.*request\.json\(\)/],
      [new Error('boom'), /Error.*message/],
      [new OrderRefused('no tea'), /OrderRefused.*message/],
    ];
    for (const [body, message] of bodies) {
      const error = await rejection(c.post('/x', body));
      expect(isRequestBodyNotSerializableError(error), String(error)).toBe(true);
      expect((error as Error).message).toMatch(message);
    }
    expect(s.requests).toHaveLength(0);
  });
});

/** A body and a byte view of its memory (what a caller holding the buffer can change). */
function withBytes(body: ArrayBuffer | ArrayBufferView): { body: unknown; bytes: Uint8Array } {
  const bytes = ArrayBuffer.isView(body)
    ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength)
    : new Uint8Array(body);
  return { body, bytes };
}
