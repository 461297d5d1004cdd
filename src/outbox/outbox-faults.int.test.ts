import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Message } from '../messaging/envelope.js';
import type { HandlerMiddleware } from '../messaging/middleware.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { createTestVhost, type TestVhost } from '../testing/rabbitmq.js';
import { sleep, waitFor } from '../testing/wait.js';
import { createOutbox, type Outbox } from './outbox.js';
import type { RelayOptions } from './relay-options.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

function freshSchema(): string {
  const schema = testSchemaName('obxf');
  schemas.push(schema);
  return schema;
}

async function vhost(): Promise<TestVhost> {
  const v = await createTestVhost('ferry-outbox');
  cleanups.push(() => v.dispose());
  return v;
}

async function bus(url: string, service: string): Promise<Bus> {
  const b = await createBus({
    url,
    service,
    logger: silentLogger,
    amqp: { reconnect: { initialDelayMs: 50, maxDelayMs: 500 } },
  });
  cleanups.push(() => b.close());
  return b;
}

/** A service's store and outbox on `schema`, publishing through `bus`. */
async function service(
  schema: string,
  bus: Bus,
  relay: RelayOptions | false,
): Promise<{ store: EventStore; outbox: Outbox }> {
  const backend = new PostgresEventStoreBackend({ url: postgresTestUrl(), schema, logger: silentLogger });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  cleanups.push(() => store.close());
  const outbox = await createOutbox({ store, bus, relay, logger: silentLogger });
  cleanups.push(() => outbox.close());
  return { store, outbox };
}

/** Runs SQL in a unit of work of `outbox` (its own transaction). */
function sql<R extends Record<string, unknown>>(outbox: Outbox, text: string, params?: unknown[]) {
  return outbox.unitOfWork((work) => work.query<R>(text, params));
}

/** Every delivery of a plain subscription, in the order the handler was entered. */
async function record(consumer: Bus, group: string): Promise<Message[]> {
  const arrivals: Message[] = [];
  await consumer.subscribe('order.#', (m) => void arrivals.push(m), { group, concurrency: 20 });
  return arrivals;
}

/** Counts every delivery that reaches a subscription, before its inbox looks at it. */
function counting(deliveries: Map<string, number>): HandlerMiddleware {
  return (next) => (message) => {
    deliveries.set(message.id, (deliveries.get(message.id) ?? 0) + 1);
    return next(message);
  };
}

