import Fastify from 'fastify';
import { request } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../../connect/create-bus.js';
import { createEventStore } from '../../connect/create-event-store.js';
import { silentLogger } from '../../logging/logger.js';
import { createOutbox } from '../../outbox/outbox.js';
import { FaultProxy } from '../../testing/fault-proxy.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../../testing/postgres.js';
import { ferryFastify } from './fastify.js';
import { type Closers, listenFastify } from './fixtures/listen.js';
import type { ProblemLogger } from './problem.js';

// The fault: the database goes away for this test's connections (a proxy in front of PostgreSQL
// resets them and refuses new ones, as a stopped server does), then comes back. What must hold: a request that needs it is answered 503
// problem+json (try again later), not a 500 that looks like a bug; nothing is stored by a request
// answered 503; once the database is back, the same requests succeed.
const schemas: string[] = [];
afterAll(() => dropSchemas(schemas));

const closers: Closers = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/**
 * A service's event store and outbox on a schema of its own, reached through a proxy the test takes
 * down and up.
 */
async function serviceBehindProxy() {
  const url = new URL(postgresTestUrl());
  const proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) || 5432 });
  closers.push(() => proxy.close());
  const schema = testSchemaName('unavailable');
  schemas.push(schema);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  url.searchParams.set('schema', schema);
  const store = await createEventStore({ url: url.toString(), logger: silentLogger });
  closers.push(() => store.close());
  const bus = await createBus({ url: 'memory://', service: 'orders', logger: silentLogger });
  closers.push(() => bus.close());
  const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
  closers.push(() => outbox.close());
  return { proxy, schema, store, outbox };
}

describe('a service whose PostgreSQL database is down', () => {
  it('answers 503 STORE_UNAVAILABLE problem+json to reads and writes that need it, stores nothing then, and serves again once it is back', async () => {
    const { proxy, store, outbox } = await serviceBehindProxy();
    const logged: string[] = [];
    const logger: ProblemLogger = {
      error: (message, fields) => void logged.push(`${message}: ${String(fields?.error)}`),
    };
    const app = Fastify();
    ferryFastify(app, { logger });
    app.get<{ Params: { id: string } }>('/orders/:id', async (req) => ({
      events: (await store.readStream(`order-${req.params.id}`)).length,
    }));
    app.post<{ Params: { id: string } }>('/orders/:id', async (req, reply) => {
      await outbox.append(`order-${req.params.id}`, [{ type: 'OrderPlaced', data: {} }], {
        messages: [{ type: 'order.created', data: { orderId: req.params.id } }],
      });
      return reply.code(201).send({ id: req.params.id });
    });
    const url = await listenFastify(app, closers);

    await proxy.down();
    try {
      for (const [method, id] of [
        ['GET', 'a'],
        ['POST', 'b'],
      ] as const) {
        const res = await request(`${url}/orders/${id}`, { method });
        const body = (await res.body.json()) as Record<string, unknown>;
        expect(res.statusCode, `${method} ${JSON.stringify(logged)}`).toBe(503);
        expect(res.headers['content-type']).toBe('application/problem+json');
        expect(body).toMatchObject({ status: 503, code: 'STORE_UNAVAILABLE', instance: `/orders/${id}` });
        expect(String(body.detail)).toMatch(/unavailable; try again later/);
      }
      // The operator reads what failed.
      expect(logged).toHaveLength(2);
      for (const line of logged) {
        expect(line).toMatch(/^a dependency failed while serving a request: StoreUnavailableError: /);
      }
    } finally {
      await proxy.up();
    }

    // Back: the order refused with 503 was not stored, the same request now is.
    const read = await request(`${url}/orders/b`);
    expect(read.statusCode).toBe(200);
    expect(await read.body.json()).toEqual({ events: 0 });
    expect((await request(`${url}/orders/b`, { method: 'POST' })).statusCode).toBe(201);
    expect(await (await request(`${url}/orders/b`)).body.json()).toEqual({ events: 1 });
  }, 60_000);

  it('answers 500, not 503 "try again later", when the connection breaks while the unit of work commits: it may have been kept', async () => {
    const { proxy, schema, outbox } = await serviceBehindProxy();
    // A deferred trigger makes COMMIT itself take 1.5 s: the connection is cut while it runs.
    await outbox.unitOfWork((work) =>
      work.query(`
        CREATE TABLE "${schema}".orders (ref text);
        CREATE FUNCTION "${schema}".slow() RETURNS trigger LANGUAGE plpgsql
          AS $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON "${schema}".orders
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".slow();`),
    );
    const logged: string[] = [];
    const app = Fastify();
    ferryFastify(app, { logger: { error: (message) => void logged.push(message) } });
    let failure: unknown;
    app.post('/orders', async (_req, reply) => {
      try {
        await outbox.unitOfWork((work) => work.query(`INSERT INTO "${schema}".orders VALUES ('r-1')`));
      } catch (error) {
        failure = error;
        throw error;
      }
      return reply.code(201).send({});
    });
    const url = await listenFastify(app, closers);

    const cut = setTimeout(() => proxy.reset(), 700);
    const res = await request(`${url}/orders`, { method: 'POST' });
    clearTimeout(cut);
    const body = (await res.body.json()) as { code?: string };
    expect(failure).toMatchObject({ code: 'STORE_UNAVAILABLE', outcomeUnknown: true });
    expect(res.statusCode).toBe(500);
    expect(body.code).toBe('OUTCOME_UNKNOWN');
    expect(res.headers['x-ferry-no-retry']).toBeUndefined();
    expect(logged).toEqual(['a write whose outcome is unknown while serving a request']);
  }, 60_000);
});
