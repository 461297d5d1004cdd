import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { listenNode } from './fixtures/listen.js';
import { type CapturedResponse, captureResponse } from './response-capture.js';

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/** A gate the test opens: settle waits for `pass()` or `fail(error)`. */
function testGate() {
  const captured: CapturedResponse[] = [];
  let pass!: () => void;
  let fail!: (error: unknown) => void;
  const decided = new Promise<void>((resolve, reject) => {
    pass = resolve;
    fail = reject;
  });
  const refused: unknown[] = [];
  return {
    captured,
    refused,
    pass: () => pass(),
    fail: (error: unknown) => fail(error),
    gate: {
      settle(response: CapturedResponse) {
        captured.push(response);
        return decided;
      },
      refuse(error: unknown) {
        refused.push(error);
      },
    },
  };
}

/** A server whose one handler is `handle`, with the capture installed first. */
async function serve(
  setup: (res: ServerResponse) => void,
  handle: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<string> {
  const server = createServer((req, res) => {
    res.setHeader('x-correlation-id', 'c-1');
    setup(res);
    handle(req, res);
  });
  return listenNode(server, closers);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('captureResponse', () => {
  it('holds an answer sent whole until it is settled, and reports it sent meanwhile as Node would', async () => {
    const t = testGate();
    const seen: Record<string, unknown> = {};
    const url = await serve(
      (res) => captureResponse(res, 1000, t.gate),
      (_req, res) => {
        res.writeHead(201, 'Made', { 'content-type': 'text/plain', Location: '/x/1' });
        seen.afterHead = [res.headersSent, res.statusCode, res.statusMessage];
        seen.setAfterHead = catchCode(() => res.setHeader('x-late', '1'));
        seen.secondHead = catchCode(() => res.writeHead(500));
        res.end('made', () => {
          seen.endCallback = true;
        });
        seen.afterEnd = [res.headersSent, res.writableEnded];
        seen.setAfterEnd = catchCode(() => res.removeHeader('x-correlation-id'));
      },
    );
    let arrived = false;
    const answer = request(`${url}/`).then(async (response) => {
      arrived = true;
      return { status: response.statusCode, headers: response.headers, body: await response.body.text() };
    });
    await expect.poll(() => t.captured.length).toBe(1);
    await sleep(100);
    expect(arrived).toBe(false);
    expect(seen).toEqual({
      afterHead: [true, 201, 'Made'],
      setAfterHead: 'ERR_HTTP_HEADERS_SENT',
      secondHead: 'ERR_HTTP_HEADERS_SENT',
      afterEnd: [true, true],
      setAfterEnd: 'ERR_HTTP_HEADERS_SENT',
    });
    expect(t.captured[0]).toMatchObject({
      status: 201,
      headers: { 'content-type': 'text/plain', location: '/x/1', 'x-correlation-id': 'c-1' },
    });
    expect(t.captured[0]?.body?.toString()).toBe('made');
    t.pass();
    const { status, headers, body } = await answer;
    expect([status, headers['content-type'], headers.location, body]).toEqual([
      201,
      'text/plain',
      '/x/1',
      'made',
    ]);
    await expect.poll(() => seen.endCallback).toBe(true);
  });

  it('sends a streamed answer as it is written, and holds only its end', async () => {
    const t = testGate();
    let queued = 0;
    const url = await serve(
      (res) => captureResponse(res, 1000, t.gate),
      (_req, res) => {
        res.setHeader('content-type', 'text/plain');
        res.write('first;');
        setTimeout(() => {
          res.end('last');
          // A write after the end (a bug of the handler) comes after it, as Node would take it.
          res.on('error', () => {
            queued++;
          });
          res.write('after the end');
        }, 50);
      },
    );
    const response = await request(`${url}/`);
    expect(response.statusCode).toBe(200);
    const chunks: string[] = [];
    const body = (async () => {
      for await (const chunk of response.body) chunks.push(String(chunk));
    })();
    await expect.poll(() => chunks.join('')).toBe('first;');
    await expect.poll(() => t.captured.length).toBe(1);
    await sleep(100);
    expect(chunks.join('')).toBe('first;');
    t.pass();
    await body;
    expect(chunks.join('')).toBe('first;last');
    expect(t.captured[0]?.body?.toString()).toBe('first;last');
    await expect.poll(() => queued).toBe(1);
  });

  it("replaces a held answer refused by the gate: the answer's status and headers go, earlier ones stay", async () => {
    const t = testGate();
    const url = await serve(
      (res) =>
        captureResponse(res, 1000, {
          settle: t.gate.settle,
          refuse(error) {
            res.statusCode = 500;
            res.setHeader('content-type', 'application/problem+json');
            res.end(JSON.stringify({ status: 500, detail: String(error) }));
          },
        }),
      (_req, res) => {
        res.setHeader('set-cookie', 'session=1');
        res.writeHead(204, { etag: '"1"' });
        res.end();
      },
    );
    const answer = request(`${url}/`);
    await expect.poll(() => t.captured.length).toBe(1);
    t.fail(new Error('store down'));
    const response = await answer;
    expect(response.statusCode).toBe(500);
    expect(response.headers['content-type']).toBe('application/problem+json');
    expect(response.headers['x-correlation-id']).toBe('c-1');
    expect(response.headers['set-cookie']).toBeUndefined();
    expect(response.headers.etag).toBeUndefined();
    // A 204's bodilessness does not carry over to the problem.
    expect(await response.body.json()).toEqual({ status: 500, detail: 'Error: store down' });
  });

  it('cuts a streamed answer refused by the gate short', async () => {
    const t = testGate();
    const url = await serve(
      (res) => captureResponse(res, 1000, t.gate),
      (_req, res) => {
        res.write('first;');
        res.end('last');
      },
    );
    const response = await request(`${url}/`);
    const body = response.body.text();
    await expect.poll(() => t.captured.length).toBe(1);
    t.fail(new Error('store down'));
    await expect(body).rejects.toThrow();
    expect(t.refused).toEqual([]);
  });

  it('refuses an invalid status or header at once, as Node does', async () => {
    const t = testGate();
    const thrown: unknown[] = [];
    const url = await serve(
      (res) => captureResponse(res, 1000, t.gate),
      (_req, res) => {
        thrown.push(catchCode(() => res.writeHead(42)));
        thrown.push(catchCode(() => res.writeHead(200, { 'bad name': 'x' })));
        thrown.push(catchCode(() => res.writeHead(200, { 'x-ok': 'line\nbreak' })));
        res.writeHead(200, ['x-list', 'a', 'content-type', 'text/plain']).end('ok');
      },
    );
    const answer = request(`${url}/`);
    await expect.poll(() => t.captured.length).toBe(1);
    t.pass();
    const response = await answer;
    expect(thrown).toEqual(['ERR_HTTP_INVALID_STATUS_CODE', 'ERR_INVALID_HTTP_TOKEN', 'ERR_INVALID_CHAR']);
    expect([response.statusCode, response.headers['x-list'], await response.body.text()]).toEqual([
      200,
      'a',
      'ok',
    ]);
    expect(t.captured[0]?.headers).toMatchObject({ 'x-list': 'a', 'content-type': 'text/plain' });
  });
});

function catchCode(call: () => unknown): unknown {
  try {
    call();
    return undefined;
  } catch (error) {
    return (error as { code?: unknown }).code;
  }
}
