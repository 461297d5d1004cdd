import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createEventStore } from '../../connect/create-event-store.js';
import { silentLogger } from '../../logging/logger.js';
import { holdWriteLock } from '../../sqlite/fixtures/write-lock-holder.js';
import { SqliteEventStoreBackend } from '../../sqlite/sqlite-backend.js';
import { waitFor } from '../../testing/wait.js';
import { ferryFastify } from './fastify.js';
import { type Closers, listenFastify } from './fixtures/listen.js';

// The fault: another process holds the SQLite file's write lock longer than the store waits for it
// (`busyTimeoutMs`). What must hold: the request is answered 503 problem+json (nothing was written:
// try again later), not a 500 that looks like a bug; nothing is stored; once the lock is free the
// same request succeeds.
const dir = mkdtempSync(join(tmpdir(), 'ferry-http-busy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const closers: Closers = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

describe('a service whose SQLite file another process keeps locked', () => {
  it('answers 503 STORE_BUSY problem+json to a write, stores nothing, and writes once the lock is free', async () => {
    const path = join(dir, 'busy.db');
    const store = await createEventStore({
      backend: new SqliteEventStoreBackend({ path, busyTimeoutMs: 300 }),
      logger: silentLogger,
    });
    closers.push(() => store.close());
    const app = Fastify();
    ferryFastify(app, { logger: silentLogger });
    app.post('/things', async (_request, reply) => {
      await store.append('thing-1', [{ type: 'ThingMade', data: {} }]);
      return reply.code(201).send({ made: true });
    });
    const url = await listenFastify(app, closers);
    const holder = await holdWriteLock(path, 2500, cleanups);
    const busy = await request(`${url}/things`, { method: 'POST' });
    expect(busy.statusCode).toBe(503);
    expect(busy.headers['content-type']).toBe('application/problem+json');
    expect(await busy.body.json()).toMatchObject({ status: 503, code: 'STORE_BUSY' });
    await waitFor(holder.released, 'the other process to release the lock', 10_000);
    expect(await store.readStream('thing-1')).toEqual([]);
    const made = await request(`${url}/things`, { method: 'POST' });
    expect(made.statusCode).toBe(201);
    await made.body.dump();
    expect(await store.readStream('thing-1')).toHaveLength(1);
  }, 30_000);
});