function fixture(env: Record<string, string>): ChildProcess {
  const child = spawnFixture(fileURLToPath(new URL('./fixtures/outbox-process.ts', import.meta.url)), env);
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/**
 * Waits until `arrivals` holds everything the queue held before now: a marker published after the
 * outbox was flushed comes behind every message the relay published (one queue, first in first out).
 */
async function drained(producer: Bus, arrivals: readonly Message[]): Promise<void> {
  const marker = `marker-${Math.random()}`;
  await producer.publish('order.marker', { marker });
  await waitFor(
    () => arrivals.some((m) => (m.data as { marker?: string }).marker === marker),
    'the marker behind every published message',
    30_000,
  );
}

const unique = (messages: readonly Message[]) => new Set(messages.map((m) => m.id));

describe('transactional outbox on PostgreSQL and RabbitMQ under faults', () => {
  it('publishes every unit of work committed by a process SIGKILLed before its messages were relayed', async () => {
    // Must not be lost: the message of any unit of work that committed (its event is in the store).
    // Must not exist: a message whose unit of work did not commit.
    const schema = freshSchema();
    const v = await vhost();
    const consumer = await bus(v.url, 'audit');
    const arrivals = await record(consumer, 'audit');
    const child = fixture({
      PG_URL: postgresTestUrl(),
      PG_SCHEMA: schema,
      AMQP_URL: v.url,
      MODE: 'commit',
    });
    const committed = new Set<string>();
    onLines(child, (line) => {
      const [word, id] = line.split(' ');
      if (word === 'committed') committed.add(id!);
    });
    await waitFor(() => committed.size >= 300, 'units of work to commit', 30_000);
    await kill(child);
    await sleep(300);
    expect(arrivals).toEqual([]);

    const producer = await bus(v.url, 'orders');
    const { store, outbox } = await service(schema, producer, { leaseMs: 1000, pollIntervalMs: 200 });
    await waitFor(async () => (await outbox.backlog()).pending === 0, 'the outbox to drain', 30_000);
    await drained(producer, arrivals);

    const published = arrivals.filter((m) => m.type === 'order.placed');
    const ids = unique(published);
    expect([...committed].filter((id) => !ids.has(id))).toEqual([]);
    // Exactly the committed units of work: one message per stored event, none without one.
    const streams = new Set<number>();
    for await (const event of store.readAll()) streams.add((event.data as { i: number }).i);
    expect(new Set(published.map((m) => (m.data as { i: number }).i))).toEqual(streams);
    expect(ids.size).toBe(streams.size);
    expect(await outbox.backlog()).toEqual({
      pending: 0,
      awaitingSettlement: 0,
      failed: 0,
      scheduled: 0,
      oldestAgeMs: 0,
    });
  }, 60_000);

  it('delivers every message of a relay SIGKILLed mid-stream at least once, in order per key', async () => {
    // Must not be lost: any committed message. Per key, first deliveries keep commit order;
    // a duplicate is only a re-send of the same message.
    const schema = freshSchema();
    const v = await vhost();
    const consumer = await bus(v.url, 'audit');
    const arrivals = await record(consumer, 'audit');
    const child = fixture({
      PG_URL: postgresTestUrl(),
      PG_SCHEMA: schema,
      AMQP_URL: v.url,
      MODE: 'produce',
      COUNT: '2000',
      KEYS: '20',
      LEASE_MS: '1000',
      PUBLISH_DELAY_MS: '20',
    });
    const committed = new Set<string>();
    const unsent = new Set<string>();
    onLines(child, (line) => {
      const [word, id] = line.split(' ');
      if (word === 'committed') committed.add(id!);
      else if (word === 'sending') unsent.add(id!);
      else if (word === 'sent') unsent.delete(id!);
    });
    // Killed while it holds leases on rows it has not sent yet: only a takeover publishes them.
    await waitFor(
      () => arrivals.length >= 600 && unsent.size > 0,
      'the relay to publish part of the stream',
      30_000,
    );
    await kill(child);
    const before = arrivals.length;
    expect(before).toBeLessThan(2000);

    const producer = await bus(v.url, 'orders');
    const { outbox } = await service(schema, producer, { leaseMs: 1000, pollIntervalMs: 200 });
    // Rows the dead relay had leased are taken over once its lease ends.
    await waitFor(async () => (await outbox.backlog()).pending === 0, 'the outbox to drain', 30_000);
    await outbox.flush();
    await drained(producer, arrivals);

    const published = arrivals.filter((m) => m.type === 'order.placed');
    const ids = unique(published);
    expect([...committed].filter((id) => !ids.has(id))).toEqual([]);
    const first = new Map<string, Message>();
    for (const m of published) {
      const seen = first.get(m.id);
      if (seen === undefined) first.set(m.id, m);
      else expect(m.data).toEqual(seen.data);
    }
    const byKey = new Map<string, number[]>();
    for (const m of first.values()) {
      const { key, n } = m.data as { key: string; n: number };
      byKey.set(key, [...(byKey.get(key) ?? []), n]);
    }
    // Each key committed 0, 1, 2, … one after the other: what was delivered is a prefix, in order.
    for (const ns of byKey.values()) expect(ns).toEqual(ns.map((_, i) => i));
    expect(await outbox.backlog()).toEqual({
      pending: 0,
      awaitingSettlement: 0,
      failed: 0,
      scheduled: 0,
      oldestAgeMs: 0,
    });
  }, 60_000);

  it('re-sends a message confirmed by a relay SIGKILLed before it deleted the row, and the inbox applies it once', async () => {
    // Must not be lost: any message. Must not be applied twice: the consumer's state change of a
    // message the dead relay had already published (it is re-sent with the same id).
    const producerSchema = freshSchema();
    const consumerSchema = freshSchema();
    const v = await vhost();
    const consumerBus = await bus(v.url, 'inventory');
    const { outbox: inventory } = await service(consumerSchema, consumerBus, false);
    await sql(inventory, `CREATE TABLE "${consumerSchema}".reserved (message_id text, n int)`);
    const deliveries = new Map<string, number>();
    await consumerBus.subscribe(
      'order.placed',
      async (m, { work }) => {
        await work.query(`INSERT INTO "${consumerSchema}".reserved VALUES ($1, $2)`, [
          m.id,
          (m.data as { n: number }).n,
        ]);
      },
      { group: 'inventory', unitOfWork: inventory, middleware: [counting(deliveries)] },
    );

    const producer = await bus(v.url, 'orders');
    const { outbox: writer } = await service(producerSchema, producer, false);
    const ids: string[] = [];
    for (let n = 0; n < 50; n++) {
      ids.push(await writer.unitOfWork((work) => work.publish('order.placed', { n })));
    }
    const child = fixture({
      PG_URL: postgresTestUrl(),
      PG_SCHEMA: producerSchema,
      AMQP_URL: v.url,
      MODE: 'relay',
      LEASE_MS: '1000',
      KILL_AFTER: '10',
    });
    const confirmed: string[] = [];
    onLines(child, (line) => {
      const [word, id] = line.split(' ');
      if (word === 'confirmed') confirmed.push(id!);
    });
    const [, signal] = await once(child, 'exit');
    expect(signal).toBe('SIGKILL');
    expect(confirmed.length).toBeGreaterThanOrEqual(10);
    // The dead relay deleted nothing: every row is still in the outbox.
    expect((await writer.backlog()).pending).toBe(50);

    const { outbox: relay } = await service(producerSchema, producer, { leaseMs: 1000, pollIntervalMs: 200 });
    await waitFor(async () => (await relay.backlog()).pending === 0, 'the outbox to drain', 30_000);
    await waitFor(() => ids.every((id) => deliveries.has(id)), 'every message delivered', 30_000);
    await waitFor(
      () => confirmed.every((id) => deliveries.get(id)! >= 2),
      'the confirmed messages re-sent',
      30_000,
    );
    await relay.flush();
    await sleep(200);

    const rows = await sql<{ message_id: string; count: number }>(
      inventory,
      `SELECT message_id, count(*)::int AS count FROM "${consumerSchema}".reserved GROUP BY message_id`,
    );
    expect(rows.filter((r) => r.count !== 1)).toEqual([]);
    expect(new Set(rows.map((r) => r.message_id))).toEqual(new Set(ids));
  }, 60_000);

  it('delivers every message while the broker closes the relay’s connections, and empties the outbox', async () => {
    // Must not be lost: any committed message, whatever publishes the closed connections cut.
    const schema = freshSchema();
    const v = await vhost();
    const consumer = await bus(v.url, 'audit');
    const arrivals = await record(consumer, 'audit');
    const producer = await bus(v.url, 'orders');
    const { outbox } = await service(schema, producer, { publishTimeoutMs: 3000 });

    const ids: string[] = [];
    const closes: number[] = [];
    let next = 0;
    const writers = Array.from({ length: 8 }, async () => {
      while (next < 2000) {
        const n = next++;
        ids.push(
          await outbox.unitOfWork((work) => work.publish('order.placed', { n }, { key: `k-${n % 20}` })),
        );
        if (n > 0 && n % 500 === 0) closes.push(await v.closeConnections('fault test'));
      }
    });
    await Promise.all(writers);
    closes.push(await v.closeConnections('fault test'));
    // The connections were live when closed: the faults were real.
    expect(closes.filter((n) => n > 0).length).toBeGreaterThanOrEqual(3);

    await waitFor(
      () => ids.every((id) => arrivals.some((m) => m.id === id)) || unique(arrivals).size >= 2000,
      () => `every message delivered (${unique(arrivals).size}/2000)`,
      60_000,
    );
    const delivered = unique(arrivals);
    expect(ids.filter((id) => !delivered.has(id))).toEqual([]);
    await outbox.flush();
    expect(await outbox.backlog()).toEqual({
      pending: 0,
      awaitingSettlement: 0,
      failed: 0,
      scheduled: 0,
      oldestAgeMs: 0,
    });
  }, 90_000);

  it('publishes with two relays on one outbox each message once, in commit order per key', async () => {
    // Must not be lost: any message. Must not happen: a message published twice (leases do not
    // expire here), or a key's messages delivered out of the order their units of work committed.
    const schema = freshSchema();
    const v = await vhost();
    const consumer = await bus(v.url, 'audit');
    const arrivals = await record(consumer, 'audit');
    const busA = await bus(v.url, 'orders');
    const busB = await bus(v.url, 'orders');
    const a = await service(schema, busA, {});
    const b = await service(schema, busB, {});
    await sql(a.outbox, `CREATE TABLE "${schema}".balances (key text PRIMARY KEY, n int NOT NULL)`);
    await sql(a.outbox, `CREATE TABLE "${schema}".commits (message_id text PRIMARY KEY, key text, n int)`);
    await sql(
      a.outbox,
      `INSERT INTO "${schema}".balances SELECT 'k-' || i, 0 FROM generate_series(0, 49) AS i`,
    );

    // The balance row is locked from the UPDATE to the commit: its value is the commit order of the
    // key's units of work, wherever the message was written before it.
    let next = 0;
    const writers = Array.from({ length: 16 }, async (_, w) => {
      const outbox = w % 2 === 0 ? a.outbox : b.outbox;
      while (next < 2000) {
        next++;
        const key = `k-${Math.floor(Math.random() * 50)}`;
        await outbox.unitOfWork(async (work) => {
          const id = await work.publish('order.placed', { key }, { key });
          const [row] = await work.query<{ n: number }>(
            `UPDATE "${schema}".balances SET n = n + 1 WHERE key = $1 RETURNING n`,
            [key],
          );
          await work.query(`INSERT INTO "${schema}".commits VALUES ($1, $2, $3)`, [id, key, row!.n]);
        });
      }
    });
    await Promise.all(writers);
    await Promise.all([a.outbox.flush(), b.outbox.flush()]);
    await waitFor(async () => (await a.outbox.backlog()).pending === 0, 'the outbox to drain', 30_000);
    await drained(busA, arrivals);

    const commits = await sql<{ message_id: string; key: string; n: number }>(
      a.outbox,
      `SELECT message_id, key, n FROM "${schema}".commits`,
    );
    expect(commits).toHaveLength(2000);
    const order = new Map(commits.map((c) => [c.message_id, c.n]));
    const published = arrivals.filter((m) => m.type === 'order.placed');
    expect(published.length).toBe(2000);
    expect(unique(published)).toEqual(new Set(order.keys()));
    // Both relays took part, and neither published what the other did.
    expect(a.outbox.delivered).toBeGreaterThan(0);
    expect(b.outbox.delivered).toBeGreaterThan(0);
    expect(a.outbox.delivered + b.outbox.delivered).toBe(2000);
    const byKey = new Map<string, number[]>();
    for (const m of published) {
      const { key } = m.data as { key: string };
      byKey.set(key, [...(byKey.get(key) ?? []), order.get(m.id)!]);
    }
    const outOfOrder = [...byKey]
      .filter(([, ns]) => ns.some((n, i) => i > 0 && n < ns[i - 1]!))
      .map(([key]) => key);
    expect(outOfOrder).toEqual([]);
  }, 60_000);

  it('applies each message once in a transactional inbox while the broker closes the consumer’s connections', async () => {
    // Must not be lost: any message. Must not be applied twice: a message redelivered because its
    // acknowledgement was lost with the connection after its unit of work committed.
    const schema = freshSchema();
    const v = await vhost();
    const consumerBus = await bus(v.url, 'inventory');
    const { outbox } = await service(schema, consumerBus, false);
    await sql(outbox, `CREATE TABLE "${schema}".reserved (message_id text, n int)`);
    const deliveries = new Map<string, number>();
    let applied = 0;
    // While a close is under way, handlers wait between their insert and their commit, so that the
    // connection always goes with units of work in flight (rabbitmqctl can take longer than the
    // consumer needs for every message: a close of an idle consumer would test nothing).
    let gate: Promise<void> | undefined;
    let atGate = 0;
    await consumerBus.subscribe(
      'order.placed',
      async (m, { work }) => {
        await work.query(`INSERT INTO "${schema}".reserved VALUES ($1, $2)`, [
          m.id,
          (m.data as { n: number }).n,
        ]);
        if (gate === undefined) await sleep(5);
        else {
          atGate++;
          await gate;
          atGate--;
        }
        applied++;
      },
      { group: 'inventory', unitOfWork: outbox, concurrency: 16, middleware: [counting(deliveries)] },
    );
    const producer = await bus(v.url, 'orders');
    const ids = Array.from({ length: 2000 }, (_, n) => `order-${n}`);
    await Promise.all(ids.map((id, n) => producer.publish('order.placed', { n }, { id })));

    const closes: number[] = [];
    for (const share of [0.2, 0.45, 0.7]) {
      await waitFor(() => applied >= share * 2000, 'the consumer to make progress', 30_000);
      let open = () => {};
      gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      await waitFor(() => atGate > 0, 'a unit of work held open', 30_000);
      await sleep(100); // the others running arrive at the gate too
      closes.push(await v.closeConnections('fault test'));
      gate = undefined;
      open();
    }
    expect(closes.every((n) => n > 0)).toBe(true);
    await waitFor(
      () => ids.every((id) => deliveries.has(id)),
      () => `every message delivered (${deliveries.size}/2000)`,
      60_000,
    );
    await waitFor(
      async () =>
        (
          await sql<{ n: number }>(
            outbox,
            `SELECT count(DISTINCT message_id)::int AS n FROM "${schema}".reserved`,
          )
        )[0]!.n === 2000,
      'every message applied',
      30_000,
    );
    await sleep(300);

    // Redeliveries happened, and the inbox kept them from having any effect.
    expect([...deliveries.values()].some((n) => n > 1)).toBe(true);
    const rows = await sql<{ message_id: string; count: number }>(
      outbox,
      `SELECT message_id, count(*)::int AS count FROM "${schema}".reserved GROUP BY message_id`,
    );
    expect(rows.filter((r) => r.count !== 1)).toEqual([]);
    expect(rows).toHaveLength(2000);
  }, 60_000);
  it('flush() resolves only once every message committed before it is published, keys with several included', async () => {
    // Relied on: after `await outbox.flush()` nothing committed before the call still waits in the
    // outbox (orderly shutdown and tests use it; the restart above drains the outbox this way).
    const schema = freshSchema();
    const v = await vhost();
    const consumer = await bus(v.url, 'audit');
    await record(consumer, 'audit');
    const producer = await bus(v.url, 'orders');
    const { outbox: writer } = await service(schema, producer, false);
    for (let n = 0; n < 100; n++) {
      await writer.unitOfWork((work) => work.publish('order.placed', { n }, { key: `k-${n % 2}` }));
    }
    const { outbox } = await service(schema, producer, {});
    await outbox.flush();
    expect(await outbox.backlog()).toMatchObject({ pending: 0 });
  }, 30_000);
});
