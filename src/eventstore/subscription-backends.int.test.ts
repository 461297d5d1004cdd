import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import type { Logger } from '../logging/logger.js';
import { PostgresEventStoreBackend } from '../postgres/postgres-backend.js';
import { isTimeoutError } from '../resilience/errors.js';
import { SqliteEventStoreBackend } from '../sqlite/sqlite-backend.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import type { EventStoreBackend } from './backend.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';
import { DEFAULT_EVENT_SUBSCRIPTION_OPTIONS } from './subscription.js';

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

  describe('handlerTimeoutMs', () => {
    it('fails an attempt that runs past the limit, aborting its signal, and parks the event after the last one even if the handler ignores the signal', async () => {
      const logger = quiet();
      const store = await (await opener())(logger);
      await store.append('s', [
        { type: 'Hang', data: 1 },
        { type: 'Quick', data: 2 },
      ]);
      const signals: AbortSignal[] = [];
      const attempts: number[] = [];
      const handled: string[] = [];
      const sub = store.subscribe(
        { name: 'slow', maxAttempts: 2, backoff: FAST, handlerTimeoutMs: 80 },
        (event, { signal, attempt }) => {
          if (event.type === 'Hang') {
            signals.push(signal);
            attempts.push(attempt);
            return new Promise<void>(() => {}); // never settles, ignores the signal
          }
          handled.push(event.type);
          expect(signal.aborted).toBe(false);
          return undefined;
        },
      );
      const started = Date.now();
      await sub.caughtUp();
      expect(Date.now() - started).toBeGreaterThanOrEqual(2 * 80);
      expect(attempts).toEqual([1, 2]);
      expect(signals.map((s) => s.aborted)).toEqual([true, true]);
      expect(isTimeoutError(signals[0]!.reason)).toBe(true);
      expect(handled).toEqual(['Quick']);
      const parked = await sub.parked();
      expect(parked.map((p) => [p.event.type, p.attempts])).toEqual([['Hang', 2]]);
      expect(parked[0]!.error).toMatch(/did not finish within 80 ms/);
      expect(await sub.lag()).toMatchObject({ behind: 0 });
    });

    it('retries a timed-out attempt; a handler that stops on its signal succeeds on the next one, and one within the limit is never aborted', async () => {
      const logger = quiet();
      const store = await (await opener())(logger);
      await store.append('s', [
        { type: 'Slow', data: 1 },
        { type: 'Quick', data: 2 },
      ]);
      const log: string[] = [];
      const signals: AbortSignal[] = [];
      const sub = store.subscribe(
        { name: 'honours', maxAttempts: 3, backoff: FAST, handlerTimeoutMs: 100 },
        async (event, { signal, attempt }) => {
          signals.push(signal);
          log.push(`${event.type}#${attempt} start`);
          if (event.type === 'Slow' && attempt === 1) {
            await new Promise<void>((resolve, reject) => {
              const timer = setTimeout(resolve, 5000);
              signal.addEventListener('abort', () => {
                clearTimeout(timer);
                reject(signal.reason);
              });
            });
          }
          await new Promise((resolve) => setTimeout(resolve, 30)); // within the limit
          log.push(`${event.type}#${attempt} end`);
        },
      );
      await sub.caughtUp();
      expect(log).toEqual(['Slow#1 start', 'Slow#2 start', 'Slow#2 end', 'Quick#1 start', 'Quick#1 end']);
      expect(signals.map((s) => s.aborted)).toEqual([true, false, false]);
      expect(await sub.parked()).toEqual([]);
      expect(logger.warnings.some((w) => w.includes('ran past handlerTimeoutMs failed'))).toBe(true);
    });

    it('refuses a limit that is not a positive integer a timer can hold, and defaults to 30 s', async () => {
      const store = await (await opener())();
      for (const handlerTimeoutMs of [0, -1, 1.5, Number.POSITIVE_INFINITY, Number.NaN, 2 ** 31]) {
        expect(() => store.subscribe({ name: 'bad', handlerTimeoutMs }, () => {})).toThrow(
          /handlerTimeoutMs/,
        );
      }
      expect(DEFAULT_EVENT_SUBSCRIPTION_OPTIONS.handlerTimeoutMs).toBe(30_000);
    });
  });

  describe("from: 'end'", () => {
    it('closed at once after it starts, it keeps the end it started at: what is appended before it runs again reaches it', async () => {
      const store = await (await opener())();
      await store.append('end-1', [{ type: 'T', data: 0 }]);
      const got: unknown[] = [];
      const handler = (e: { data: unknown }) => {
        got.push(e.data);
      };
      // On PostgreSQL a close within a few ms of subscribe stored no checkpoint (finding the end
      // was cut short); the next start took the end as it was then, and the event appended
      // meanwhile never reached the subscription.
      await store.subscribe({ name: 'end-close', from: 'end' }, handler).close();
      await store.append('end-1', [{ type: 'T', data: 1 }]);
      const again = store.subscribe({ name: 'end-close', from: 'end' }, handler);
      await again.caughtUp();
      await again.close();
      expect(got).toEqual([1]);
    });

    it('starts after what existed when subscribe() returned: an event appended right after it reaches the handler, one before does not', async () => {
      const store = await (await opener())();
      for (let round = 0; round < 5; round++) {
        await store.append('end-2', [{ type: 'T', data: `before ${round}` }]);
        const got: unknown[] = [];
        const sub = store.subscribe({ name: `end-right-after-${round}`, from: 'end' }, (e) => {
          got.push(e.data);
        });
        // Nothing awaited between: the end was looked up after this append, which it then took
        // as existing, and the handler never got it (every backend, every time).
        await store.append('end-2', [{ type: 'T', data: `after ${round}` }]);
        await sub.caughtUp();
        await sub.close();
        expect(got).toEqual([`after ${round}`]);
      }
    });

    it('lag() before it started names the position it starts at: an event appended after lag() reaches the handler', async () => {
      const store = await (await opener())();
      await store.append('end-3', [{ type: 'T', data: 'before' }]);
      for (let round = 0; round < 10; round++) {
        const got: unknown[] = [];
        const sub = store.subscribe({ name: `end-lag-${round}`, from: 'end' }, (e) => {
          got.push(e.data);
        });
        const lag = await sub.lag();
        expect(lag.behind).toBe(0);
        // On PostgreSQL lag() took the end as final now, and the subscription later fixed its start
        // past this append: missed in about a quarter of the rounds.
        const { position } = await store.append('end-3', [{ type: 'T', data: round }]);
        expect(position).toBeGreaterThan(lag.position);
        await sub.caughtUp();
        await sub.close();
        expect(got).toEqual([round]);
      }
    });
  });

  describe('options', () => {
    it('refuses, before anything starts, options no backend could run alike', async () => {
      const store = await (await opener())();
      const bad: [Record<string, unknown>, RegExp][] = [
        // 0 spun the event loop (memory, SQLite) or hung close (PostgreSQL); the others failed on
        // PostgreSQL only, retried for ever.
        [{ batchSize: 0 }, /batchSize/],
        [{ batchSize: -1 }, /batchSize/],
        [{ batchSize: 1.5 }, /batchSize/],
        [{ batchSize: 'x' }, /batchSize/],
        [{ batchSize: Number.NaN }, /batchSize/],
        // Past a timer's range the lease was renewed in a tight loop here, refused by PostgreSQL there.
        [{ leaseMs: 2 ** 33 }, /leaseMs/],
        [{ leaseMs: 2 ** 31 }, /leaseMs/],
        [{ leaseMs: 99 }, /leaseMs/],
        [{ maxAttempts: 0 }, /maxAttempts/],
        [{ maxAttempts: 1e9 }, /maxAttempts/],
        [{ idlePollMs: 0 }, /idlePollMs/],
        [{ idlePollMs: Number.POSITIVE_INFINITY }, /idlePollMs/],
        [{ from: 'middle' }, /from must be 'start' or 'end'/],
        [{ types: 'T' }, /types must be an array/],
        [{ types: [''] }, /in types/],
        [{ exclusive: 'no' }, /exclusive must be true or false/],
        [{ backoff: null }, /backoff must be an object/],
        // Past a timer's range the retry fired at once: an event meant to wait was parked at once.
        [{ backoff: { initialDelayMs: 2 ** 31, maxDelayMs: 2 ** 31 } }, /retry 1 a delay of 2147483648 ms/],
        [
          { backoff: { initialDelayMs: 1000, maxDelayMs: Number.POSITIVE_INFINITY }, maxAttempts: 100 },
          /retry/,
        ],
        [{ backoff: { initialDelayMs: 0, factor: Number.POSITIVE_INFINITY } }, /retry 2 a delay of NaN/],
        // The keys left out are the subscription's own defaults (100 ms doubling): retry 26 is the
        // first past a timer's range, 100 ms * 2^25 (from the bus's 1 s it was retry 23, 4194304000 ms).
        [
          { backoff: { maxDelayMs: 2 ** 40 }, maxAttempts: 40 },
          /^backoff gives retry 26 a delay of 3355443200 ms/,
        ],
        // Misspelt, these were dropped without a word and the default used.
        [{ batchsize: 10 }, /^subscribe has no option "batchsize": it takes name, from, types, batchSize, /],
        [{ handlerTimeout: 10 }, /^subscribe has no option "handlerTimeout"/],
        [{ backoff: { initialDelay: 5000 } }, /^backoff has no option "initialDelay"/],
      ];
      for (const [options, reason] of bad) {
        let thrown: unknown;
        try {
          store.subscribe({ name: 'bad', ...options }, () => {});
        } catch (error) {
          thrown = error;
        }
        expect((thrown as { code?: string })?.code, JSON.stringify(options)).toBe('INVALID_OPTIONS');
        expect((thrown as Error).message).toMatch(reason);
      }
      // A handler that is not a function parked every event, all looking healthy.
      expect(() => store.subscribe({ name: 'bad' }, null as never)).toThrow(/handler function/);
      expect(() => store.subscribe(null as never, () => {})).toThrow(/subscribe options must be an object/);
      // A boxed number with a name was taken; an inherited misspelt key was dropped.
      expect(() => store.subscribe(Object.assign(new Number(1), { name: 'n' }) as never, () => {})).toThrow(
        /not a boxed number/,
      );
      expect(() => store.subscribe(Object.create({ name: 'i', batchsize: 3 }), () => {})).toThrow(
        /has no option "batchsize"/,
      );
      // The bounds themselves are taken.
      const ok = store.subscribe(
        {
          name: 'edges',
          batchSize: 1,
          leaseMs: 2 ** 31 - 1,
          maxAttempts: 10_000,
          idlePollMs: 1,
          types: ['T'],
          backoff: { initialDelayMs: 1, maxDelayMs: 2 ** 31 - 1 },
        },
        () => {},
      );
      await ok.close();
    });

    it('takes an option set to undefined as left out, and handles every event', async () => {
      const store = await (await opener())();
      await store.append('u-1', [
        { type: 'T', data: 1 },
        { type: 'T', data: 2 },
      ]);
      const got: unknown[] = [];
      // `batchSize: undefined` replaced the default and spun the event loop for ever (nothing handled,
      // no timer ran); the others replaced theirs with undefined too.
      const sub = store.subscribe(
        {
          name: 'undefined-options',
          batchSize: undefined,
          maxAttempts: undefined,
          backoff: undefined,
          idlePollMs: undefined,
          leaseMs: undefined,
          handlerTimeoutMs: undefined,
          exclusive: undefined,
          from: undefined,
          types: undefined,
        } as never,
        (e) => {
          got.push(e.data);
        },
      );
      await waitFor(
        () => got.length === 2,
        () => `handled ${got.length} of 2`,
      );
      expect(got).toEqual([1, 2]);
      await sub.close();
    });
  });

  it('parks an event whose handler throws an error with NUL and a lone surrogate, alike on every backend', async () => {
    const store = await (await opener())();
    await store.append('nul', [
      { type: 'Bad', data: 1 },
      { type: 'Good', data: 2 },
    ]);
    const handled: string[] = [];
    const sub = store.subscribe({ name: 'nul-error', maxAttempts: 2, backoff: FAST }, (event) => {
      if (event.type === 'Bad') throw new Error('bad\u0000byte \ud800 here');
      handled.push(event.type);
    });
    // PostgreSQL refused the NUL: parking was retried for ever and the subscription never went on.
    await sub.caughtUp();
    expect(handled).toEqual(['Good']);
    const [parked] = await sub.parked();
    expect(parked?.error).toContain('bad\ufffdbyte \ufffd here');
    await sub.close();
  });

  describe('close() called by its own handler', () => {
    it('sub.close() and store.close() do not wait for the handler that calls them; its event is handled again on the next run', async () => {
      for (const which of ['subscription', 'store'] as const) {
        const open = await opener();
        const store = await open();
        const name = `self-close-${which}`;
        await store.append(`s-${which}`, [
          { type: 'A', data: 1 },
          { type: 'Stop', data: 2 },
          { type: 'A', data: 3 },
        ]);
        const handled: number[] = [];
        let closedAfterMs = -1;
        const sub = store.subscribe({ name, handlerTimeoutMs: 20_000 }, async (event) => {
          if (event.type === 'Stop' && closedAfterMs < 0) {
            const started = Date.now();
            await (which === 'subscription' ? sub.close() : store.close());
            closedAfterMs = Date.now() - started;
            return;
          }
          handled.push(event.data as number);
        });
        await waitFor(() => closedAfterMs >= 0, 'close() to resolve inside the handler', 5000);
        // It used to wait for its own handler until handlerTimeoutMs.
        expect(closedAfterMs).toBeLessThan(5000);
        expect(handled).toEqual([1]);
        await sub.done;
        if (which === 'store') expect(store.closed).toBe(true);
        // The event whose handler closed it is not past the checkpoint: the next run handles it.
        const again = which === 'store' ? await open() : store;
        const seen: number[] = [];
        const next = again.subscribe({ name }, (event) => {
          seen.push(event.data as number);
        });
        await next.caughtUp();
        expect(seen).toEqual([2, 3]);
        await next.close();
      }
    });
  });

  describe('a standby instance', () => {
    it("answers caughtUp() and lag() for the subscription, from the active instance's stored checkpoint", async () => {
      const open = await opener();
      const [a, b] = [await open(), await open()];
      for (let i = 0; i < 3; i++) {
        await a.append(
          `s-${i}`,
          Array.from({ length: 10 }, (_, n) => ({ type: 'E', data: n })),
        );
      }
      const positions: bigint[] = [];
      for await (const e of a.readAll()) positions.push(e.position);
      const last = positions[positions.length - 1]!;

      const handledA: bigint[] = [];
      const handledB: bigint[] = [];
      const slow = (into: bigint[]) => async (event: { position: bigint }) => {
        await new Promise((resolve) => setTimeout(resolve, 15));
        into.push(event.position);
      };
      const options = { name: 'proj', batchSize: 5, leaseMs: 2000 };
      const active = a.subscribe(options, slow(handledA));
      await waitFor(() => active.active, 'the first instance to take the lease');
      const standby = b.subscribe(options, slow(handledB));
      await waitFor(() => handledA.length >= 7, 'the active instance to handle a few batches');
      expect(standby.active).toBe(false);

      // Midway: the standby reports the stored checkpoint, neither 0 nor the whole store behind.
      const midway = await standby.lag();
      expect(midway.position).toBeGreaterThan(0n);
      expect(midway.position).toBeLessThan(last);
      expect(midway.behind).toBe(positions.filter((p) => p > midway.position).length);
      expect(midway.behind).toBeLessThan(30);

      await standby.caughtUp();
      expect(handledA).toEqual(positions); // resolved only once the active instance handled everything
      expect(handledB).toEqual([]);
      expect(await standby.lag()).toEqual({ position: last, behind: 0 });
      expect(await active.lag()).toEqual({ position: last, behind: 0 });

      // Later events: the standby waits for them too, and follows.
      await a.append('s-0', [{ type: 'E', data: 'late' }]);
      await standby.caughtUp();
      expect(handledA).toHaveLength(31);
      expect((await standby.lag()).behind).toBe(0);
      expect(handledB).toEqual([]);
    });

    it('takes over at once when the active instance closes, not on its next try a second later', async () => {
      const open = await opener();
      const first = await open();
      const standingBy: string[] = [];
      const second = await open({ ...quiet(), info: (message) => void standingBy.push(message) });
      await first.append('s', [{ type: 'E', data: 0 }]);
      const active = first.subscribe({ name: 'takeover' }, () => {});
      await active.caughtUp();
      let handledAt = 0;
      second.subscribe({ name: 'takeover' }, (event) => {
        if (event.data === 1) handledAt = Date.now();
      });
      // Its claim failed: it waits for its next try, a fifth of leaseMs (10 s) but at most 1 s, from now.
      await waitFor(
        () => standingBy.some((m) => m.includes('standing by')),
        'the second instance to stand by',
      );
      await new Promise((resolve) => setTimeout(resolve, 100)); // PostgreSQL: its LISTEN connection is up
      await active.close();
      const closed = Date.now();
      await second.append('s', [{ type: 'E', data: 1 }]);
      await waitFor(() => handledAt > 0, 'the standby to take over and handle the event');
      // Before, about 900 ms: the standby claimed only on its poll. Generous for a loaded machine.
      expect(handledAt - closed).toBeLessThan(400);
    });
  });

  describe('parked() and replayParked() arguments', () => {
    it('refuses a limit or positions the backends would each read their own way, with INVALID_OPTIONS', async () => {
      const store = await (await opener())();
      for (let i = 0; i < 4; i++) await store.append('s', [{ type: 'E', data: i }]);
      const sub = store.subscribe({ name: 'args', maxAttempts: 1 }, () => {
        throw new Error('fails');
      });
      await sub.caughtUp();
      // Before: memory sliced from the end (-1: 3 events) or gave [], SQLite all 4 or SQLITE_MISMATCH,
      // PostgreSQL raw driver errors.
      for (const limit of [-1, 1.5, Number.NaN, null, '2', 2n, Number.POSITIVE_INFINITY, 2 ** 53]) {
        const error = await sub.parked(limit as number).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isInvalidOptionsError(error), String(limit)).toBe(true);
      }
      expect(await sub.parked()).toHaveLength(4);
      expect(await sub.parked(undefined)).toHaveLength(4);
      expect(await sub.parked(3)).toHaveLength(3);
      expect(await sub.parked(0)).toEqual([]);
      // Before: a TypeError (not iterable), or a string's characters taken for positions.
      const position = (await sub.parked(1))[0]!.event.position;
      for (const positions of [
        null,
        5,
        'all',
        position,
        new Set([position]),
        [Number(position)],
        [position, '2'],
      ]) {
        const error = await sub.replayParked(positions as bigint[]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isInvalidOptionsError(error), String(positions)).toBe(true);
      }
      expect(await sub.parked()).toHaveLength(4); // nothing was marked for replay
      expect(await sub.replayParked([])).toBe(0);
    });
  });

  describe('caughtUp() and close', () => {
    it('a caughtUp() waiting when the subscription closes, or made after, rejects: it never reports a stopped subscription caught up', async () => {
      const store = await (await opener())();
      for (let i = 0; i < 5; i++) await store.append('cu-1', [{ type: 'T', data: i }]);
      let handled = 0;
      const sub = store.subscribe({ name: 'cu-close', batchSize: 1 }, async () => {
        await new Promise((resolve) => setTimeout(resolve, 50));
        handled++;
      });
      await waitFor(() => handled >= 1, 'one event handled');
      // It resolved, with four events still behind, and a readiness gate took it for caught up.
      const waiting = sub.caughtUp().then(
        () => 'resolved',
        (error: { code?: string }) => error.code,
      );
      await sub.close();
      expect(await waiting).toBe('EVENT_STORE_CLOSED');
      await expect(sub.caughtUp()).rejects.toMatchObject({
        code: 'EVENT_STORE_CLOSED',
        message: 'subscription "cu-close" is closed: it did not catch up',
      });
      expect(handled).toBeLessThan(5);
      expect((await sub.lag()).behind).toBe(5 - handled);
    });

    it("a standby's caughtUp() rejects when the standby closes before the checkpoint passes", async () => {
      const open = await opener();
      const [a, b] = [await open(), await open()];
      await a.append('cu-2', [{ type: 'T', data: 0 }]);
      let release: () => void = () => {};
      const stuck = new Promise<void>((resolve) => {
        release = resolve;
      });
      const active = a.subscribe({ name: 'cu-standby', leaseMs: 2000 }, () => stuck);
      await waitFor(() => active.active, 'the first instance to take the lease');
      const standby = b.subscribe({ name: 'cu-standby', leaseMs: 2000 }, () => {});
      const waiting = standby.caughtUp().then(
        () => 'resolved',
        (error: { code?: string }) => error.code,
      );
      await standby.close();
      expect(await waiting).toBe('EVENT_STORE_CLOSED');
      release();
      await active.close();
    });
  });

  describe('replayParked', () => {
    it('cut by store.close(), rejects saying the replay did not finish (it said only "the event store is closed")', async () => {
      const store = await (await opener())();
      for (let i = 0; i < 3; i++) await store.append('rp-2', [{ type: 'T', data: i }]);
      let failing = true;
      const started: unknown[] = [];
      const sub = store.subscribe({ name: 'rp-store-close', maxAttempts: 1 }, async (e) => {
        if (failing) throw new Error('down');
        started.push(e.data);
        await new Promise((resolve) => setTimeout(resolve, 100));
      });
      await sub.caughtUp();
      failing = false;
      const replaying = sub.replayParked().then(
        (n) => ({ n }),
        (error: Error & { code?: string }) => ({ code: error.code, message: error.message }),
      );
      await waitFor(() => started.length === 1, 'the first replay to start');
      await store.close();
      expect(await replaying).toMatchObject({
        code: 'EVENT_STORE_CLOSED',
        message: expect.stringMatching(
          /^subscription "rp-store-close" closed before it replayed every parked event asked for.* stay marked and are replayed when the subscription runs again$/,
        ),
      });
    });

    it('closed mid-replay, rejects saying how many succeeded and how many wait; those are replayed at the next run', async () => {
      const open = await opener();
      const store = await open();
      for (let i = 0; i < 3; i++) await store.append('rp-1', [{ type: 'T', data: i }]);
      let failing = true;
      const started: unknown[] = [];
      const succeeded: unknown[] = [];
      const handler = async (e: { data: unknown }) => {
        if (failing) throw new Error('down');
        started.push(e.data);
        await new Promise((resolve) => setTimeout(resolve, 150));
        succeeded.push(e.data);
      };
      const name = { name: 'rp-close', maxAttempts: 1 };
      const sub = store.subscribe(name, handler);
      await sub.caughtUp();
      expect(await sub.parked()).toHaveLength(3);
      failing = false;
      const replaying = sub.replayParked().then(
        (n) => ({ n }),
        (error: Error & { code?: string }) => ({ code: error.code, message: error.message }),
      );
      await waitFor(() => started.length === 2, 'the second replay to start');
      // The second is in its handler: close waits for it.
      await sub.close();
      // It resolved 1 (the second, in flight at close, succeeded after the count), as if all were tried.
      expect(await replaying).toEqual({
        code: 'EVENT_STORE_CLOSED',
        message:
          'subscription "rp-close" closed before it replayed every parked event asked for: 2 of 3 succeeded, 1 not yet tried stay marked and are replayed when the subscription runs again',
      });
      expect(succeeded).toEqual([0, 1]);
      // Nothing is lost: the one not tried is replayed when the subscription runs again.
      const again = store.subscribe(name, handler);
      await waitFor(async () => (await again.parked()).length === 0, 'the last replay after the restart');
      expect(succeeded).toEqual([0, 1, 2]);
      await again.close();
    });

    /** A read-modify-write projection (a running total) that notes how many handlers run at once. */
    function projection() {
      const p = { total: 0, running: 0, mostAtOnce: 0, broken: true, calls: 0 };
      const handler = async (event: { type: string; data: unknown }) => {
        p.calls++;
        p.running++;
        p.mostAtOnce = Math.max(p.mostAtOnce, p.running);
        try {
          const read = p.total;
          await new Promise((resolve) => setTimeout(resolve, 3));
          if (event.type === 'Flaky' && p.broken) throw new Error('projection unavailable');
          p.total = read + (event.data as number);
        } finally {
          p.running--;
        }
      };
      return { p, handler };
    }
    const options = { name: 'totals', maxAttempts: 1, batchSize: 10, idlePollMs: 200, leaseMs: 2000 };

    it.each(['the active instance', 'a standby'])(
      'asked of %s, runs in the active loop between batches: no two handlers at once, no lost update',
      async (asker) => {
        const open = await opener();
        const [a, b] = [await open(), await open()];
        const { p, handler } = projection();
        await a.append('t', [{ type: 'Flaky', data: 1 }]);
        const active = a.subscribe(options, handler);
        await active.caughtUp();
        expect((await active.parked()).map((e) => e.event.type)).toEqual(['Flaky']);
        const standbyCalls: unknown[] = [];
        const standby = b.subscribe(options, (e) => void standbyCalls.push(e));
        await waitFor(async () => (await standby.lag()).position > 0n, 'the standby to see the checkpoint');
        expect(standby.active).toBe(false);

        p.broken = false;
        for (let i = 0; i < 5; i++) {
          await a.append(
            't',
            Array.from({ length: 10 }, () => ({ type: 'Add', data: 1 })),
          );
        }
        const replayed = await (asker === 'a standby' ? standby : active).replayParked();
        await active.caughtUp();
        expect(replayed).toBe(1);
        expect(p.mostAtOnce).toBe(1);
        expect(p.total).toBe(51);
        expect(await active.parked()).toEqual([]);
        expect(await standby.parked()).toEqual([]);
        expect(standbyCalls).toEqual([]);
        // Nothing is replayed a second time.
        expect(await active.replayParked()).toBe(0);
        expect(p.total).toBe(51);
      },
    );

    it('keeps what fails again parked, replays only the positions asked, and each once', async () => {
      const store = await (await opener())();
      const { p, handler } = projection();
      await store.append('t', [
        { type: 'Flaky', data: 1 },
        { type: 'Flaky', data: 10 },
        { type: 'Flaky', data: 100 },
      ]);
      const sub = store.subscribe(options, handler);
      await sub.caughtUp();
      const parked = await sub.parked();
      expect(parked).toHaveLength(3);
      const calls = p.calls;
      expect(await sub.replayParked()).toBe(0); // still broken
      expect(p.calls).toBe(calls + 3);
      expect(await sub.parked()).toHaveLength(3);
      p.broken = false;
      expect(await sub.replayParked([parked[1]!.event.position])).toBe(1);
      expect(p.total).toBe(10);
      expect((await sub.parked()).map((e) => e.event.data)).toEqual([1, 100]);
      expect(await sub.replayParked()).toBe(2);
      expect(p.total).toBe(111);
      expect(p.mostAtOnce).toBe(1);
      expect(await sub.parked()).toEqual([]);
    });
  });
});
