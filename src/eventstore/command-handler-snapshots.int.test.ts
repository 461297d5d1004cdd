import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../logging/logger.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { SqliteEventStoreBackend } from '../sqlite/sqlite-backend.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import type { EventStoreBackend } from './backend.js';
import { CommandHandler, type CommandHandlerSnapshotOptions } from './command-handler.js';
import type { Decider } from './decider.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { isSnapshotNotSerializableError } from './snapshot-errors.js';
import { EventStore } from './store.js';

// Snapshots of states that are not plain JSON, on every backend (each stores snapshots as JSON).

const dir = mkdtempSync(join(tmpdir(), 'ferry-snapshots-'));
const schemas: string[] = [];
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas(schemas);
});

const backends: [string, () => EventStoreBackend][] = [
  ['memory', () => new MemoryEventStoreBackend()],
  ['sqlite', () => new SqliteEventStoreBackend({ path: join(dir, `${testSchemaName('s')}.db`) })],
  [
    'postgres',
    () => {
      const schema = testSchemaName('snap');
      schemas.push(schema);
      return new PostgresEventStoreBackend({
        url: postgresTestUrl(),
        schema,
        poolSize: 2,
        logger: silentLogger,
      });
    },
  ],
];

interface Cart {
  readonly items: ReadonlyMap<string, number>;
  readonly since: Date | null;
}
type CartCommand = { readonly type: 'Add'; readonly sku: string; readonly at: string };
type CartEvent = { readonly type: 'Added'; readonly data: { readonly sku: string; readonly at: string } };

function cartDecider(evolved: string[] = []): Decider<CartCommand, CartEvent, Cart> {
  return {
    initialState: () => ({ items: new Map(), since: null }),
    evolve(state, event) {
      evolved.push(event.data.sku);
      const items = new Map(state.items);
      items.set(event.data.sku, (items.get(event.data.sku) ?? 0) + 1);
      return { items, since: state.since ?? new Date(event.data.at) };
    },
    decide: (command) => ({ type: 'Added', data: { sku: command.sku, at: command.at } }),
  };
}

const add = (sku: string): CartCommand => ({ type: 'Add', sku, at: '2026-01-02T03:04:05.000Z' });

const cartSerializer: Pick<CommandHandlerSnapshotOptions, 'serialize' | 'deserialize'> = {
  serialize: (state: Cart) => ({ items: [...state.items], since: state.since?.toISOString() ?? null }),
  deserialize: (stored) => {
    const { items, since } = stored as { items: [string, number][]; since: string | null };
    return { items: new Map(items), since: since === null ? null : new Date(since) };
  },
};

