import { afterEach, describe, expect, it, vi } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { silentLogger } from '../logging/logger.js';
import {
  CommandHandler,
  type CommandHandlerOptions,
  DEFAULT_COMMAND_HANDLER_OPTIONS,
} from './command-handler.js';
import type { Decider } from './decider.js';
import { ConcurrencyError, isConcurrencyError } from './errors.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';
import type { AppendOptions, AppendResult, EventData } from './types.js';

// A small order aggregate, the kind of decider the handler is for.

interface Item {
  readonly sku: string;
  readonly quantity: number;
}

type OrderCommand =
  | { readonly type: 'PlaceOrder'; readonly customerId: string; readonly items?: readonly Item[] }
  | { readonly type: 'AddItem'; readonly item: Item }
  | { readonly type: 'Confirm' };

type OrderEvent =
  | { readonly type: 'OrderPlaced'; readonly data: { readonly customerId: string } }
  | { readonly type: 'ItemAdded'; readonly data: Item }
  | { readonly type: 'OrderConfirmed'; readonly data: { readonly itemCount: number } };

interface OrderState {
  readonly status: 'none' | 'open' | 'confirmed';
  readonly customerId: string | null;
  readonly items: readonly Item[];
}

class OrderError extends Error {
  constructor(
    readonly code: 'ORDER_NOT_PLACED' | 'ORDER_ALREADY_PLACED' | 'ORDER_CONFIRMED' | 'ORDER_EMPTY',
    message: string,
  ) {
    super(message);
    this.name = 'OrderError';
  }
}

const orderDecider: Decider<OrderCommand, OrderEvent, OrderState> = {
  initialState: () => ({ status: 'none', customerId: null, items: [] }),
  evolve(state, event) {
    switch (event.type) {
      case 'OrderPlaced':
        return { ...state, status: 'open', customerId: event.data.customerId };
      case 'ItemAdded':
        return { ...state, items: [...state.items, event.data] };
      case 'OrderConfirmed':
        return { ...state, status: 'confirmed' };
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'PlaceOrder':
        if (state.status !== 'none')
          throw new OrderError('ORDER_ALREADY_PLACED', 'the order is already placed');
        return [
          { type: 'OrderPlaced', data: { customerId: command.customerId } },
          ...(command.items ?? []).map((item): OrderEvent => ({ type: 'ItemAdded', data: item })),
        ];
      case 'AddItem':
        if (state.status === 'none') throw new OrderError('ORDER_NOT_PLACED', 'there is no such order');
        if (state.status === 'confirmed')
          throw new OrderError('ORDER_CONFIRMED', 'a confirmed order cannot change');
        return { type: 'ItemAdded', data: command.item };
      case 'Confirm':
        if (state.status === 'none') throw new OrderError('ORDER_NOT_PLACED', 'there is no such order');
        if (state.status === 'confirmed') return []; // confirming twice is a no-op
        if (state.items.length === 0)
          throw new OrderError('ORDER_EMPTY', 'an order needs items to be confirmed');
        return { type: 'OrderConfirmed', data: { itemCount: state.items.length } };
    }
  },
};

const place: OrderCommand = { type: 'PlaceOrder', customerId: 'c-1' };
const addItem = (sku: string, quantity = 1): OrderCommand => ({ type: 'AddItem', item: { sku, quantity } });

/** The order decider, counting the events its evolve is handed. */
function countingDecider(): { decider: typeof orderDecider; evolved: () => number } {
  let count = 0;
  return {
    decider: {
      ...orderDecider,
      evolve: (state, event) => {
        count++;
        return orderDecider.evolve(state, event);
      },
    },
    evolved: () => count,
  };
}

