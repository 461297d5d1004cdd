import Fastify from 'fastify';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { listen } from './listen.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const agents: Agent[] = [];

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.destroy()));
});

describe('listen', () => {
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
});