describe.each(backends)(
  'CommandHandler snapshots of a state that is not plain JSON (%s)',
  (_name, backend) => {
    const stores: EventStore[] = [];
    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    });
    async function open(): Promise<EventStore> {
      const b = backend();
      await b.open();
      const store = new EventStore(b, { logger: silentLogger });
      stores.push(store);
      return store;
    }

    it('does not save a snapshot that would not load back equal, reports it, and the stream stays usable', async () => {
      const store = await open();
      const errors: unknown[] = [];
      const carts = new CommandHandler(store, cartDecider(), {
        snapshots: { every: 2, schemaVersion: 1 },
        onSnapshotError: (error, streamId) => void errors.push([error, streamId]),
      });
      for (const sku of ['tea', 'tea', 'jam', 'bread', 'tea']) await carts.handle('cart-1', add(sku));
      expect(await store.loadSnapshot('cart-1')).toBeUndefined();
      expect(errors).toHaveLength(2); // at versions 1 and 3
      const [error, streamId] = errors[0] as [unknown, string];
      expect(streamId).toBe('cart-1');
      expect(isSnapshotNotSerializableError(error)).toBe(true);
      expect(error).toMatchObject({ code: 'SNAPSHOT_NOT_SERIALIZABLE', streamId: 'cart-1', version: 1 });
      const { state, version } = await carts.load('cart-1');
      expect(version).toBe(4);
      expect(state.items).toEqual(
        new Map([
          ['tea', 3],
          ['jam', 1],
          ['bread', 1],
        ]),
      );
      expect(state.since).toEqual(new Date('2026-01-02T03:04:05.000Z'));
    });

    it('refuses a state with a bigint, and one with an undefined property, through onSnapshotError', async () => {
      const store = await open();
      const errors: unknown[] = [];
      const decider: Decider<{ type: 'Go' }, { type: 'Went' }, Record<string, unknown>> = {
        initialState: () => ({}),
        evolve: (state) => ('n' in state ? { n: 1n } : { n: 1, note: undefined }),
        decide: () => ({ type: 'Went' }),
      };
      const handler = new CommandHandler(store, decider, {
        snapshots: { every: 1, schemaVersion: 1 },
        onSnapshotError: (error) => void errors.push(error),
      });
      await handler.handle('x', { type: 'Go' });
      await handler.handle('x', { type: 'Go' });
      expect(errors.map(isSnapshotNotSerializableError)).toEqual([true, true]);
      expect(await store.loadSnapshot('x')).toBeUndefined();
    });

    it('reports a state no backend stores (a lone surrogate, NUL, too deep) as SNAPSHOT_NOT_SERIALIZABLE, as any other', async () => {
      const store = await open();
      const errors: unknown[] = [];
      let deep: unknown = 'leaf';
      for (let i = 0; i < 120; i++) deep = [deep];
      const states: unknown[] = [{ note: 'a\uD800b' }, { note: 'a\u0000b' }, { deep }];
      const decider: Decider<
        { type: 'Go'; kind: number },
        { type: 'Went'; data: { kind: number } },
        unknown
      > = {
        initialState: () => ({}),
        evolve: (_state, event) => states[event.data.kind],
        decide: (command) => ({ type: 'Went', data: { kind: command.kind } }),
      };
      const handler = new CommandHandler(store, decider, {
        snapshots: { every: 1, schemaVersion: 1 },
        onSnapshotError: (error) => void errors.push(error),
      });
      for (let kind = 0; kind < 3; kind++) await handler.handle(`odd-${kind}`, { type: 'Go', kind });
      // The store refused them with INVALID_EVENT, which the hook was not said to get.
      expect(errors.map((e) => (e as { code?: string }).code)).toEqual([
        'SNAPSHOT_NOT_SERIALIZABLE',
        'SNAPSHOT_NOT_SERIALIZABLE',
        'SNAPSHOT_NOT_SERIALIZABLE',
      ]);
      for (let kind = 0; kind < 3; kind++) expect(await store.loadSnapshot(`odd-${kind}`)).toBeUndefined();
    });

    it('stores it through serialize and loads it through deserialize', async () => {
      const store = await open();
      const errors: unknown[] = [];
      const snapshots = { every: 2, schemaVersion: 1, ...cartSerializer };
      const carts = new CommandHandler(store, cartDecider(), {
        snapshots,
        onSnapshotError: (error) => void errors.push(error),
      });
      for (const sku of ['tea', 'tea', 'jam', 'bread', 'tea']) await carts.handle('cart-1', add(sku));
      expect(errors).toEqual([]);
      expect(await store.loadSnapshot('cart-1')).toMatchObject({
        version: 3,
        state: {
          items: [
            ['tea', 2],
            ['jam', 1],
            ['bread', 1],
          ],
          since: '2026-01-02T03:04:05.000Z',
        },
      });
      const evolved: string[] = [];
      const fresh = new CommandHandler(store, cartDecider(evolved), { snapshots });
      const { state, version } = await fresh.load('cart-1');
      expect(evolved).toEqual(['tea']); // only the event after the snapshot
      expect(version).toBe(4);
      expect(state).toEqual({
        items: new Map([
          ['tea', 3],
          ['jam', 1],
          ['bread', 1],
        ]),
        since: new Date('2026-01-02T03:04:05.000Z'),
      });
      expect(state.items).toBeInstanceOf(Map);
      expect(state.since).toBeInstanceOf(Date);
    });

    it('does not save what a lossy serializer gives, and ignores a snapshot deserialize cannot read', async () => {
      const store = await open();
      const errors: unknown[] = [];
      const lossy = new CommandHandler(store, cartDecider(), {
        snapshots: {
          every: 2,
          schemaVersion: 1,
          serialize: (state: Cart) => ({ items: [...state.items], since: null }), // forgets `since`
          deserialize: cartSerializer.deserialize!,
        },
        onSnapshotError: (error) => void errors.push(error),
      });
      await lossy.handle('cart-1', add('tea'));
      await lossy.handle('cart-1', add('jam'));
      expect(errors.map(isSnapshotNotSerializableError)).toEqual([true]);
      expect(await store.loadSnapshot('cart-1')).toBeUndefined();

      await new CommandHandler(store, cartDecider(), {
        snapshots: { every: 2, schemaVersion: 1, ...cartSerializer },
      }).handle('cart-2', add('tea'));
      await new CommandHandler(store, cartDecider(), {
        snapshots: { every: 2, schemaVersion: 1, ...cartSerializer },
      }).handle('cart-2', add('jam'));
      expect(await store.loadSnapshot('cart-2')).toBeDefined();
      const unreadable = new Error('unknown snapshot shape');
      const reported: unknown[] = [];
      const strict = new CommandHandler(store, cartDecider(), {
        snapshots: {
          every: 2,
          schemaVersion: 1,
          serialize: cartSerializer.serialize!,
          deserialize: () => {
            throw unreadable;
          },
        },
        onSnapshotError: (error, streamId) => void reported.push([error, streamId]),
      });
      const { state, version } = await strict.load('cart-2');
      expect(version).toBe(1);
      expect(state.items).toEqual(
        new Map([
          ['tea', 1],
          ['jam', 1],
        ]),
      );
      expect(reported).toEqual([[unreadable, 'cart-2']]);
    });
  },
);
