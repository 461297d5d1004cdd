import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../messaging/logger.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { SqliteEventStoreBackend } from '../sqlite/sqlite-backend.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import type { EventStoreBackend } from './backend.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';

// Subscription behaviour that goes through the backend (parking, checkpoints, leases), on every
// backend. Each storage can be opened several times, as by several processes of one service.

const dir = mkdtempSync(join(tmpdir(), 'ferry-subbackends-'));
const schemas: string[] = [];
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas(schemas);
});

/** Returns a function opening one more store over the same fresh storage. */
type Storage = () => () => EventStoreBackend;

const storages: [string, Storage][] = [
  [
    'memory',
    () => {
      const backend = new MemoryEventStoreBackend();
      // One backend shared by every "instance"; closing one store must not close it for the others.
      return () =>
        new Proxy(backend, {
          get(target, property) {
            if (property === 'close') return async () => {};
            const value = Reflect.get(target, property, target);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        });
    },
  ],
  [
    'sqlite',
    () => {
      const path = join(dir, `${testSchemaName('s')}.db`);
      return () => new SqliteEventStoreBackend({ path });
    },
  ],
  [
    'postgres',
    () => {
      const schema = testSchemaName('subb');
      schemas.push(schema);
      return () =>
        new PostgresEventStoreBackend({ url: postgresTestUrl(), schema, poolSize: 2, logger: quiet() });
    },
  ],
];

function quiet(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const noop = () => {};
  return { warnings, debug: noop, info: noop, error: noop, warn: (message) => void warnings.push(message) };
}

const FAST = { initialDelayMs: 5, factor: 2, maxDelayMs: 20 };

describe.each(storages)('subscriptions on %s', (_name, storage) => {
  const stores: EventStore[] = [];
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });
  async function opener(): Promise<(logger?: Logger) => Promise<EventStore>> {
    const next = storage();
    return async (logger = quiet()) => {
      const backend = next();
      await backend.open();
      const store = new EventStore(backend, { logger });
      stores.push(store);
      return store;
    };
  }

  describe('a handler that throws something other than an Error', () => {
    const odd: [string, () => unknown][] = [
      ['an object without a prototype', () => Object.create(null)],
      ['undefined', () => undefined],
      ['a string', () => 'plain text'],
      [
        'an object whose toString throws',
        () => ({
          toString: () => {
            throw new Error('no text');
          },
        }),
      ],
      [
        'a revoked proxy',
        () => {
          const p = Proxy.revocable({}, {});
          p.revoke();
          return p.proxy;
        },
      ],
      [
        'an Error whose message getter throws',
        () =>
          Object.defineProperty(new Error(), 'message', {
            get: () => {
              throw new Error('x');
            },
          }),
      ],
    ];
    it.each(odd)(
      '%s: retried, parked like any failure, and the subscription goes on',
      async (_what, value) => {
        const logger = quiet();
        const store = await (await opener())(logger);
        await store.append('s', [
          { type: 'Bad', data: 1 },
          { type: 'Good', data: 2 },
        ]);
        let badAttempts = 0;
        const handled: string[] = [];
        const sub = store.subscribe({ name: 'odd', maxAttempts: 3, backoff: FAST }, (event) => {
          if (event.type === 'Bad') {
            badAttempts++;
            throw value();
          }
          handled.push(event.type);
        });
        await sub.caughtUp();
        expect(badAttempts).toBe(3);
        expect(handled).toEqual(['Good']);
        const parked = await sub.parked();
        expect(parked.map((p) => [p.event.type, p.attempts])).toEqual([['Bad', 3]]);
        expect(typeof parked[0]!.error).toBe('string');
        expect(parked[0]!.error.length).toBeGreaterThan(0);
        expect(logger.warnings.some((w) => w.includes('parked event'))).toBe(true);
        expect(await sub.lag()).toMatchObject({ behind: 0 });
        // Still alive: a later event is handled.
        await store.append('s', [{ type: 'Good', data: 3 }]);
        await sub.caughtUp();
        expect(handled).toEqual(['Good', 'Good']);
        // A replay that fails with such a value again keeps it parked.
        expect(await sub.replayParked()).toBe(0);
        expect(await sub.parked()).toHaveLength(1);
      },
    );
  });
});
