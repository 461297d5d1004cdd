import { describe, expect, it } from 'vitest';
import { type HttpError, isHttpError } from './errors.js';
import { clientKit } from './fixtures/client-kit.js';
import { rejection } from './fixtures/rejection.js';

const { server, client } = clientKit({
  maxResponseBytes: 1000,
  retry: { maxAttempts: 3, backoff: () => 10 },
});

const BIG = 'x'.repeat(10_000);

describe('ServiceClient error answers larger than maxResponseBytes', () => {
  it('rejects with the HttpError of their status, the body cut and bodyTruncated set', async () => {
    const s = await server();
    const c = client(s);
    s.enqueue({ status: 404, body: BIG });
    const error = await rejection(c.get('/missing'));
    expect(isHttpError(error), String(error)).toBe(true);
    const { status, body, bodyTruncated } = error as HttpError;
    expect({ status, bodyTruncated }).toEqual({ status: 404, bodyTruncated: true });
    expect(body).toBe('x'.repeat(1000));
    // A problem document cut short is no JSON: its text is kept, and no problem is read from it.
    s.enqueue({ status: 409, problem: { title: 'Conflict', detail: BIG } });
    expect(await rejection(c.post('/orders', {}, { retry: false }))).toMatchObject({
      status: 409,
      bodyTruncated: true,
      problem: undefined,
    });
    // request() resolves the answer, marked likewise; a whole one is not marked.
    s.enqueue({ status: 400, body: BIG }, { status: 400, body: 'short' });
    expect(await c.request({ method: 'GET', path: '/bad' })).toMatchObject({
      status: 400,
      bodyTruncated: true,
    });
    expect(await c.request({ method: 'GET', path: '/bad' })).not.toHaveProperty('bodyTruncated');
    // The client goes on calling on the same origin.
    s.enqueue({ status: 200, body: { ok: true } });
    expect(await c.get('/after')).toEqual({ ok: true });
  });

  it('retries and counts them as their status would be', async () => {
    const s = await server();
    const c = client(s, {
      breaker: { minimumVolume: 4, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
    });
    const responses: number[] = [];
    c.on('response', (event) => responses.push(event.status));
    s.enqueue({ status: 503, body: BIG }, { status: 200, body: { ok: true } });
    expect(await c.get('/flaky')).toEqual({ ok: true });
    expect(responses).toEqual([503, 200]);
    // 4xx do not count against the breaker, cut or not.
    s.setDefault({ status: 404, body: BIG });
    for (let i = 0; i < 6; i++) expect(await rejection(c.get('/gone'))).toMatchObject({ status: 404 });
    expect(c.breakers()[0]!.state).toBe('closed');
    // 5xx do.
    s.setDefault({ status: 500, body: BIG });
    for (let i = 0; i < 6; i++) await rejection(c.get('/broken', { retry: false }));
    expect(c.breakers()[0]!.state).toBe('open');
  });

  it('still fails a 2xx answer larger than maxResponseBytes with RESPONSE_TOO_LARGE', async () => {
    const s = await server();
    const c = client(s);
    s.enqueue({ status: 200, body: BIG });
    expect(await rejection(c.get('/big'))).toMatchObject({ code: 'RESPONSE_TOO_LARGE', limit: 1000 });
  });
});
