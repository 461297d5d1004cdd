import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { ferryFastify } from '../http/server/fastify.js';
import { listenFastify } from '../http/server/fixtures/listen.js';
import type { ProblemLogger } from '../http/server/problem.js';
import { silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { createEventStore } from './create-event-store.js';
import { createIdempotencyStore, type OpenIdempotencyStore } from './create-idempotency-store.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-idempotency-e2e-'));
const schemas: string[] = [];
const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas(schemas);
});

const silent: ProblemLogger = { error: () => {} };
let files = 0;

/** One shared database for the instances of a test: a fresh SQLite file or PostgreSQL schema. */
const databases = {
  sqlite: () => `sqlite:${join(dir, `shared-${++files}.db`)}`,
  postgres: () => {
    const schema = testSchemaName('idem_e2e');
    schemas.push(schema);
    const url = new URL(postgresTestUrl());
    url.searchParams.set('schema', schema);
    return url.toString();
  },
};

async function openStore(url: string): Promise<OpenIdempotencyStore> {
  const store = await createIdempotencyStore({ url, logger: silentLogger, postgres: { poolSize: 3 } });
  closers.push(() => store.close());
  return store;
}

/** An instance of the service: its own Fastify app and its own connection to the shared database. */
async function startInstance(store: OpenIdempotencyStore, charges: Charges): Promise<string> {
  const app = Fastify();
  ferryFastify(app, { idempotency: { store }, logger: silent });
  app.post('/charges', async (req, reply) => {
    const run = ++charges.runs;
    await charges.gate;
    reply.code(201).header('location', `/charges/${run}`);
    return { charge: run, amount: (req.body as { amount: number }).amount };
  });
  return listenFastify(app, closers);
}

interface Charges {
  runs: number;
  gate?: Promise<void>;
}

async function post(base: string, key: string, amount: number) {
  const response = await request(`${base}/charges`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ amount }),
  });
  return {
    status: response.statusCode,
    replayed: response.headers['idempotent-replayed'],
    location: response.headers.location,
    body: Buffer.from(await response.body.arrayBuffer()),
  };
}

describe.each(Object.keys(databases) as (keyof typeof databases)[])(
  'an Idempotency-Key across instances and restarts on %s',
  (kind) => {
    it('is replayed by another instance without running the handler, refused there while running, and kept after a restart', async () => {
      const url = databases[kind]();
      const charges: Charges = { runs: 0 };
      const a = await startInstance(await openStore(url), charges);
      const b = await startInstance(await openStore(url), charges);

      const first = await post(a, 'order-1', 42);
      expect(first).toMatchObject({ status: 201, replayed: undefined, location: '/charges/1' });
      const replayed = await post(b, 'order-1', 42);
      expect(replayed).toMatchObject({ status: 201, replayed: 'true', location: '/charges/1' });
      expect(replayed.body.equals(first.body)).toBe(true);
      expect(charges.runs).toBe(1);
      // Another body under the same key, at either instance.
      expect((await post(b, 'order-1', 43)).status).toBe(422);

      // While A's handler runs, B refuses the same request.
      let open!: () => void;
      charges.gate = new Promise((resolve) => {
        open = resolve;
      });
      const slow = post(a, 'order-2', 7);
      await waitFor(() => charges.runs === 2, "A's handler to start");
      const refused = await post(b, 'order-2', 7);
      expect(refused.status).toBe(409);
      expect(JSON.parse(refused.body.toString())).toMatchObject({ code: 'IDEMPOTENCY_KEY_IN_USE' });
      open();
      expect((await slow).status).toBe(201);
      // The answer is stored just after it is sent: a retry in between is still refused, never run.
      let retried = await post(b, 'order-2', 7);
      while (retried.status === 409) retried = await post(b, 'order-2', 7);
      expect(retried).toMatchObject({ status: 201, replayed: 'true' });
      expect(charges.runs).toBe(2);

      // Every instance stops; a new one on the same database still replays.
      for (const close of closers.splice(0).reverse()) await close();
      const restarted = await startInstance(await openStore(url), charges);
      const afterRestart = await post(restarted, 'order-1', 42);
      expect(afterRestart).toMatchObject({ status: 201, replayed: 'true', location: '/charges/1' });
      expect(afterRestart.body.equals(first.body)).toBe(true);
      expect(charges.runs).toBe(2);
      expect((await post(restarted, 'order-3', 1)).replayed).toBeUndefined();
      expect(charges.runs).toBe(3);
    }, 30_000);
  },
);

