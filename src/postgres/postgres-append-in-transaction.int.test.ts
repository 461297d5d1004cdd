import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isInvalidEventError } from '../eventstore/errors.js';
import { EventStore } from '../eventstore/store.js';
import type { EventData, ExpectedVersion } from '../eventstore/types.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { sleep, waitFor } from '../testing/wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

async function openStore(): Promise<{
  store: EventStore;
  backend: PostgresEventStoreBackend;
  client: pg.Client;
}> {
  const schema = testSchemaName('ait');
  schemas.push(schema);
  const backend = new PostgresEventStoreBackend({ url: postgresTestUrl(), schema, logger: silentLogger });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  cleanups.push(() => store.close());
  const client = new pg.Client({ connectionString: postgresTestUrl() });
  await client.connect();
  cleanups.push(() => client.end());
  return { store, backend, client };
}

const ok = (over: Partial<Record<keyof EventData, unknown>> = {}): EventData =>
  ({ id: uuidv7(), type: 'T', data: { ok: 1 }, metadata: {}, ...over }) as EventData;

describe('appendInTransaction on the PostgreSQL backend', () => {
  it('refuses with INVALID_EVENT what store.append refuses, writing nothing', async () => {
    const { store, backend, client } = await openStore();
    const refused: [string, string, EventData[], ExpectedVersion][] = [
      ['stream id', 'acct-\uD800', [ok()], 'any'],
      ['stream id', 'acct-\uDBFF', [ok()], 'any'],
      ['stream id', 'x'.repeat(600), [ok()], 'any'],
      ['stream id', '', [ok()], 'any'],
      ['type', 's', [ok({ type: '' })], 'any'],
      ['id', 's', [ok({ id: 'not-a-uuid' })], 'any'],
      ['metadata', 's', [ok({ metadata: [1, 2] })], 'any'],
      ['metadata', 's', [ok({ metadata: new Date(0) })], 'any'],
      ['data', 's', [ok({ data: { b: 1n } })], 'any'],
      ['data', 's', [ok({ data: { note: 'a\u0000' } })], 'any'],
      ['expectedVersion', 's', [ok()], null as never],
      ['at least one event', 's', [], 'any'],
    ];
    for (const [field, streamId, events, expected] of refused) {
      await client.query('BEGIN');
      const error = await backend.appendInTransaction(client, streamId, events, expected).then(
        () => undefined,
        (e: unknown) => e,
      );
      await client.query('ROLLBACK');
      expect(isInvalidEventError(error), `${field}: ${String(error)}`).toBe(true);
      expect((error as Error).message, field).toContain(field);
    }
    const all = [];
    for await (const event of store.readAll()) all.push(event);
    expect(all).toEqual([]);
  });

  it('stores what store.append stores: the JSON round trip, lower-case id, in the caller transaction', async () => {
    const { store, backend, client } = await openStore();
    const id = uuidv7().toUpperCase();
    await client.query('BEGIN');
    const result = await backend.appendInTransaction(
      client,
      'acct-1',
      [
        {
          id,
          type: 'Opened',
          data: { n: Number.NaN, d: new Date(0), u: undefined },
          metadata: { who: 'me' },
        },
      ],
      'no_stream',
    );
    expect(await store.readStream('acct-1')).toEqual([]); // not committed yet
    await client.query('COMMIT');
    expect(result.nextExpectedVersion).toBe(0);
    const [event] = await store.readStream('acct-1');
    expect(event).toMatchObject({
      id: id.toLowerCase(),
      type: 'Opened',
      data: { n: null, d: '1970-01-01T00:00:00.000Z' },
      metadata: { who: 'me' },
    });
  });
});

