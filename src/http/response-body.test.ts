import { describe, expect, it } from 'vitest';
import { type HttpError, isHttpError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { server, client } = clientKit({ retry: false });

const BYTES = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80]);

describe('ServiceClient answer bodies', () => {
  it('decodes an error body cut at maxResponseBytes, or JSON that is not, in the charset it names', async () => {
    const s = await server();
    const c = client(s, { maxResponseBytes: 10 });
    s.enqueue({
      status: 404,
      body: Buffer.from('é'.repeat(30), 'latin1'),
      headers: { 'content-type': 'text/plain; charset=iso-8859-1' },
    });
    const cut = await rejection(c.get('/missing'));
    expect(cut).toMatchObject({ status: 404, bodyTruncated: true, body: 'é'.repeat(10) });
    const wide = client(s);
    s.enqueue({
      status: 500,
      body: Buffer.from('{not json é', 'latin1'),
      headers: { 'content-type': 'application/json; charset=iso-8859-1' },
    });
    expect(await rejection(wide.get('/broken'))).toMatchObject({ status: 500, body: '{not json é' });
  });

  it('gives bytes of a type that is not text as a Buffer of the bytes sent, not text decoded as UTF-8', async () => {
    const s = await server();
    const c = client(s);
    for (const type of [
      'application/octet-stream',
      'image/png',
      'application/pdf',
      'application/x-protobuf',
    ]) {
      s.enqueue({ body: BYTES, headers: { 'content-type': type } });
      const body = await c.get('/file');
      expect(Buffer.isBuffer(body), type).toBe(true);
      expect(Buffer.compare(body as Buffer, BYTES), type).toBe(0);
    }
    // An error answer's body too.
    s.enqueue({ status: 404, body: BYTES });
    const error = await rejection(c.get('/missing'));
    expect(isHttpError(error)).toBe(true);
    expect(Buffer.compare((error as HttpError).body as Buffer, BYTES)).toBe(0);
  });

  it('decodes text in the charset the answer names, UTF-8 when it names none', async () => {
    const s = await server();
    const c = client(s);
    s.enqueue({
      body: Buffer.from('café', 'latin1'),
      headers: { 'content-type': 'text/plain; charset=ISO-8859-1' },
    });
    expect(await c.get('/latin1')).toBe('café');
    s.enqueue({ body: Buffer.from('café ☕'), headers: { 'content-type': 'text/plain' } });
    expect(await c.get('/utf8')).toBe('café ☕');
    s.enqueue({ body: Buffer.from('<a>é</a>'), headers: { 'content-type': 'application/xml' } });
    expect(await c.get('/xml')).toBe('<a>é</a>');
    // No content type: text, as before.
    s.enqueue({ body: Buffer.from('plain'), headers: { 'content-type': '' } });
    expect(await c.get('/none')).toBe('plain');
    s.enqueue({ body: Buffer.from('a: é'), headers: { 'content-type': 'application/vnd.api+yaml' } });
    expect(await c.get('/yaml')).toBe('a: é');
    // A charset Node does not know: UTF-8.
    s.enqueue({ body: Buffer.from('ok é'), headers: { 'content-type': 'text/plain; charset=x-unknown' } });
    expect(await c.get('/unknown-charset')).toBe('ok é');
  });

  it('reads JSON that starts with a byte-order mark (RFC 8259 lets a reader ignore it)', async () => {
    const s = await server();
    const c = client(s);
    s.enqueue({
      body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"ok":true}')]),
      headers: { 'content-type': 'application/json' },
    });
    expect(await c.get('/bom')).toEqual({ ok: true });
  });
});
