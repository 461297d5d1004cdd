import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import Fastify from 'fastify';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { BODY_GRACE_MS, listen } from './listen.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const agents: Agent[] = [];

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.destroy()));
});

describe('listen', () => {
  it('answers a client that sent its whole request, then closed its sending side (half-close), and then closes', async () => {
    // Must not happen: the handler runs (an order placed) and the answer is never sent, as Node does
    // by default (nc -N, socat and some proxies half-close after the request).
    const app = Fastify();
    const handled: string[] = [];
    app.post('/orders', async (request) => {
      await sleep(50);
      handled.push(JSON.stringify(request.body));
      return { placed: true };
    });
    app.get('/fast', async () => ({ ok: true }));
    const url = new URL(await listen(app));
    try {
      for (const raw of [
        'POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"n":1}',
        'GET /fast HTTP/1.1\r\nHost: x\r\n\r\n',
      ]) {
        const socket = connect(Number(url.port), url.hostname);
        await once(socket, 'connect');
        socket.end(raw);
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        await once(socket, 'close');
        const answer = Buffer.concat(chunks).toString('utf8');
        expect(answer, raw).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
        expect(answer, raw).toMatch(/\{"(placed|ok)":true\}$/);
      }
      expect(handled).toEqual(['{"n":1}']);
    } finally {
      await app.close();
    }
  });

  it('lets close() end once the answers in flight are out, without waiting on their keep-alive connections', async () => {
    const app = Fastify();
    app.get('/slow', async () => {
      await sleep(300);
      return { ok: true };
    });
    const url = await listen(app);
    // A client that keeps connections open as long as the server allows (Fastify: 72 s).
    const agent = new Agent({ keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 });
    agents.push(agent);
    const answers = Array.from({ length: 5 }, () => request(`${url}/slow`, { dispatcher: agent }));
    await sleep(100);

    const started = Date.now();
    const closed = app.close().then(() => Date.now() - started);
    for (const answer of await Promise.all(answers)) {
      expect(answer.statusCode).toBe(200);
      expect(answer.headers.connection).toBe('close');
      expect(await answer.body.json()).toEqual({ ok: true });
    }
    expect(await closed).toBeLessThan(2000);
  });

  it('cuts at close the connections that never sent a whole request, or its body, and answers the request being handled', async () => {
    const app = Fastify();
    const handled: string[] = [];
    app.get('/slow', async () => {
      await sleep(300);
      return { ok: true };
    });
    app.post('/orders', async () => {
      handled.push('order');
      return { placed: true };
    });
    const url = await listen(app);
    const { port } = new URL(url);
    const open = async (bytes: string): Promise<Socket> => {
      const socket = connect(Number(port), '127.0.0.1');
      await once(socket, 'connect');
      if (bytes !== '') socket.write(bytes);
      socket.on('error', () => {});
      return socket;
    };
    const silent = await open(''); // a browser's preconnect
    const halfHead = await open('GET /slow HTTP/1.1\r\nHost: x\r\n');
    const halfBody = await open(
      'POST /orders HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{"a":',
    );
    const agent = new Agent({ keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 });
    agents.push(agent);
    const inFlight = request(`${url}/slow`, { dispatcher: agent });
    await sleep(100);

    const started = Date.now();
    const closedAt = (socket: Socket) => once(socket, 'close').then(() => Date.now() - started);
    const cuts = Promise.all([silent, halfHead, halfBody].map(closedAt));
    const closed = app.close().then(() => Date.now() - started);
    const answer = await inFlight;
    expect(answer.statusCode).toBe(200);
    expect(await answer.body.json()).toEqual({ ok: true });
    const [silentCut, halfHeadCut, halfBodyCut] = await cuts;
    // Nothing asked: cut at once. A body still arriving: given its grace, then cut.
    expect(silentCut).toBeLessThan(BODY_GRACE_MS / 2);
    expect(halfHeadCut).toBeLessThan(BODY_GRACE_MS / 2);
    expect(halfBodyCut).toBeGreaterThanOrEqual(BODY_GRACE_MS - 50);
    expect(halfBodyCut).toBeLessThan(BODY_GRACE_MS + 1000);
    expect(await closed).toBeLessThan(BODY_GRACE_MS + 1500);
    expect(handled).toEqual([]);
  });

  it('takes in, at close, a request body that arrives within its grace', async () => {
    const app = Fastify();
    app.post('/orders', async (request) => ({ placed: request.body }));
    const url = await listen(app);
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(
      'POST /orders HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a"',
    );
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    await sleep(100);
    const closed = app.close();
    await sleep(BODY_GRACE_MS / 2);
    socket.write(':1}');
    await once(socket, 'close');
    await closed;
    const text = Buffer.concat(received).toString('utf8');
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text).toContain('{"placed":{"a":1}}');
  });

  it('sends, at close, the answers to every request pipelined on a connection whose handler ran', async () => {
    const app = Fastify();
    const handled: number[] = [];
    app.post<{ Body: { n: number } }>('/orders', async (request) => {
      await sleep(200 - request.body.n * 100); // the second ends first: its answer waits for the first's
      handled.push(request.body.n);
      return { placed: request.body.n };
    });
    const url = await listen(app);
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    await once(socket, 'connect');
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    const post = (n: number) =>
      `POST /orders HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"n":${n}}`;
    socket.write(post(1) + post(2));
    await sleep(50);
    await app.close();
    if (!socket.destroyed) await once(socket, 'close');
    const text = Buffer.concat(received).toString('utf8');
    expect(handled.sort()).toEqual([1, 2]);
    // Both answers, in order (then the connection is closed).
    expect(text.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
    expect(text.indexOf('{"placed":1}')).toBeLessThan(text.indexOf('{"placed":2}'));
    expect(text.indexOf('{"placed":1}')).toBeGreaterThan(0);
  });

  it.each([
    ['Fastify as it comes', () => Fastify()],
    [
      'the services’ setup (ferryFastify)',
      () => {
        const app = Fastify({ ...ferryFastifyOptions() });
        ferryFastify(app);
        return app;
      },
    ],
  ])(
    'runs no handler for a request sent behind an answer marked close, while it is being written: %s',
    async (_setup, make) => {
      const app = make();
      const handled: string[] = [];
      let answerGate: () => void = () => {};
      const gate = new Promise<void>((resolve) => {
        answerGate = resolve;
      });
      app.get('/stream', async (_request, reply) => {
        await gate;
        // The body trickles: the answer, marked close, is still being written when the next request lands.
        const body = new PassThrough();
        body.write('first part;');
        setTimeout(() => body.end('last part'), 400);
        return reply.type('text/plain').send(body);
      });
      app.post('/orders', async () => {
        handled.push('order');
        return { placed: true };
      });
      const url = await listen(app);
      const socket = connect(Number(new URL(url).port), '127.0.0.1');
      await once(socket, 'connect');
      socket.on('error', () => {});
      const received: Buffer[] = [];
      let sentBehind = false;
      socket.on('data', (chunk: Buffer) => {
        received.push(chunk);
        const text = Buffer.concat(received).toString('utf8');
        if (!sentBehind && /\r\nconnection: close\r\n/i.test(text) && text.includes('first part;')) {
          sentBehind = true;
          socket.write(
            'POST /orders HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}',
          );
        }
      });
      socket.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n');
      await sleep(50);
      const closed = app.close();
      await sleep(50);
      answerGate();
      if (!socket.destroyed) await once(socket, 'close');
      await closed;
      const text = Buffer.concat(received).toString('utf8');
      expect(sentBehind).toBe(true);
      // The answer marked close arrived whole; the request behind it was not carried out (and so not
      // answered: the connection closed, which tells its client it may send it elsewhere).
      expect(text).toContain('last part');
      expect(handled).toEqual([]);
      expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    },
  );
});