describe('appendInTransaction: an append sent again', () => {
  it('returns the first result when every event is stored, refuses one with some stored, and the transaction goes on', async () => {
    const { store, backend, client } = await openStore();
    const first = [ok(), ok()];
    await client.query('BEGIN');
    const stored = await backend.appendInTransaction(client, 'again', first, 'no_stream');
    // Sent again in the same transaction, then with another expected version: the first result.
    expect(await backend.appendInTransaction(client, 'again', first, 'no_stream')).toEqual(stored);
    expect(await backend.appendInTransaction(client, 'again', [first[1]!], 7)).toEqual(stored);
    const some = await backend
      .appendInTransaction(client, 'again', [first[0]!, ok()], 1)
      .catch((e: unknown) => e);
    expect((some as { code?: string }).code).toBe('DUPLICATE_EVENT_ID');
    // Nothing of it aborted the transaction: a new event goes on and everything commits.
    const next = await backend.appendInTransaction(client, 'again', [ok()], 1);
    await client.query('COMMIT');
    expect(next.nextExpectedVersion).toBe(2);
    expect((await store.readStream('again')).map((e) => e.id)).toEqual([
      ...first.map((e) => e.id),
      expect.any(String),
    ]);
    // Committed, then sent again in another transaction: the first result still.
    await client.query('BEGIN');
    expect(await backend.appendInTransaction(client, 'again', first, 'no_stream')).toEqual(stored);
    await client.query('COMMIT');
    expect(await store.readStream('again')).toHaveLength(3);
  });

  it('says, when a concurrent transaction appending the same events committed first, that PostgreSQL aborted the transaction', async () => {
    const { store, backend, client } = await openStore();
    const other = new pg.Client({ connectionString: postgresTestUrl() });
    await other.connect();
    cleanups.push(() => other.end());
    const a = ok();
    for (const [stream, second] of [
      ['race-same', [a]],
      ['race-some', [a, ok()]],
    ] as const) {
      await client.query('BEGIN');
      await backend.appendInTransaction(client, stream, [a], 'any');
      await other.query('BEGIN');
      // Waits for the first transaction's rows, then meets them once it commits.
      const waiting = backend.appendInTransaction(other, stream, [...second], 'any').catch((e: unknown) => e);
      await sleep(200);
      await client.query('COMMIT');
      const error = (await waiting) as { code?: string; message?: string };
      expect(error.code).toBe(stream === 'race-same' ? 'CONCURRENCY_CONFLICT' : 'DUPLICATE_EVENT_ID');
      expect(error.message).toContain('PostgreSQL aborted this transaction: roll it back, then try again');
      if (stream === 'race-same') expect(error.message).toContain('every event of this append was stored');
      await other.query('ROLLBACK');
      expect((await store.readStream(stream)).map((e) => e.id)).toEqual([a.id]);
    }
  });

  it('appends new events in one statement on the events table (a unit of work waits for each)', async () => {
    const { backend, client } = await openStore();
    const texts: string[] = [];
    const query = client.query.bind(client);
    // Every statement the append sends on the caller's client.
    client.query = ((config: unknown, ...rest: unknown[]) => {
      texts.push(typeof config === 'string' ? config : String((config as { text?: string }).text));
      return (query as (...args: unknown[]) => unknown)(config, ...rest);
    }) as typeof client.query;
    await client.query('BEGIN');
    texts.length = 0;
    await backend.appendInTransaction(client, 'one-trip', [ok()], 'no_stream');
    await backend.appendInTransaction(client, 'one-trip', [ok(), ok()], 0);
    await client.query('COMMIT');
    expect(texts.filter((text) => /\.events\b/.test(text))).toHaveLength(2);
  });
});

describe('appendInTransaction: positions within one transaction', () => {
  it('gives each result a bigint position, the last of the append, as EventStore.append does', async () => {
    const { store, backend, client } = await openStore();
    await client.query('BEGIN');
    const first = await backend.appendInTransaction(client, 'p', [ok(), ok()], 'no_stream');
    const second = await backend.appendInTransaction(client, 'p', [ok()], 1);
    await client.query('COMMIT');
    expect(typeof first.position).toBe('bigint');
    expect(second.position - first.position).toBe(1n);
    const stored = await store.readStream('p');
    expect(stored.map((e) => e.position)).toEqual([first.position - 1n, first.position, second.position]);
  });

  it('refuses the append that would take one transaction past 65536 events, writing nothing of it', async () => {
    const { store, backend, client } = await openStore();
    const many = (n: number) => Array.from({ length: n }, () => ok());
    await client.query('BEGIN');
    for (let i = 0; i < 6; i++) await backend.appendInTransaction(client, `big-${i}`, many(10_000));
    await backend.appendInTransaction(client, 'big-6', many(5_536));
    // One more event would take a position of the next transaction id's.
    const refused = await backend.appendInTransaction(client, 'big-7', many(1)).catch((e: unknown) => e);
    expect(isInvalidEventError(refused)).toBe(true);
    expect(String(refused)).toContain('at most 65536 events');
    // The caller's transaction is intact: it commits what came before.
    await client.query('COMMIT');
    expect(await store.readStream('big-6')).toHaveLength(5_536);
    expect(await store.readStream('big-7')).toEqual([]);
    const positions = (await store.readStream('big-0')).map((e) => e.position >> 16n);
    const last = (await store.readStream('big-6')).map((e) => e.position >> 16n);
    expect(new Set([...positions, ...last]).size).toBe(1);
  }, 120_000);
});

describe('appendInTransaction wakes subscriptions when the caller commits', () => {
  // A poll interval far longer than the test: only the NOTIFY sent in the caller's transaction can
  // deliver in time. Before, these events waited for the subscriptions' next poll.
  it('in this process and in another, once the transaction commits; nothing of one rolled back', async () => {
    const { store, backend, client } = await openStore();
    const other = new PostgresEventStoreBackend({
      url: postgresTestUrl(),
      schema: backend.schema,
      logger: silentLogger,
    });
    await other.open();
    const elsewhere = new EventStore(other, { logger: silentLogger });
    cleanups.push(() => elsewhere.close());
    const here: string[] = [];
    const there: string[] = [];
    const subs = [
      store.subscribe({ name: 'here', idlePollMs: 600_000 }, (e) => void here.push(e.type)),
      elsewhere.subscribe({ name: 'there', idlePollMs: 600_000 }, (e) => void there.push(e.type)),
    ];
    await Promise.all(subs.map((s) => s.caughtUp()));
    await sleep(700); // both listening, and each store has seen the other listen

    await client.query('BEGIN');
    await backend.appendInTransaction(client, 'wake-1', [{ type: 'RolledBack', data: {} }]);
    await client.query('ROLLBACK');
    for (const type of ['First', 'Second']) {
      await client.query('BEGIN');
      await backend.appendInTransaction(client, `wake-${type}`, [{ type, data: {} }], 'no_stream');
      await sleep(200);
      expect(here, 'nothing before the commit').not.toContain(type);
      await client.query('COMMIT');
      await waitFor(() => here.includes(type) && there.includes(type), `${type} in both subscriptions`, 5000);
    }
    expect(here).toEqual(['First', 'Second']);
    expect(there).toEqual(['First', 'Second']);
  }, 30_000);
});
