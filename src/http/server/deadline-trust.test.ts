import { createServer } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceClient } from '../client.js';
import { ferryContext, ferryErrors } from './express.js';
import { ferryFastify } from './fastify.js';
import { listenFastify, listenNode } from './fixtures/listen.js';
import type { RequestContextOptions } from './request-context.js';

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

const silent = { error: () => {} };

/** A dependency that takes 300 ms to answer. */
async function slowDependency(): Promise<string> {
  return listenNode(
    createServer((_req, res) => {
      void sleep(300).then(() => {
        res.setHeader('content-type', 'application/json');
        res.end('{"ok":true}');
      });
    }),
    closers,
  );
}

/** A service with Ferry's middleware whose handler calls the dependency with a ServiceClient. */
const services = [
  {
    name: 'fastify',
    async start(options: RequestContextOptions, dependency: ServiceClient): Promise<string> {
      const app = Fastify();
      ferryFastify(app, { ...options, logger: silent });
      app.get('/orders', async () => dependency.get('/'));
      return listenFastify(app, closers);
    },
  },
  {
    name: 'express',
    async start(options: RequestContextOptions, dependency: ServiceClient): Promise<string> {
      const app = express();
      app.use(ferryContext(options));
      app.get('/orders', async (_req, res) => {
        res.json(await dependency.get('/'));
      });
      app.use(ferryErrors({ logger: silent }));
      return listenNode(createServer(app), closers);
    },
  },
];

describe.each(services)('deadline trust with $name', (service) => {
  async function start(options: RequestContextOptions): Promise<string> {
    const dependency = new ServiceClient(await slowDependency(), {
      name: 'dependency',
      retry: false,
      timeout: 5000,
    });
    closers.push(() => dependency.close());
    return service.start(options, dependency);
  }

  async function get(url: string, headers: Record<string, string>): Promise<number> {
    const response = await request(`${url}/orders`, { headers });
    await response.body.text();
    return response.statusCode;
  }

  it('lets any caller cut the outgoing calls short by default', async () => {
    const url = await start({});
    expect(await get(url, { 'x-deadline-ms': '150' })).toBe(504);
  });

  it('raises a short incoming deadline to minDeadlineMs', async () => {
    const url = await start({ minDeadlineMs: 2000 });
    expect(await get(url, { 'x-deadline-ms': '150' })).toBe(200);
    expect(await get(url, { 'x-deadline-ms': '0' })).toBe(200);
  });

  it('ignores the deadline of callers it does not trust', async () => {
    expect(await get(await start({ trustDeadline: false }), { 'x-deadline-ms': '150' })).toBe(200);
    const url = await start({ trustDeadline: (req) => req.headers['x-caller'] === 'inside' });
    expect(await get(url, { 'x-deadline-ms': '150' })).toBe(200);
    expect(await get(url, { 'x-deadline-ms': '150', 'x-caller': 'inside' })).toBe(504);
  });
});