describe('createIdempotencyStore', () => {
  it('keeps the keys in an open event store, and leaves that store open when closed', async () => {
    const url = databases.sqlite();
    const events = await createEventStore({ url });
    closers.push(() => events.close());
    const store = await createIdempotencyStore({ eventStore: events, namespace: 'orders' });
    const begun = await store.begin('k', 'f');
    expect(begun.state).toBe('new');
    await store.close();
    // Still usable: the event store owns the connection.
    expect(await store.begin('k', 'f')).toEqual({ state: 'in-progress' });
    const other = await openStore(url);
    expect(await other.begin('k', 'f')).toMatchObject({ state: 'new' }); // another namespace
  });

  it('gives a memory store for memory:// and for a memory event store', async () => {
    const store = await openStore('memory://');
    expect((await store.begin('k', 'f')).state).toBe('new');
    expect(await store.begin('k', 'f')).toEqual({ state: 'in-progress' });
    const events = await createEventStore({ url: 'memory://idem' });
    const fromEvents = await createIdempotencyStore({ eventStore: events, ttlMs: 1000 });
    expect((await fromEvents.begin('k', 'f')).state).toBe('new');
    await events.close();
  });

  it.each([
    ['memory', () => 'memory://'],
    ['sqlite', databases.sqlite],
    ['postgres', databases.postgres],
  ])('deletes expired keys on demand with deleteExpired() (%s)', async (_kind, makeUrl) => {
    const store = await createIdempotencyStore({ url: makeUrl(), ttlMs: 200, logger: silentLogger });
    closers.push(() => store.close());
    const answer = { status: 201, headers: {}, body: '{}' };
    for (const key of ['a', 'b']) {
      const begun = await store.begin(key, 'f');
      await store.complete(key, answer, begun.state === 'new' ? begun.claim : undefined);
    }
    expect(await store.deleteExpired()).toBe(0);
    expect((await store.begin('a', 'f')).state).toBe('replay');
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await store.deleteExpired()).toBe(2);
    expect(await store.deleteExpired()).toBe(0);
    expect((await store.begin('a', 'f')).state).toBe('new');
  });

  it('refuses bad options before opening anything, and an unreachable database as STORE_UNAVAILABLE', async () => {
    await expect(createIdempotencyStore({})).rejects.toSatisfy(isInvalidOptionsError);
    const events = await createEventStore({ url: 'memory://' });
    await expect(createIdempotencyStore({ url: 'memory://', eventStore: events })).rejects.toSatisfy(
      isInvalidOptionsError,
    );
    const path = join(dir, `never-${++files}.db`);
    await expect(createIdempotencyStore({ url: `sqlite:${path}`, leaseMs: 0 })).rejects.toSatisfy(
      isInvalidOptionsError,
    );
    await expect(
      createIdempotencyStore({ url: `sqlite:${path}`, ttlMs: undefined, namespace: 7 as unknown as string }),
    ).rejects.toSatisfy(isInvalidOptionsError);
    // Misspelt, these were dropped (`namespce`: every service shared the default namespace), or
    // refused in createEventStore's name.
    await expect(
      createIdempotencyStore({ url: `sqlite:${path}`, namespce: 'a' } as never),
    ).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/^createIdempotencyStore has no option "namespce": it takes url, /),
    });
    await expect(
      createIdempotencyStore({ url: 'postgres://127.0.0.1:1/x', postgres: { poolsize: 2 } } as never),
    ).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(/^createIdempotencyStore postgres has no option "poolsize"/),
    });
    await expect(createIdempotencyStore('memory://' as never)).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
    });
    const { existsSync } = await import('node:fs');
    expect(existsSync(path)).toBe(false);
    await expect(
      createIdempotencyStore({ url: 'postgres://ferry:s3cr3t@127.0.0.1:1/test', logger: silentLogger }),
    ).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.not.stringContaining('s3cr3t') });
  });
});

describe('createIdempotencyStore driver loading', () => {
  /** Drivers loaded after opening and closing a store on `url`, in a fresh Node process. */
  async function driversLoadedFor(url: string): Promise<string> {
    const source = `
      import { createRequire } from 'node:module';
      import { createIdempotencyStore } from 'ferry';
      const store = await createIdempotencyStore({ url: ${JSON.stringify(url)} });
      await store.begin('k', 'f');
      await store.close();
      const cache = Object.keys(createRequire(import.meta.url).cache);
      console.log(['amqplib', 'pg', 'better-sqlite3'].filter((d) => cache.some((k) => k.includes('/node_modules/' + d + '/'))).join(' ') || 'none');
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--conditions=ferry-source', '--import', 'tsx', '--input-type=module', '-e', source],
      { cwd: new URL('../..', import.meta.url).pathname, timeout: 30_000 },
    );
    return stdout.trim();
  }

  it('loads no driver for memory://, and better-sqlite3 alone for sqlite:', async () => {
    expect(await driversLoadedFor('memory://')).toBe('none');
    expect(await driversLoadedFor(`sqlite:${join(dir, `probe-${++files}.db`)}`)).toBe('better-sqlite3');
  }, 60_000);
});
