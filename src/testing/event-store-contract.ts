import { spawnSync } from 'node:child_process';
import { runWithContext } from '../context/context.js';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { isConcurrencyError, isDuplicateEventIdError, isInvalidEventError } from '../eventstore/errors.js';
import type { EventStore } from '../eventstore/store.js';
import { leaseOwner } from '../eventstore/subscription.js';
import type { RecordedEvent } from '../eventstore/types.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { vitest } from './vitest-api.js';
import { waitFor } from './wait.js';

/** What the contract suite needs: a fresh, empty, open store per call, isolated from every other. */
export interface EventStoreHarness {
  createStore(): Promise<EventStore>;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

/** No case reads more than this: a read that goes on past it (one that never ends) fails instead. */
const MAX_COLLECTED = 10_000;

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) {
    out.push(item);
    if (out.length > MAX_COLLECTED) {
      throw new Error(
        `the read went on past ${MAX_COLLECTED} events, more than the case wrote: it does not end`,
      );
    }
  }
  return out;
}

const FAST = { initialDelayMs: 10, factor: 2, maxDelayMs: 40 };

/**
 * The event store contract: one suite every backend (memory, SQLite, PostgreSQL) must pass.
 */
export function testEventStore(name: string, harness: EventStoreHarness): void {
  const { afterEach, describe, expect, it } = vitest('testEventStore');
  describe(`event store contract: ${name}`, () => {
    const stores: EventStore[] = [];
    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    });
    async function open(): Promise<EventStore> {
      const store = await harness.createStore();
      stores.push(store);
      return store;
    }

    it('appends to a stream with 0-based versions and reads it back with every attribute', async () => {
      const store = await open();
      const before = Date.now();
      const r1 = await store.append('order-1', [
        { type: 'OrderPlaced', data: { total: 10, lines: [{ sku: 'a', qty: 1 }] } },
      ]);
      const r2 = await store.append('order-1', [
        { type: 'ItemAdded', data: { sku: 'b' }, metadata: { user: 'u1' } },
        { type: 'ItemAdded', data: { sku: 'c' } },
      ]);
      expect(r1.nextExpectedVersion).toBe(0);
      expect(r2.nextExpectedVersion).toBe(2);
      expect(typeof r1.position).toBe('bigint');
      expect(r2.position > r1.position).toBe(true);
      const events = await store.readStream('order-1');
      expect(events.map((e) => [e.version, e.type])).toEqual([
        [0, 'OrderPlaced'],
        [1, 'ItemAdded'],
        [2, 'ItemAdded'],
      ]);
      const [first, second] = events;
      expect(first).toMatchObject({
        streamId: 'order-1',
        data: { total: 10, lines: [{ sku: 'a', qty: 1 }] },
      });
      expect(first!.position).toBe(r1.position);
      expect(events[2]!.position).toBe(r2.position);
      expect(first!.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(second!.metadata).toMatchObject({ user: 'u1' });
      expect(Date.parse(first!.time)).toBeGreaterThanOrEqual(before - 2000);
      expect(await store.readStream('no-such-stream')).toEqual([]);
    });

    it('enforces every form of expected version and reports expected and actual on conflict', async () => {
      const store = await open();
      const e = (type: string) => [{ type, data: {} }];
      expect(
        isConcurrencyError(await rejection(store.append('s', e('x'), { expectedVersion: 'stream_exists' }))),
      ).toBe(true);
      expect(isConcurrencyError(await rejection(store.append('s', e('x'), { expectedVersion: 0 })))).toBe(
        true,
      );
      await store.append('s', e('first'), { expectedVersion: 'no_stream' });
      const noStream = await rejection(store.append('s', e('x'), { expectedVersion: 'no_stream' }));
      expect(noStream).toMatchObject({
        code: 'CONCURRENCY_CONFLICT',
        streamId: 's',
        expected: 'no_stream',
        actual: 0,
      });
      await store.append('s', e('second'), { expectedVersion: 'stream_exists' });
      await store.append('s', e('third'), { expectedVersion: 1 });
      const stale = await rejection(store.append('s', e('x'), { expectedVersion: 1 }));
      expect(stale).toMatchObject({ code: 'CONCURRENCY_CONFLICT', expected: 1, actual: 2 });
      const ahead = await rejection(store.append('s', e('x'), { expectedVersion: 7 }));
      expect(ahead).toMatchObject({ expected: 7, actual: 2 });
      const absent = await rejection(store.append('t', e('x'), { expectedVersion: 'stream_exists' }));
      expect(absent).toMatchObject({ expected: 'stream_exists', actual: -1 });
      await store.append('s', e('fourth'), { expectedVersion: 'any' });
      await store.append('u', e('first'), { expectedVersion: -1 });
      expect((await store.readStream('s')).map((x) => x.type)).toEqual([
        'first',
        'second',
        'third',
        'fourth',
      ]);
      expect(await store.readStream('t')).toEqual([]);
    });

    it('writes a batch all or nothing', async () => {
      const store = await open();
      await store.append('b', [{ type: 'a', data: 1 }]);
      const error = await rejection(
        store.append(
          'b',
          [
            { type: 'x', data: 1 },
            { type: 'y', data: 2 },
          ],
          { expectedVersion: 5 },
        ),
      );
      expect(isConcurrencyError(error)).toBe(true);
      expect((await store.readStream('b')).map((x) => x.type)).toEqual(['a']);
      const batch = await store.append(
        'b',
        Array.from({ length: 10 }, (_, i) => ({ type: 'n', data: i })),
      );
      expect(batch.nextExpectedVersion).toBe(10);
      const events = await store.readStream('b');
      expect(events.map((x) => x.version)).toEqual(Array.from({ length: 11 }, (_, i) => i));
      for (let i = 1; i < events.length; i++)
        expect(events[i]!.position > events[i - 1]!.position).toBe(true);
    });

    it('makes re-appending the same event ids a no-op that returns the original result', async () => {
      const store = await open();
      const ids = [uuidv7(), uuidv7()];
      const batch = ids.map((id, i) => ({ id, type: 'Paid', data: { i } }));
      const first = await store.append('pay', batch, { expectedVersion: 'no_stream' });
      // A client retrying after a timeout sends the same ids with the same expected version.
      const retried = await store.append('pay', batch, { expectedVersion: 'no_stream' });
      const again = await store.append('pay', batch);
      expect(retried).toEqual(first);
      expect(again).toEqual(first);
      // In another order, still the original result (the latest of them), not the last one's.
      expect(await store.append('pay', [...batch].reverse())).toEqual(first);
      expect(await store.readStream('pay')).toHaveLength(2);
      // The same id in another stream is another event.
      await store.append('other', [{ id: ids[0]!, type: 'Paid', data: {} }]);
      const partial = await rejection(
        store.append('pay', [
          { id: ids[1]!, type: 'Paid', data: {} },
          { type: 'New', data: {} },
        ]),
      );
      expect(isDuplicateEventIdError(partial)).toBe(true);
      expect(await store.readStream('pay')).toHaveLength(2);
    });

    it('reads a stream from a version, with a limit, and backward', async () => {
      const store = await open();
      await store.append(
        'r',
        Array.from({ length: 6 }, (_, i) => ({ type: 'n', data: i })),
      );
      const versions = (events: RecordedEvent[]) => events.map((e) => e.version);
      expect(versions(await store.readStream('r', { fromVersion: 2 }))).toEqual([2, 3, 4, 5]);
      expect(versions(await store.readStream('r', { fromVersion: 1, limit: 2 }))).toEqual([1, 2]);
      expect(versions(await store.readStream('r', { direction: 'backward' }))).toEqual([5, 4, 3, 2, 1, 0]);
      expect(
        versions(await store.readStream('r', { direction: 'backward', fromVersion: 3, limit: 2 })),
      ).toEqual([3, 2]);
      expect(versions(await store.readStream('r', { fromVersion: 9 }))).toEqual([]);
    });

    it('reads all streams in one global order, from a position, filtered by type', async () => {
      const store = await open();
      await store.append('a', [{ type: 'A1', data: 1 }]);
      await store.append('b', [
        { type: 'B1', data: 2 },
        { type: 'B2', data: 3 },
      ]);
      await store.append('a', [{ type: 'A2', data: 4 }]);
      const all = await collect(store.readAll({ batchSize: 2 }));
      expect(all.map((e) => e.type)).toEqual(['A1', 'B1', 'B2', 'A2']);
      for (let i = 1; i < all.length; i++) expect(all[i]!.position > all[i - 1]!.position).toBe(true);
      const fromThird = await collect(store.readAll({ fromPosition: all[2]!.position }));
      expect(fromThird.map((e) => e.type)).toEqual(['B2', 'A2']);
      const typed = await collect(store.readAll({ types: ['A1', 'A2'], batchSize: 1 }));
      expect(typed.map((e) => e.type)).toEqual(['A1', 'A2']);
    });

    it('reads in batches of at most the limit asked (a backend that answered every event at once passed), from a position, filtered by type', async () => {
      const store = await open();
      for (let i = 0; i < 5; i++)
        await store.append(`s${i}`, [{ type: i % 2 === 0 ? 'Even' : 'Odd', data: i }]);
      const first = await store.backend.readAfter(0n, 2, undefined);
      expect(first.events.map((e) => e.data)).toEqual([0, 1]);
      const next = await store.backend.readAfter(first.events[1]!.position, 2, undefined);
      expect(next.events.map((e) => e.data)).toEqual([2, 3]);
      const last = await store.backend.readAfter(next.events[1]!.position, 2, undefined);
      expect(last.events.map((e) => e.data)).toEqual([4]);
      const even = await store.backend.readAfter(0n, 2, ['Even']);
      expect(even.events.map((e) => e.data)).toEqual([0, 2]);
      expect((await store.backend.readAfter(0n, 1, undefined)).events).toHaveLength(1);
    });

    it('records the ambient correlation and causation ids in metadata', async () => {
      const store = await open();
      await runWithContext({ correlationId: 'corr-9', messageId: 'msg-3' }, () =>
        store.append('c', [{ type: 'X', data: {}, metadata: { extra: true } }]),
      );
      await store.append('c', [{ type: 'Y', data: {} }]);
      const [x, y] = await store.readStream('c');
      expect(x!.metadata).toEqual({ correlationId: 'corr-9', causationId: 'msg-3', extra: true });
      expect(y!.metadata).toEqual({});
    });

    it('stores data as JSON, unaffected by later changes to the caller objects', async () => {
      const store = await open();
      const data = {
        text: 'ünïcødé ✓ "quoted"',
        n: 1.5,
        big: 2 ** 53 - 1,
        nested: { list: [1, null, 'x'] },
        flag: false,
      };
      await store.append('j', [{ type: 'J', data }]);
      data.nested.list.push('later');
      const [event] = await store.readStream('j');
      // Each read is the reader's own copy: what it changes there reaches neither the store nor others.
      (event!.data as { n: number }).n = 99;
      const [again] = await store.readStream('j');
      expect(again!.data).toEqual({
        text: 'ünïcødé ✓ "quoted"',
        n: 1.5,
        big: 2 ** 53 - 1,
        nested: { list: [1, null, 'x'] },
        flag: false,
      });
    });

    it('refuses invalid appends with INVALID_EVENT and writes nothing', async () => {
      const store = await open();
      const cases = [
        store.append('', [{ type: 'x', data: 1 }]),
        store.append('v', []),
        store.append('v', [{ type: '', data: 1 }]),
        store.append('v', [{ type: 'x', data: 1, id: 'not-a-uuid' }]),
        store.append('v', [{ type: 'x', data: { n: 10n } }]),
        store.append('v', [{ type: 'x', data: 1 }], { expectedVersion: -2 }),
        store.append('v', [{ type: 'x', data: 1 }], { expectedVersion: 'latest' as never }),
        (() => {
          const id = uuidv7();
          return store.append('v', [
            { id, type: 'x', data: 1 },
            { id, type: 'y', data: 2 },
          ]);
        })(),
      ];
      for (const attempt of cases) expect(isInvalidEventError(await rejection(attempt))).toBe(true);
      expect(await store.readStream('v')).toEqual([]);
    });

    it('refuses stream ids and types no backend can keep apart or store, naming the field, and writes nothing', async () => {
      const store = await open();
      const emoji = 'acct-😀';
      const truncated = emoji.slice(0, emoji.length - 1); // 'acct-\uD83D', a lone high surrogate
      const refused: [string, Promise<unknown>][] = [
        ['stream id', store.append('acct-\uD800', [{ type: 'x', data: 1 }])],
        ['stream id', store.append('acct-\uDBFF', [{ type: 'x', data: 1 }])],
        ['stream id', store.append(truncated, [{ type: 'x', data: 1 }])],
        ['stream id', store.append('acct-\uDC00x', [{ type: 'x', data: 1 }])],
        ['stream id', store.append('acct\u0000', [{ type: 'x', data: 1 }])],
        ['stream id', store.append('a'.repeat(501), [{ type: 'x', data: 1 }])],
        ['stream id', store.append(42 as never, [{ type: 'x', data: 1 }])],
        ['type', store.append('ok', [{ type: 'Paid\u0000', data: 1 }])],
        ['type', store.append('ok', [{ type: 'Paid\uD800', data: 1 }])],
        ['type', store.append('ok', [{ type: 'T'.repeat(201), data: 1 }])],
        ['data', store.append('ok', [{ type: 'x', data: { note: 'a\u0000b' } }])],
        ['data', store.append('ok', [{ type: 'x', data: { 'k\u0000': 1 } }])],
        ['metadata', store.append('ok', [{ type: 'x', data: 1, metadata: { who: 'a\u0000' } }])],
        ['metadata', store.append('ok', [{ type: 'x', data: 1, metadata: ['a'] as never }])],
        // Not a plain object once toJSON has run: JSON would store {} or a string, silently.
        ['metadata', store.append('ok', [{ type: 'x', data: 1, metadata: new Date(0) as never }])],
        ['metadata', store.append('ok', [{ type: 'x', data: 1, metadata: { toJSON: () => 'm' } }])],
        ['metadata', store.append('ok', [{ type: 'x', data: 1, metadata: new Map([['a', 1]]) as never }])],
        ['stream id', store.readStream('acct-\uD800')],
        [
          'stream id',
          store.saveSnapshot({ streamId: 'acct-\u0000', version: 0, schemaVersion: 1, state: {} }),
        ],
        [
          'state',
          store.saveSnapshot({ streamId: 'ok', version: 0, schemaVersion: 1, state: { s: '\uD800' } }),
        ],
        // PostgreSQL's integer column: refused everywhere, not a raw 22003 there and stored elsewhere.
        [
          'schemaVersion',
          store.saveSnapshot({ streamId: 'ok', version: 0, schemaVersion: 2 ** 40, state: {} }),
        ],
        [
          'schemaVersion',
          store.saveSnapshot({ streamId: 'ok', version: 0, schemaVersion: 2 ** 31, state: {} }),
        ],
        // From 0, as CommandHandler's snapshots.schemaVersion: -1 was stored and loaded back.
        ['schemaVersion', store.saveSnapshot({ streamId: 'ok', version: 0, schemaVersion: -1, state: {} })],
      ];
      for (const [field, attempt] of refused) {
        const error = await rejection(attempt);
        expect(isInvalidEventError(error), String(error)).toBe(true);
        expect((error as Error).message).toContain(field);
      }
      expect((await rejection(store.append('acct-\uD800', [{ type: 'x', data: 1 }]))) as Error).toMatchObject(
        {
          message: expect.stringMatching(/lone surrogate/),
        },
      );
      expect(await store.loadSnapshot('ok')).toBeUndefined();
      expect(await collect(store.readAll())).toEqual([]);
      // At the edges, and what a well-formed id holds, is kept apart.
      await store.append(emoji, [{ type: 'T'.repeat(200), data: 1 }]);
      await store.append('acct-😁', [{ type: 'x', data: 2 }]);
      await store.append('a'.repeat(500), [{ type: 'x', data: 3 }]);
      expect((await store.readStream(emoji)).map((e) => [e.streamId, e.data])).toEqual([[emoji, 1]]);
      expect((await store.readStream('acct-😁')).map((e) => e.data)).toEqual([2]);
      expect((await store.readStream('a'.repeat(500))).map((e) => e.data)).toEqual([3]);
      // A type filter no event can match is an invalid option, not a database error.
      expect(isInvalidOptionsError(await rejection(collect(store.readAll({ types: ['a\u0000'] }))))).toBe(
        true,
      );
    });

    it('stores data and metadata as their JSON round trip on every backend, and refuses what has none', async () => {
      const store = await open();
      class Money {
        constructor(
          readonly amount: number,
          readonly currency: string,
        ) {}
        get label(): string {
          return `${this.amount} ${this.currency}`;
        }
      }
      const cycle: Record<string, unknown> = { a: 1 };
      cycle.self = cycle;
      const nest = (levels: number): unknown => {
        let value: unknown = 'bottom';
        for (let i = 0; i < levels; i++) value = [value];
        return value;
      };
      const proto = JSON.parse('{"__proto__":{"polluted":true},"ok":1}') as unknown;
      const big = 'x'.repeat(1024 * 1024);
      const INVALID = Symbol('INVALID_EVENT');
      const cases: [string, unknown, unknown][] = [
        ['Date', { at: new Date('2026-01-02T03:04:05.006Z') }, { at: '2026-01-02T03:04:05.006Z' }],
        ['Date at the top', new Date('2026-01-02T03:04:05.006Z'), '2026-01-02T03:04:05.006Z'],
        ['BigInt', { n: 10n }, INVALID],
        ['undefined members', { a: undefined, b: 1, list: [undefined, 2] }, { b: 1, list: [null, 2] }],
        ['undefined data', undefined, null],
        [
          'NaN and Infinity',
          { a: Number.NaN, b: Number.POSITIVE_INFINITY, c: -Infinity },
          { a: null, b: null, c: null },
        ],
        ['-0', { z: -0, top: [-0] }, { z: 0, top: [0] }],
        ['Map and Set', { m: new Map([['k', 1]]), s: new Set([1]) }, { m: {}, s: {} }],
        ['class instance', { price: new Money(5, 'EUR') }, { price: { amount: 5, currency: 'EUR' } }],
        ['cycle', cycle, INVALID],
        ['__proto__ key', proto, JSON.parse('{"__proto__":{"polluted":true},"ok":1}')],
        ['function at the top', () => 1, INVALID],
        ['function member', { f: () => 1, a: 1 }, { a: 1 }],
        ['Symbol at the top', Symbol('s'), INVALID],
        ['Symbol member and key', { s: Symbol('s'), [Symbol('k')]: 1, a: 1 }, { a: 1 }],
        ['toJSON undefined at the top', { toJSON: () => undefined }, INVALID],
        ['toJSON undefined member', { x: { toJSON: () => undefined }, a: 1 }, { a: 1 }],
        ['1 MB string', { big }, { big }],
        ['non-BMP unicode', { s: '😀 𝄞 𠜎', '🔑': 1 }, { s: '😀 𝄞 𠜎', '🔑': 1 }],
        ['lone surrogate', { s: 'acct-\uD800' }, INVALID],
        ['lone surrogate in a key', { 'k\uDFFF': 1 }, INVALID],
        ['NUL', { s: 'a\u0000b' }, INVALID],
        ['NUL at the top', '\u0000', INVALID],
        ['100 levels deep', nest(100), nest(100)],
        ['101 levels deep', nest(101), INVALID],
        ['100 000 levels deep', nest(100_000), INVALID],
      ];
      for (const [i, [name, data, expected]] of cases.entries()) {
        const stream = `parity-${i}`;
        // The same value as a member of metadata (one level deeper: not for the depth cases).
        const inMetadata = !name.includes('levels deep');
        const metadata = inMetadata ? { data } : {};
        const attempt = store.append(stream, [{ type: 'T', data, metadata }]);
        if (expected === INVALID) {
          const error = await rejection(attempt);
          expect(isInvalidEventError(error), `${name}: ${String(error)}`).toBe(true);
          expect(await store.readStream(stream), name).toEqual([]);
          continue;
        }
        await attempt;
        const [event] = await store.readStream(stream);
        expect(event!.data, name).toStrictEqual(expected);
        // As a member of metadata, undefined drops out of the object.
        expect(event!.metadata, name).toStrictEqual(
          inMetadata && data !== undefined ? { data: expected } : {},
        );
      }
      const [read] = await store.readStream(`parity-${cases.findIndex(([n]) => n === '__proto__ key')}`);
      expect(Object.getPrototypeOf(read!.data)).toBe(Object.prototype);
      expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
      // An appended object changed afterwards, a Date included, does not change what was stored.
      const at = new Date('2026-01-02T03:04:05.006Z');
      const later = { at, list: [1] };
      await store.append('later', [{ type: 'T', data: later }]);
      at.setFullYear(2030);
      later.list.push(2);
      const [kept] = await store.readStream('later');
      expect(kept!.data).toStrictEqual({ at: '2026-01-02T03:04:05.006Z', list: [1] });
    });

    it('accepts only the documented expected versions, versions and positions, the same on every backend', async () => {
      const store = await open();
      await store.append('ev', [{ type: 'A', data: 1 }]);
      const badVersions: unknown[] = [
        null,
        1e21,
        2 ** 53,
        1.5,
        Number.NaN,
        Number.POSITIVE_INFINITY,
        -2,
        '0',
        0n,
        {},
      ];
      for (const expectedVersion of badVersions) {
        const error = await rejection(
          store.append('ev', [{ type: 'B', data: 2 }], { expectedVersion: expectedVersion as never }),
        );
        expect(
          isInvalidEventError(error),
          `expectedVersion ${String(expectedVersion)}: ${String(error)}`,
        ).toBe(true);
      }
      expect((await store.readStream('ev')).map((e) => e.type)).toEqual(['A']);
      // The largest version there can be is a conflict, not a database error.
      const far = await rejection(
        store.append('ev', [{ type: 'B', data: 2 }], { expectedVersion: Number.MAX_SAFE_INTEGER }),
      );
      expect(isConcurrencyError(far)).toBe(true);
      for (const options of [
        { fromVersion: 1e21 },
        { limit: 2 ** 53 },
        { fromVersion: -1 },
        { direction: 'sideways' },
      ]) {
        const error = await rejection(store.readStream('ev', options as never));
        expect(isInvalidEventError(error), JSON.stringify(options)).toBe(true);
      }
      expect(await store.readStream('ev', { fromVersion: Number.MAX_SAFE_INTEGER })).toEqual([]);
      await store.append('ev', [{ type: 'B', data: 2 }]);
      const all = await collect(store.readAll());
      expect(all.map((e) => e.type)).toEqual(['A', 'B']);
      // Positions start above 0: from 0n and from 1n both read everything.
      expect((await collect(store.readAll({ fromPosition: 0n }))).map((e) => e.type)).toEqual(['A', 'B']);
      expect((await collect(store.readAll({ fromPosition: 1n }))).map((e) => e.type)).toEqual(['A', 'B']);
      expect(await collect(store.readAll({ fromPosition: 2n ** 63n - 1n }))).toEqual([]);
      for (const fromPosition of [1, -1n, 2n ** 63n, '1', null]) {
        const error = await rejection(collect(store.readAll({ fromPosition: fromPosition as never })));
        expect(isInvalidOptionsError(error), `fromPosition ${String(fromPosition)}: ${String(error)}`).toBe(
          true,
        );
      }
      expect(isInvalidOptionsError(await rejection(collect(store.readAll({ batchSize: 2 ** 53 }))))).toBe(
        true,
      );
    });

    it('lets 50 writers race on one stream: versions contiguous, nothing lost or doubled, losers get ConcurrencyError', async () => {
      const store = await open();
      let conflicts = 0;
      // Each conflict of a writer means another writer appended between its read and its append, so
      // with 49 others it loses at most 49 times. A backend that hands back a stale version (such as a
      // backward read that reads forward) would otherwise keep it retrying for ever, and on an
      // in-process backend without yielding to the timers that end a test: bounded, it fails here.
      const writers = Array.from({ length: 50 }, async (_, w) => {
        for (let attempt = 1; ; attempt++) {
          const events = await store.readStream('hot', { direction: 'backward', limit: 1 });
          const expectedVersion = events.length === 0 ? ('no_stream' as const) : events[0]!.version;
          try {
            await store.append('hot', [{ type: 'Wrote', data: { w } }], { expectedVersion });
            return;
          } catch (error) {
            if (!isConcurrencyError(error)) throw error;
            conflicts++;
            if (attempt >= 50) {
              throw new Error(
                `writer ${w} conflicted ${attempt} times in a row (last expected version ${expectedVersion}, ` +
                  `actual ${String(error.actual)}): with 49 other writers it can lose at most 49 times; ` +
                  `does readStream({ direction: 'backward', limit: 1 }) return the last event?`,
              );
            }
          }
        }
      });
      // Every writer ends (bounded above) before the store is closed; the first failure is reported.
      const outcomes = await Promise.allSettled(writers);
      const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failure !== undefined) throw failure.reason;
      const events = await store.readStream('hot');
      expect(events.map((e) => e.version)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      expect(events.map((e) => (e.data as { w: number }).w).sort((a, b) => a - b)).toEqual(
        Array.from({ length: 50 }, (_, i) => i),
      );
      expect(conflicts).toBeGreaterThan(0);
    });

    it('subscribes from the start, then live, in global order', async () => {
      const store = await open();
      await store.append('s1', [{ type: 'A', data: 1 }]);
      await store.append('s2', [{ type: 'B', data: 2 }]);
      const seen: string[] = [];
      const sub = store.subscribe({ name: 'all' }, (e) => void seen.push(`${e.streamId}:${e.type}`));
      await waitFor(() => seen.length === 2, 'the catch-up');
      await store.append('s1', [{ type: 'C', data: 3 }]);
      await store.append('s3', [{ type: 'D', data: 4 }]);
      await waitFor(() => seen.length === 4, 'the live events');
      expect(seen).toEqual(['s1:A', 's2:B', 's1:C', 's3:D']);
      await sub.caughtUp();
      expect(await sub.lag()).toMatchObject({ behind: 0 });
      await sub.close();
    });

    it('resumes a named subscription from its checkpoint', async () => {
      const store = await open();
      await store.append('s', [
        { type: 'A', data: 1 },
        { type: 'B', data: 2 },
      ]);
      const first: string[] = [];
      const sub1 = store.subscribe({ name: 'projector' }, (e) => void first.push(e.type));
      await waitFor(() => first.length === 2, 'the first run');
      await sub1.close();
      await store.append('s', [{ type: 'C', data: 3 }]);
      const second: string[] = [];
      const sub2 = store.subscribe({ name: 'projector' }, (e) => void second.push(e.type));
      await waitFor(() => second.length === 1, 'the resumed run');
      await sub2.caughtUp();
      expect(second).toEqual(['C']);
      await sub2.close();
      // Another name starts from scratch.
      const third: string[] = [];
      const sub3 = store.subscribe({ name: 'another' }, (e) => void third.push(e.type));
      await waitFor(() => third.length === 3, 'a new subscription');
      await sub3.close();
    });

    it('refuses options that are not an object, and events that are not an array, with typed errors', async () => {
      const store = await open();
      const code = (attempt: Promise<unknown>) =>
        attempt.then(
          () => 'resolved',
          (e: unknown) => (e as { code?: string }).code ?? String(e),
        );
      expect(await code(store.append('s', [{ type: 'E', data: 1 }], null as never))).toBe('INVALID_OPTIONS');
      expect(await code(store.readStream('s', null as never))).toBe('INVALID_OPTIONS');
      expect(await code(store.readAll(null as never).next())).toBe('INVALID_OPTIONS');
      expect(await code(store.saveSnapshot(null as never))).toBe('INVALID_OPTIONS');
      expect(await code(store.saveSnapshot(undefined as never))).toBe('INVALID_OPTIONS');
      expect(await code(Promise.resolve().then(() => store.subscribe(null as never, () => {})))).toBe(
        'INVALID_OPTIONS',
      );
      expect(await code(store.append('s', 'E' as never))).toBe('INVALID_EVENT');
      expect(await store.append('s', { type: 'E', data: 1 } as never).catch((e: Error) => e.message)).toMatch(
        /an array of events/,
      );
      expect(await store.readStream('s')).toEqual([]);
    });

    it('refuses a subscription name every backend cannot keep apart: empty, too long, NUL, lone surrogate', async () => {
      // PostgreSQL refused NUL on every lease claim (the subscription never started) and turned lone
      // surrogates into U+FFFD, so that 'p-\uD800' took over 'p-\uDBFF''s checkpoint and skipped history.
      const store = await open();
      for (const name of ['', 'x'.repeat(201), 'p-\u0000', 'p-\uD800', 'p-\uDBFF', '\uDC00p']) {
        expect(() => store.subscribe({ name }, () => {}), JSON.stringify(name)).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS' }),
        );
      }
      const ok = store.subscribe({ name: 'p-\uD83D\uDE00 projector' }, () => {});
      await ok.caughtUp();
      await ok.close();
    });

    it('refuses after close() with EVENT_STORE_CLOSED what was begun before: a readAll iterator, a subscription’s lag, parked and replay', async () => {
      // Memory went on answering, PostgreSQL rejected with pg's plain "Cannot use a pool after calling end".
      const store = await open();
      await store.append('pre', [
        { type: 'E', data: 1 },
        { type: 'E', data: 2 },
        { type: 'E', data: 3 },
      ]);
      const iterator = store.readAll({ batchSize: 1 });
      expect((await iterator.next()).value?.data).toBe(1);
      const sub = store.subscribe({ name: 'closing' }, () => {});
      await sub.caughtUp();
      await store.close();
      const outcomes = await Promise.allSettled([
        iterator.next(),
        sub.lag(),
        sub.parked(),
        sub.replayParked(),
      ]);
      for (const [i, outcome] of outcomes.entries()) {
        expect(outcome.status, `call ${i}`).toBe('rejected');
        expect((outcome as PromiseRejectedResult).reason, `call ${i}`).toMatchObject({
          code: 'EVENT_STORE_CLOSED',
        });
      }
    });

    it('refuses a subscription or an inbox made by a handler close() waits for: close() would never stop it', async () => {
      // It ran on against the closed backend (retrying, logging) and kept the process alive.
      const store = await open();
      await store.append('s', [{ type: 'E', data: 1 }]);
      let entered!: () => void;
      const inHandler = new Promise<void>((resolve) => {
        entered = resolve;
      });
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      const attempts: unknown[] = [];
      const outer = store.subscribe({ name: 'outer' }, async () => {
        entered();
        await released;
        for (const attempt of [() => store.subscribe({ name: 'inner' }, () => {}), () => store.inbox()]) {
          try {
            attempts.push(attempt());
          } catch (error) {
            attempts.push(error);
          }
        }
        // Reading is still allowed there.
        attempts.push((await store.readStream('s')).length);
      });
      await inHandler;
      const closed = store.close();
      release();
      await closed;
      expect(attempts[0]).toMatchObject({ code: 'EVENT_STORE_CLOSED' });
      expect(attempts[1]).toMatchObject({ code: 'EVENT_STORE_CLOSED' });
      expect(attempts[2]).toBe(1);
      expect(outer.active).toBe(false);
    });

    it("starts at the end with from: 'end' and filters by type", async () => {
      const store = await open();
      await store.append('s', [{ type: 'Old', data: 1 }]);
      const seen: string[] = [];
      const sub = store.subscribe(
        { name: 'tail', from: 'end', types: ['Wanted'] },
        (e) => void seen.push(e.type),
      );
      await sub.caughtUp();
      await store.append('s', [
        { type: 'Unwanted', data: 2 },
        { type: 'Wanted', data: 3 },
      ]);
      await waitFor(() => seen.length === 1, 'the wanted event');
      await sub.caughtUp();
      expect(seen).toEqual(['Wanted']);
      await sub.close();
    });

    it("reports nothing behind a from: 'end' subscription as soon as it is made, never the events before its start", async () => {
      // Must not happen: a readiness check run at start-up reading the whole store as lag.
      const store = await open();
      for (let i = 0; i < 5; i++) await store.append(`old-${i}`, [{ type: 'Old', data: i }]);
      const sub = store.subscribe({ name: 'tail-lag', from: 'end' }, () => {});
      expect(await sub.lag()).toMatchObject({ behind: 0 });
      await sub.caughtUp();
      expect(await sub.lag()).toMatchObject({ behind: 0 });
      await sub.close();
    });

    it('resolves caughtUp() only once every event appended before the call was handled, while appends keep the loop reading', async () => {
      // A read the loop had begun before the call, and that then found nothing more, resolved it:
      // on PostgreSQL the events of appends committed together just before were still unhandled.
      const store = await open();
      const seen = new Set<number>();
      const sub = store.subscribe({ name: 'barrier' }, (e) => {
        seen.add((e.data as { i: number }).i);
      });
      await sub.caughtUp();
      for (let round = 0; round < 20; round++) {
        const base = round * 50;
        await Promise.all(
          Array.from({ length: 50 }, (_, k) =>
            store.append(`b-${k % 5}`, [{ type: 'B', data: { i: base + k } }]),
          ),
        );
        await sub.caughtUp();
        const missing = Array.from({ length: 50 }, (_, k) => base + k).filter((i) => !seen.has(i));
        expect({ round, missing }).toEqual({ round, missing: [] });
      }
      await sub.close();
    });

    it('retries a failing handler, parks the event after its limit and goes on; parked events replay', async () => {
      const store = await open();
      await store.append('p', [
        { type: 'Ok', data: 1 },
        { type: 'Poison', data: 2 },
        { type: 'Ok', data: 3 },
      ]);
      let broken = true;
      const attempts: number[] = [];
      const handled: number[] = [];
      const sub = store.subscribe({ name: 'fragile', maxAttempts: 3, backoff: FAST }, (e) => {
        if (e.type === 'Poison' && broken) {
          attempts.push(Date.now());
          throw new Error('cannot project this');
        }
        handled.push(e.data as number);
      });
      await waitFor(() => handled.length === 2, 'the events around the poison');
      expect(handled).toEqual([1, 3]);
      expect(attempts).toHaveLength(3);
      const parked = await sub.parked();
      expect(parked).toHaveLength(1);
      expect(parked[0]).toMatchObject({
        subscription: 'fragile',
        attempts: 3,
        event: { type: 'Poison', data: 2 },
      });
      expect(parked[0]!.error).toContain('cannot project this');
      broken = false;
      expect(await sub.replayParked()).toBe(1);
      expect(handled).toEqual([1, 3, 2]);
      expect(await sub.parked()).toEqual([]);
      await sub.close();
    });

    it('hands each attempt the event as stored, whatever a handler wrote to it: checkpoint, retries, parked copy and replay untouched', async () => {
      // Must not happen: a handler (JavaScript, or TypeScript through a cast) that writes to the
      // readonly event it is handed moves the checkpoint (position 0: everything handled again on the
      // next wake), or hands its retries and the parked copy what it wrote.
      const store = await open();
      await store.append('scribbled', [
        { type: 'Ok', data: { n: 1, tags: ['a'] } },
        { type: 'Poison', data: { n: 2, tags: ['b'] } },
      ]);
      const seen: string[] = [];
      let broken = true;
      const sub = store.subscribe({ name: 'scribbler', maxAttempts: 2, backoff: FAST }, (e) => {
        const data = e.data as { n: number; tags: string[] };
        seen.push(`${e.type}:${data.n}:${data.tags.join()}:${e.position}`);
        const writable = e as { -readonly [K in keyof RecordedEvent]: RecordedEvent[K] };
        writable.position = 0n;
        writable.type = 'Scribbled';
        data.n = 99;
        data.tags.push('scribbled');
        if (e.streamId === 'scribbled' && broken && seen.length > 1) throw new Error('poison');
      });
      await waitFor(async () => (await sub.parked()).length === 1, 'the parked event');
      const [ok, poison] = await store.readStream('scribbled');
      expect(seen).toEqual([
        `Ok:1:a:${ok!.position}`,
        `Poison:2:b:${poison!.position}`,
        `Poison:2:b:${poison!.position}`,
      ]);
      const [parked] = await sub.parked();
      expect(parked!.event).toEqual(poison);
      // The checkpoint is past both: a new event is the only one handled next.
      await store.append('later', [{ type: 'Ok', data: { n: 3, tags: [] } }]);
      await waitFor(() => seen.length === 4, 'the next event');
      await sub.caughtUp();
      expect(seen[3]).toMatch(/^Ok:3::/);
      expect(await sub.lag()).toMatchObject({ behind: 0 });
      // A replay whose handler writes to the event and fails again: neither the parked event nor the
      // count of replays done changes (memory handed out the parked object itself).
      expect(await sub.replayParked()).toBe(0);
      expect(seen[4]).toBe(`Poison:2:b:${poison!.position}`);
      expect((await sub.parked()).map((p) => p.event)).toEqual([poison]);
      broken = false;
      expect(await sub.replayParked()).toBe(1);
      expect(seen[5]).toBe(`Poison:2:b:${poison!.position}`);
      expect(seen).toHaveLength(6);
      await sub.close();
    });

    it('lists at most `limit` parked events, oldest first', async () => {
      const store = await open();
      await store.append(
        'many-poisons',
        [1, 2, 3].map((n) => ({ type: 'Poison', data: n })),
      );
      const sub = store.subscribe({ name: 'parks-three', maxAttempts: 1, backoff: FAST }, () => {
        throw new Error('cannot project this');
      });
      await waitFor(async () => (await sub.parked()).length === 3, 'three parked events');
      expect((await sub.parked(1)).map((p) => p.event.data)).toEqual([1]);
      expect((await sub.parked(2)).map((p) => p.event.data)).toEqual([1, 2]);
      expect(await sub.parked(0)).toEqual([]);
      await sub.close();
    });

    it('wakes a live subscription on an append at once, not at its safety poll', async () => {
      const store = await open();
      await store.append('wake', [{ type: 'Before', data: 0 }]);
      const seen: number[] = [];
      // A poll this slow never delivers within the wait below: only the append's wake-up can.
      const sub = store.subscribe(
        { name: 'woken', idlePollMs: 120_000 },
        (e) => void seen.push(e.data as number),
      );
      await waitFor(() => seen.length === 1, 'the catch-up');
      await sub.caughtUp();
      for (const n of [1, 2, 3]) {
        await store.append('wake', [{ type: 'Live', data: n }]);
        await waitFor(() => seen.length === n + 1, `live event ${n}, woken by its append`, 5_000);
      }
      expect(seen).toEqual([0, 1, 2, 3]);
      await sub.close();
    });

    it('keeps a parked event the same RecordedEvent the handler got live, field types included', async () => {
      const store = await open();
      await store.append('typed', [{ type: 'Poison', data: { n: 1 }, metadata: { tenant: 't1' } }]);
      const live: RecordedEvent[] = [];
      const replayed: unknown[] = [];
      let broken = true;
      const sub = store.subscribe({ name: 'typed', maxAttempts: 1, backoff: FAST }, (e) => {
        if (broken) {
          live.push(e);
          throw new Error('not yet');
        }
        // What a handler does with a live event must work on a replayed one too.
        replayed.push({
          next: e.version + 1,
          after: e.position + 1n,
          json: JSON.parse(JSON.stringify({ ...e, position: String(e.position) })),
        });
      });
      await waitFor(async () => (await sub.parked()).length === 1, 'the parked event');
      const [parked] = await sub.parked();
      expect(parked!.event).toEqual(live[0]);
      expect(typeof parked!.event.version).toBe('number');
      expect(typeof parked!.event.position).toBe('bigint');
      expect(typeof parked!.event.time).toBe('string');
      expect(typeof parked!.attempts).toBe('number');
      expect(typeof parked!.parkedAt).toBe('string');
      broken = false;
      expect(await sub.replayParked()).toBe(1);
      expect(replayed).toEqual([
        {
          next: 1,
          after: live[0]!.position + 1n,
          json: expect.objectContaining({ version: 0, data: { n: 1 } }),
        },
      ]);
      await sub.close();
    });

    it('runs a subscription name in one instance at a time; a standby takes over from the checkpoint on close', async () => {
      const store = await open();
      const events = (types: string[]) => types.map((type) => ({ type, data: type }));
      await store.append('h', events(['A', 'B', 'C']));
      const first: string[] = [];
      const second: string[] = [];
      const active = store.subscribe({ name: 'ha', leaseMs: 1000 }, (e) => void first.push(e.type));
      await waitFor(() => first.length === 3, 'the active instance');
      const standby = store.subscribe({ name: 'ha', leaseMs: 1000 }, (e) => void second.push(e.type));
      await standby.caughtUp(); // a standby follows the checkpoint the active instance stores
      expect([active.active, standby.active]).toEqual([true, false]);
      await store.append('h', events(['D', 'E']));
      await waitFor(() => first.length === 5, 'the active instance, live');
      await active.caughtUp();
      await standby.caughtUp();
      expect(second).toEqual([]);
      await active.close();
      await store.append('h', events(['F']));
      await waitFor(() => second.length === 1, 'the standby to take over');
      expect(second).toEqual(['F']);
      expect(first).toEqual(['A', 'B', 'C', 'D', 'E']);
      expect(standby.active).toBe(true);
      await standby.close();
    });

    it('waits for the lease of an instance that died without giving it up, then takes over', async () => {
      // Must not happen: handling while another owner's lease is live. Must not be lost: any event.
      const store = await open();
      await store.append('d', [
        { type: 'A', data: 1 },
        { type: 'B', data: 2 },
      ]);
      expect(await store.backend.claimSubscription('orphaned', 'a-dead-instance', 600)).toBe(
        'a-dead-instance',
      );
      expect(await store.backend.claimSubscription('orphaned', 'someone-else', 600)).toBe('a-dead-instance');
      const seen: string[] = [];
      const sub = store.subscribe({ name: 'orphaned', leaseMs: 1000 }, (e) => void seen.push(e.type));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(seen).toEqual([]);
      expect(sub.active).toBe(false);
      await waitFor(() => seen.length === 2, 'the takeover after the lease expired');
      expect(seen).toEqual(['A', 'B']);
      await sub.close();
      // Closing gave the lease up: another owner gets it at once.
      expect(await store.backend.claimSubscription('orphaned', 'next', 600)).toBe('next');
    });

    it('takes over at once the lease of a process of this host that has exited', async () => {
      // Must not be lost: the event. Must not happen: waiting out a minute-long lease of a dead process.
      const store = await open();
      await store.append('z', [{ type: 'A', data: 1 }]);
      const exited = spawnSync(process.execPath, ['-e', '']).pid;
      const ghost = leaseOwner(exited, 'crashed-instance');
      expect(await store.backend.claimSubscription('crashed', ghost, 60_000)).toBe(ghost);
      // Replacing only ever takes the lease from the owner named.
      expect(await store.backend.claimSubscription('crashed', 'other', 60_000, 'not-the-holder')).toBe(ghost);
      const seen: string[] = [];
      const sub = store.subscribe({ name: 'crashed', leaseMs: 60_000 }, (e) => void seen.push(e.type));
      await waitFor(() => seen.length === 1, 'the takeover', 3000);
      expect(sub.active).toBe(true);
      await sub.close();
    });

    it('runs every instance at once with exclusive: false, each event handled at least once', async () => {
      // The instances share one checkpoint: an event may reach one of them or several, never none.
      const store = await open();
      await store.append('x', [{ type: 'A', data: 1 }]);
      const seen: string[] = [];
      const subs = [1, 2].map((n) =>
        store.subscribe({ name: 'shared', exclusive: false }, (e) => void seen.push(`${n}:${e.data}`)),
      );
      await Promise.all(subs.map((s) => s.caughtUp()));
      expect(subs.map((s) => s.active)).toEqual([true, true]);
      await store.append('x', [{ type: 'B', data: 2 }]);
      await waitFor(() => seen.some((e) => e.endsWith(':2')), 'the live event');
      await Promise.all(subs.map((s) => s.caughtUp()));
      expect(new Set(seen.map((e) => e.split(':')[1]))).toEqual(new Set(['1', '2']));
      await Promise.all(subs.map((s) => s.close()));
    });

    it('reports lag as events behind the head', async () => {
      const store = await open();
      await store.append(
        'l',
        Array.from({ length: 5 }, (_, i) => ({ type: 'n', data: i })),
      );
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const seen: number[] = [];
      const sub = store.subscribe({ name: 'slow', batchSize: 10 }, async (e) => {
        if (seen.length === 0) await gate;
        seen.push(e.data as number);
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect((await sub.lag()).behind).toBe(5);
      release();
      await waitFor(() => seen.length === 5, 'all events');
      await sub.caughtUp();
      expect((await sub.lag()).behind).toBe(0);
      await sub.close();
    });

    it('keeps the latest snapshot of a stream', async () => {
      const store = await open();
      expect(await store.loadSnapshot('agg')).toBeUndefined();
      await store.saveSnapshot({
        streamId: 'agg',
        version: 9,
        schemaVersion: 1,
        state: { total: 5, items: ['a'] },
      });
      await store.saveSnapshot({
        streamId: 'agg',
        version: 19,
        schemaVersion: 2,
        state: { total: 7, items: ['a', 'b'] },
      });
      expect(await store.loadSnapshot('agg')).toMatchObject({
        streamId: 'agg',
        version: 19,
        schemaVersion: 2,
        state: { total: 7, items: ['a', 'b'] },
      });
    });

    it('never replaces a snapshot with one of an earlier version of the same shape (a slow save arriving late)', async () => {
      const store = await open();
      await store.saveSnapshot({ streamId: 'late', version: 19, schemaVersion: 1, state: { n: 19 } });
      await store.saveSnapshot({ streamId: 'late', version: 9, schemaVersion: 1, state: { n: 9 } });
      expect(await store.loadSnapshot('late')).toMatchObject({
        version: 19,
        schemaVersion: 1,
        state: { n: 19 },
      });
      // The same version again replaces it (a state recomputed by fixed code).
      await store.saveSnapshot({ streamId: 'late', version: 19, schemaVersion: 1, state: { n: 190 } });
      expect(await store.loadSnapshot('late')).toMatchObject({ version: 19, state: { n: 190 } });
      // A snapshot of another shape replaces it, whatever its version: the stored one would be
      // ignored by loads of the new shape.
      await store.saveSnapshot({ streamId: 'late', version: 4, schemaVersion: 2, state: { m: 4 } });
      expect(await store.loadSnapshot('late')).toMatchObject({
        version: 4,
        schemaVersion: 2,
        state: { m: 4 },
      });
      // Saves racing: whatever order they land in, the latest version is what stays.
      await Promise.all(
        [7, 30, 12, 29, 5].map((version) =>
          store.saveSnapshot({ streamId: 'late', version, schemaVersion: 2, state: { m: version } }),
        ),
      );
      expect(await store.loadSnapshot('late')).toMatchObject({ version: 30, state: { m: 30 } });
    });
  });
}