/** A store where another writer appends to the stream just before each append of the handler. */
class InterferingStore extends EventStore {
  interferences: number;
  attempts = 0;
  constructor(interferences = Number.POSITIVE_INFINITY) {
    super(new MemoryEventStoreBackend(), { logger: silentLogger });
    this.interferences = interferences;
  }
  override async append(
    streamId: string,
    events: readonly EventData[],
    options?: AppendOptions,
  ): Promise<AppendResult> {
    this.attempts++;
    if (this.interferences > 0) {
      this.interferences--;
      await super.append(streamId, [{ type: 'ItemAdded', data: { sku: 'other-writer', quantity: 1 } }]);
    }
    return super.append(streamId, events, options);
  }
}

const stores: EventStore[] = [];
function newStore(): EventStore {
  const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
  stores.push(store);
  return store;
}

afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(stores.splice(0).map((s) => s.close()));
});

/** A placed order with `count` events in all (OrderPlaced, then ItemAdded), one command each. */
async function buildOrder(
  handler: CommandHandler<OrderCommand, OrderEvent, OrderState>,
  streamId: string,
  count: number,
) {
  await handler.handle(streamId, place);
  for (let i = 1; i < count; i++) await handler.handle(streamId, addItem(`sku-${i}`));
}

describe('CommandHandler', () => {
  describe('handle', () => {
    it('appends the decided events, expecting the version it loaded', async () => {
      const store = newStore();
      const append = vi.spyOn(store, 'append');
      const orders = new CommandHandler(store, orderDecider);

      const placed = await orders.handle('order-1', place);
      const added = await orders.handle('order-1', addItem('apple', 3));

      expect(append.mock.calls.map((call) => call[2])).toEqual([
        { expectedVersion: 'no_stream' },
        { expectedVersion: 0 },
      ]);
      expect(placed.nextExpectedVersion).toBe(0);
      expect(placed.events).toMatchObject([
        { streamId: 'order-1', version: 0, type: 'OrderPlaced', data: { customerId: 'c-1' } },
      ]);
      expect(added.nextExpectedVersion).toBe(1);
      expect(added.events).toMatchObject([
        { version: 1, type: 'ItemAdded', data: { sku: 'apple', quantity: 3 } },
      ]);
      const stored = await store.readStream('order-1');
      expect(stored.map((e) => e.type)).toEqual(['OrderPlaced', 'ItemAdded']);
      expect(added.events[0]?.id).toBe(stored[1]?.id);
    });

    it('appends every event of a decision, in one append', async () => {
      const store = newStore();
      const append = vi.spyOn(store, 'append');
      const orders = new CommandHandler(store, orderDecider);
      const result = await orders.handle('order-1', {
        ...place,
        items: [
          { sku: 'a', quantity: 1 },
          { sku: 'b', quantity: 2 },
        ],
      });
      expect(append).toHaveBeenCalledTimes(1);
      expect(result.events.map((e) => [e.version, e.type])).toEqual([
        [0, 'OrderPlaced'],
        [1, 'ItemAdded'],
        [2, 'ItemAdded'],
      ]);
      expect(result.nextExpectedVersion).toBe(2);
    });

    it('returns the state after the command, the same state load rebuilds', async () => {
      const orders = new CommandHandler(newStore(), orderDecider);
      await orders.handle('order-1', place);
      await orders.handle('order-1', addItem('apple', 3));
      const result = await orders.handle('order-1', { type: 'Confirm' });
      const expected: OrderState = {
        status: 'confirmed',
        customerId: 'c-1',
        items: [{ sku: 'apple', quantity: 3 }],
      };
      expect(result.state).toEqual(expected);
      expect(await orders.load('order-1')).toEqual({ state: expected, version: 2 });
    });

    it('adds the given metadata to every appended event', async () => {
      const orders = new CommandHandler(newStore(), orderDecider);
      const { events } = await orders.handle(
        'order-1',
        { ...place, items: [{ sku: 'a', quantity: 1 }] },
        { metadata: { userId: 'u-7' } },
      );
      expect(events.map((e) => e.metadata.userId)).toEqual(['u-7', 'u-7']);
    });

    it('appends nothing and returns the current state when the command decides nothing', async () => {
      const store = newStore();
      const orders = new CommandHandler(store, orderDecider);
      await orders.handle('order-1', place);
      await orders.handle('order-1', addItem('apple'));
      const confirmed = await orders.handle('order-1', { type: 'Confirm' });
      const append = vi.spyOn(store, 'append');

      const again = await orders.handle('order-1', { type: 'Confirm' });

      expect(append).not.toHaveBeenCalled();
      expect(again).toEqual({ state: confirmed.state, events: [], nextExpectedVersion: 2 });
    });

    it('lets a domain error of decide propagate unchanged and appends nothing', async () => {
      const store = newStore();
      const orders = new CommandHandler(store, orderDecider);
      await orders.handle('order-1', place);
      await orders.handle('order-1', addItem('apple'));
      await orders.handle('order-1', { type: 'Confirm' });
      const append = vi.spyOn(store, 'append');

      const failure = orders.handle('order-1', addItem('pear'));

      await expect(failure).rejects.toBeInstanceOf(OrderError);
      await expect(failure).rejects.toMatchObject({ code: 'ORDER_CONFIRMED' });
      expect(append).not.toHaveBeenCalled();
      expect(await store.readStream('order-1')).toHaveLength(3);
    });

    it('rethrows the very error object decide threw', async () => {
      const boom = new OrderError('ORDER_EMPTY', 'boom');
      const orders = new CommandHandler(newStore(), {
        ...orderDecider,
        decide: () => {
          throw boom;
        },
      });
      await expect(orders.handle('order-1', place)).rejects.toBe(boom);
    });

    it('runs concurrent commands on one stream through retries: all succeed, none lost', async () => {
      const store = newStore();
      // Each retry loses only to an append that landed meanwhile: 20 writers need at most 19 retries.
      const orders = new CommandHandler(store, orderDecider, { maxRetries: 19 });
      await orders.handle('order-1', place);
      const append = vi.spyOn(store, 'append');

      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => orders.handle('order-1', addItem(`sku-${i}`))),
      );

      expect(append.mock.calls.length).toBeGreaterThan(20); // there were conflicts, and they were retried
      expect(results.map((r) => r.nextExpectedVersion).sort((a, b) => a - b)).toEqual(
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      const stored = await store.readStream('order-1');
      expect(stored.map((e) => e.version)).toEqual(Array.from({ length: 21 }, (_, i) => i));
      const { state, version } = await orders.load('order-1');
      expect(version).toBe(20);
      expect(state.items.map((item) => item.sku).sort()).toEqual(
        Array.from({ length: 20 }, (_, i) => `sku-${i}`).sort(),
      );
    });

    it('reloads and decides again on the fresh state after a conflict', async () => {
      const store = new InterferingStore(0);
      stores.push(store);
      const decide = vi.fn(orderDecider.decide);
      const orders = new CommandHandler(store, { ...orderDecider, decide });
      await orders.handle('order-1', place);
      decide.mockClear();
      store.attempts = 0;
      store.interferences = 1;

      const result = await orders.handle('order-1', addItem('apple'));

      expect(store.attempts).toBe(2);
      expect(decide).toHaveBeenCalledTimes(2);
      expect(decide.mock.calls[0]?.[1].items).toEqual([]);
      expect(decide.mock.calls[1]?.[1].items).toEqual([{ sku: 'other-writer', quantity: 1 }]);
      expect(result.nextExpectedVersion).toBe(2);
      expect(result.events.map((e) => e.version)).toEqual([2]);
      expect(result.state.items.map((item) => item.sku)).toEqual(['other-writer', 'apple']);
    });

    it('rethrows the last ConcurrencyError once maxRetries retries all conflicted', async () => {
      const store = new InterferingStore();
      stores.push(store);
      const orders = new CommandHandler(store, orderDecider, { maxRetries: 2 });

      const error = await orders.handle('order-1', place).catch((e: unknown) => e);

      expect(error).toBeInstanceOf(ConcurrencyError);
      expect(isConcurrencyError(error)).toBe(true);
      expect(store.attempts).toBe(3);
      // The last attempt loaded versions 0 and 1 (two interferences), then lost to the third.
      expect(error).toMatchObject({ streamId: 'order-1', expected: 1, actual: 2 });
      // Only the other writer's events were stored.
      expect((await store.readStream('order-1')).map((e) => e.type)).toEqual([
        'ItemAdded',
        'ItemAdded',
        'ItemAdded',
      ]);
    });

    it(`retries ${DEFAULT_COMMAND_HANDLER_OPTIONS.maxRetries} times by default`, async () => {
      const store = new InterferingStore();
      stores.push(store);
      const orders = new CommandHandler(store, orderDecider);
      await expect(orders.handle('order-1', place)).rejects.toBeInstanceOf(ConcurrencyError);
      expect(store.attempts).toBe(DEFAULT_COMMAND_HANDLER_OPTIONS.maxRetries + 1);
    });

    it('does not retry with maxRetries: 0', async () => {
      const store = new InterferingStore();
      stores.push(store);
      const orders = new CommandHandler(store, orderDecider, { maxRetries: 0 });
      await expect(orders.handle('order-1', place)).rejects.toBeInstanceOf(ConcurrencyError);
      expect(store.attempts).toBe(1);
    });

    it('stops retrying once its signal is aborted', async () => {
      const store = new InterferingStore();
      stores.push(store);
      const controller = new AbortController();
      const orders = new CommandHandler(store, {
        ...orderDecider,
        decide: (command: OrderCommand, state: OrderState) => {
          if (store.attempts === 0) controller.abort(new Error('shutting down'));
          return orderDecider.decide(command, state);
        },
      });
      await expect(orders.handle('order-1', place, { signal: controller.signal })).rejects.toThrow(
        'shutting down',
      );
      expect(store.attempts).toBe(1);
    });
  });

  describe('load', () => {
    it('gives the initial state and version -1 for a stream that does not exist', async () => {
      const orders = new CommandHandler(newStore(), orderDecider);
      expect(await orders.load('order-404')).toEqual({ state: orderDecider.initialState(), version: -1 });
    });

    it('hands evolve the type and data of each stored event', async () => {
      const store = newStore();
      await store.append('order-1', [
        { type: 'OrderPlaced', data: { customerId: 'c-9' }, metadata: { userId: 'u-1' } },
      ]);
      const evolve = vi.fn(orderDecider.evolve);
      await new CommandHandler(store, { ...orderDecider, evolve }).load('order-1');
      expect(evolve.mock.calls[0]?.[1]).toStrictEqual({ type: 'OrderPlaced', data: { customerId: 'c-9' } });
    });
  });

  describe('snapshots', () => {
    const snapshots = { every: 10, schemaVersion: 1 };

    it('saves one each time the stream passes a multiple of `every`', async () => {
      const store = newStore();
      const save = vi.spyOn(store, 'saveSnapshot');
      const orders = new CommandHandler(store, orderDecider, { snapshots });

      await buildOrder(orders, 'order-1', 25);

      expect(save.mock.calls.map((call) => call[0].version)).toEqual([9, 19]);
      const snapshot = await store.loadSnapshot<OrderState>('order-1');
      expect(snapshot).toMatchObject({ streamId: 'order-1', version: 19, schemaVersion: 1 });
      expect(snapshot?.state.items).toHaveLength(19);
    });

    it('saves at the new version when one append jumps past a multiple', async () => {
      const store = newStore();
      const orders = new CommandHandler(store, orderDecider, { snapshots });
      const items = Array.from({ length: 12 }, (_, i) => ({ sku: `sku-${i}`, quantity: 1 }));

      const result = await orders.handle('order-1', { ...place, items });

      expect(result.nextExpectedVersion).toBe(12);
      const snapshot = await store.loadSnapshot<OrderState>('order-1');
      expect(snapshot?.version).toBe(12);
      expect(snapshot?.state).toEqual(result.state);
    });

    it('loads from the snapshot and only the events after it', async () => {
      const store = newStore();
      await buildOrder(new CommandHandler(store, orderDecider, { snapshots }), 'order-1', 25);
      const { decider, evolved } = countingDecider();
      const readStream = vi.spyOn(store, 'readStream');

      const loaded = await new CommandHandler(store, decider, { snapshots }).load('order-1');

      expect(readStream).toHaveBeenCalledWith('order-1', { fromVersion: 20 });
      expect(evolved()).toBe(5);
      expect(loaded.version).toBe(24);
      expect(loaded.state.items).toHaveLength(24);
      expect(loaded).toEqual(await new CommandHandler(store, orderDecider).load('order-1'));
    });

    it('ignores a snapshot of another schema version and folds every event', async () => {
      const store = newStore();
      await buildOrder(new CommandHandler(store, orderDecider, { snapshots }), 'order-1', 25);
      // A snapshot of the old shape that would be wrong for the new one.
      await store.saveSnapshot({
        streamId: 'order-1',
        version: 24,
        schemaVersion: 1,
        state: { lines: 'old shape' },
      });
      const { decider, evolved } = countingDecider();
      const readStream = vi.spyOn(store, 'readStream');
      const orders = new CommandHandler(store, decider, { snapshots: { every: 10, schemaVersion: 2 } });

      const loaded = await orders.load('order-1');

      expect(readStream).toHaveBeenCalledWith('order-1', { fromVersion: 0 });
      expect(evolved()).toBe(25);
      expect(loaded.version).toBe(24);
      expect(loaded.state).toMatchObject({ status: 'open', customerId: 'c-1' });
      expect(loaded.state.items).toHaveLength(24);

      // The next multiple replaces it with a snapshot of the new schema version.
      for (let i = 25; i < 30; i++) await orders.handle('order-1', addItem(`sku-${i}`));
      expect(await store.loadSnapshot('order-1')).toMatchObject({ version: 29, schemaVersion: 2 });
    });

    it('neither reads nor writes snapshots when they are off', async () => {
      const store = newStore();
      await store.saveSnapshot({ streamId: 'order-1', version: 0, schemaVersion: 1, state: { bogus: true } });
      const load = vi.spyOn(store, 'loadSnapshot');
      const save = vi.spyOn(store, 'saveSnapshot');
      const orders = new CommandHandler(store, orderDecider);

      await buildOrder(orders, 'order-1', 12);

      expect(load).not.toHaveBeenCalled();
      expect(save).not.toHaveBeenCalled();
      expect((await orders.load('order-1')).state.items).toHaveLength(11);
    });

    it('does not fail the command when saving the snapshot fails, and reports it', async () => {
      const store = newStore();
      const failure = new Error('disk full');
      vi.spyOn(store, 'saveSnapshot').mockRejectedValue(failure);
      const onSnapshotError = vi.fn();
      const orders = new CommandHandler(store, orderDecider, {
        snapshots: { every: 2, schemaVersion: 1 },
        onSnapshotError,
      });

      await orders.handle('order-1', place);
      const result = await orders.handle('order-1', addItem('apple'));

      expect(result.nextExpectedVersion).toBe(1);
      expect(onSnapshotError).toHaveBeenCalledExactlyOnceWith(failure, 'order-1');
      expect(await store.readStream('order-1')).toHaveLength(2);
    });

    it('does not fail the command when onSnapshotError itself throws', async () => {
      const store = newStore();
      vi.spyOn(store, 'saveSnapshot').mockRejectedValue(new Error('disk full'));
      const orders = new CommandHandler(store, orderDecider, {
        snapshots: { every: 1, schemaVersion: 1 },
        onSnapshotError: () => {
          throw new Error('hook broke');
        },
      });
      await expect(orders.handle('order-1', place)).resolves.toMatchObject({ nextExpectedVersion: 0 });
    });
  });

  describe('options', () => {
    it.each<[string, CommandHandlerOptions]>([
      ['maxRetries below 0', { maxRetries: -1 }],
      ['fractional maxRetries', { maxRetries: 1.5 }],
      ['snapshots.every below 1', { snapshots: { every: 0, schemaVersion: 1 } }],
      ['fractional snapshots.every', { snapshots: { every: 2.5, schemaVersion: 1 } }],
      ['fractional snapshots.schemaVersion', { snapshots: { every: 10, schemaVersion: 1.1 } }],
      ['negative snapshots.schemaVersion', { snapshots: { every: 10, schemaVersion: -1 } }],
      ['a non-function onSnapshotError', { onSnapshotError: 'log' as unknown as () => void }],
      [
        'snapshots.serialize without deserialize',
        { snapshots: { every: 1, schemaVersion: 1, serialize: () => 1 } },
      ],
      [
        'a non-function snapshots.deserialize',
        {
          snapshots: {
            every: 1,
            schemaVersion: 1,
            serialize: () => 1,
            deserialize: 'json' as unknown as () => unknown,
          },
        },
      ],
    ])('rejects %s', (_, options) => {
      let error: unknown;
      try {
        new CommandHandler(newStore(), orderDecider, options);
      } catch (e) {
        error = e;
      }
      expect(isInvalidOptionsError(error)).toBe(true);
    });

    it('refuses an option it does not read, naming it, and takes undefined as left out', async () => {
      const store = newStore();
      // A misspelt maxRetries would otherwise give the default 3 retries without a word.
      expect(() => new CommandHandler(store, orderDecider, { maxRetry: 0 } as never)).toThrow(
        /CommandHandler has no option "maxRetry": it takes maxRetries, snapshots, onSnapshotError/,
      );
      expect(
        () =>
          new CommandHandler(store, orderDecider, {
            snapshots: { every: 1, schemaVersion: 1, evry: 5 },
          } as never),
      ).toThrow(/snapshots has no option "evry"/);
      expect(() => new CommandHandler(store, orderDecider, null as never)).toThrow(/must be an object/);
      const orders = new CommandHandler(store, orderDecider, { maxRetries: undefined } as never);
      const handled = orders.handle('order-options-1', place, { metdata: { by: 'ops' } } as never);
      await expect(handled).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(/CommandHandler.handle has no option "metdata"/),
      });
      await expect(orders.handle('order-options-1', place, null as never)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      });
      // Nothing appended by the refused calls; the handler itself works with maxRetries left out.
      expect(await store.readStream('order-options-1')).toEqual([]);
      await expect(orders.handle('order-options-1', place)).resolves.toMatchObject({
        nextExpectedVersion: 0,
      });
      const work = { append: vi.fn() };
      await expect(
        orders.handleIn(work as never, 'order-options-2', place, { signal: AbortSignal.timeout(5) } as never),
      ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(work.append).not.toHaveBeenCalled();
    });

    it('rejects a decider whose initialState is a value rather than a function', () => {
      const decider = {
        ...orderDecider,
        initialState: orderDecider.initialState(),
      } as unknown as typeof orderDecider;
      expect(() => new CommandHandler(newStore(), decider)).toThrow(/initialState/);
    });

    it('exports its defaults', () => {
      expect(DEFAULT_COMMAND_HANDLER_OPTIONS).toEqual({ maxRetries: 3 });
      expect(Object.isFrozen(DEFAULT_COMMAND_HANDLER_OPTIONS)).toBe(true);
    });
  });
});
