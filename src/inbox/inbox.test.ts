import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Message } from '../messaging/envelope.js';
import {
  composeMiddleware,
  type HandlerMiddleware,
  idempotent,
  type SubscriptionInfo,
} from '../messaging/middleware.js';
import { ClaimLostError } from './claim-lost-error.js';
import { type Inbox, type InboxClaim, MemoryInbox } from './inbox.js';

afterEach(() => {
  vi.useRealTimers();
});

/** Lets every pending promise continuation run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

/** Tracks whether a promise has settled, and with what. */
function track<T>(promise: Promise<T>): { readonly settled: boolean; readonly value: T | undefined } {
  const state: { settled: boolean; value: T | undefined } = { settled: false, value: undefined };
  void promise.then((value) => {
    state.settled = true;
    state.value = value;
  });
  return state;
}

async function claim(inbox: MemoryInbox, key: string): Promise<InboxClaim> {
  const claimed = await inbox.begin(key);
  if (claimed === null) throw new Error(`expected a claim on ${key}`);
  return claimed;
}

function message(id: string, type = 'order.created'): Message {
  return {
    specversion: '1.0',
    id,
    source: 'test',
    type,
    time: '2026-01-01T00:00:00.000Z',
    datacontenttype: 'application/json',
    data: {},
    correlationid: id,
    attempt: 1,
  };
}

describe('MemoryInbox', () => {
  it('gives the first begin a claim and, once completed, resolves later begins to null', async () => {
    const inbox = new MemoryInbox();
    const first = await claim(inbox, 'k');
    await first.complete();
    expect(await inbox.begin('k')).toBeNull();
    expect(await inbox.begin('k')).toBeNull();
    expect(inbox.size).toBe(1);
  });

  it('keeps keys apart', async () => {
    const inbox = new MemoryInbox();
    await (await claim(inbox, 'a')).complete();
    expect(await inbox.begin('b')).not.toBeNull();
  });

  it('lets an abandoned key be claimed again', async () => {
    const inbox = new MemoryInbox();
    (await claim(inbox, 'k')).abandon();
    const again = await inbox.begin('k');
    expect(again).not.toBeNull();
    expect(inbox.size).toBe(0);
  });

  it('makes a concurrent begin wait for the holder and resolve null when it completes', async () => {
    const inbox = new MemoryInbox();
    const held = await claim(inbox, 'k');
    const waiting = track(inbox.begin('k'));
    await settle();
    expect(waiting.settled).toBe(false);
    await held.complete();
    await settle();
    expect(waiting).toEqual({ settled: true, value: null });
  });

  it('makes a concurrent begin wait for the holder and get a claim when it abandons', async () => {
    const inbox = new MemoryInbox();
    const held = await claim(inbox, 'k');
    const waiting = track(inbox.begin('k'));
    await settle();
    expect(waiting.settled).toBe(false);
    held.abandon();
    await settle();
    expect(waiting.settled).toBe(true);
    expect(waiting.value).not.toBeNull();
  });

  it('hands an abandoned key to only one of several waiters', async () => {
    const inbox = new MemoryInbox();
    const held = await claim(inbox, 'k');
    const waiters = [track(inbox.begin('k')), track(inbox.begin('k')), track(inbox.begin('k'))];
    held.abandon();
    await settle();
    const claims = waiters.filter((w) => w.settled && w.value !== null && w.value !== undefined);
    expect(claims).toHaveLength(1);
    expect(waiters.filter((w) => w.settled)).toHaveLength(1);

    await claims[0]!.value!.complete();
    await settle();
    expect(waiters.map((w) => w.settled)).toEqual([true, true, true]);
    expect(waiters.filter((w) => w.value === null)).toHaveLength(2);
  });

  it('forgets the oldest keys beyond maxEntries', async () => {
    const inbox = new MemoryInbox({ maxEntries: 2 });
    for (const key of ['k1', 'k2', 'k3']) await (await claim(inbox, key)).complete();
    expect(inbox.size).toBe(2);
    expect(await inbox.begin('k3')).toBeNull();
    expect(await inbox.begin('k2')).toBeNull();
    expect(await inbox.begin('k1')).not.toBeNull();
  });

  it('takes options given as undefined for their defaults', async () => {
    const inbox = new MemoryInbox({ ttlMs: undefined, maxEntries: undefined });
    await (await claim(inbox, 'k')).complete();
    expect(await inbox.begin('k')).toBeNull();
    for (let i = 0; i < 10; i++) await (await claim(inbox, `k${i}`)).complete();
    expect(inbox.size).toBe(11);
  });

  it('refuses an option it does not read, naming it', () => {
    // maxEntry (for maxEntries) kept the default 100,000 keys without a word.
    expect(() => new MemoryInbox({ maxEntry: 10 } as never)).toThrow(
      /MemoryInbox has no option "maxEntry": it takes maxEntries, ttlMs/,
    );
    expect(() => new MemoryInbox(null as never)).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    );
  });

  it('refuses a ttlMs or maxEntries that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '10' as unknown as number]) {
      expect(() => new MemoryInbox({ ttlMs: bad }), `ttlMs ${String(bad)}`).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
      expect(() => new MemoryInbox({ maxEntries: bad }), `maxEntries ${String(bad)}`).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
    }
  });

  it('forgets a key ttlMs after it was completed', async () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date('2026-01-01T00:00:00.000Z'));
    const inbox = new MemoryInbox({ ttlMs: 60_000 });
    await (await claim(inbox, 'k')).complete();

    vi.setSystemTime(new Date('2026-01-01T00:00:59.999Z'));
    expect(await inbox.begin('k')).toBeNull();

    vi.setSystemTime(new Date('2026-01-01T00:01:00.000Z'));
    const again = await inbox.begin('k');
    expect(again).not.toBeNull();
    await again!.complete();

    vi.setSystemTime(new Date('2026-01-01T00:01:30.000Z'));
    expect(await inbox.begin('k')).toBeNull();
  });
});

describe('composeMiddleware', () => {
  const info: SubscriptionInfo = { group: 'g', pattern: 'order.*' };

  it('runs the first middleware of the list outermost', async () => {
    const calls: string[] = [];
    const named =
      (name: string): HandlerMiddleware =>
      (next) =>
      async (m) => {
        calls.push(`${name}:before`);
        await next(m);
        calls.push(`${name}:after`);
      };
    const chain = composeMiddleware(
      [named('a'), named('b'), named('c')],
      async () => {
        calls.push('handler');
      },
      info,
    );
    await chain(message('m'));
    expect(calls).toEqual(['a:before', 'b:before', 'c:before', 'handler', 'c:after', 'b:after', 'a:after']);
  });

  it('tells each middleware which subscription it wraps', () => {
    const seen: SubscriptionInfo[] = [];
    const spy: HandlerMiddleware = (next, subscription) => {
      seen.push(subscription);
      return next;
    };
    composeMiddleware([spy, spy], async () => {}, info);
    expect(seen).toEqual([info, info]);
  });

  it('lets a middleware change the message the handler gets, or skip the handler', async () => {
    const got: string[] = [];
    const rename: HandlerMiddleware = (next) => (m) => next({ ...m, id: `renamed-${m.id}` });
    const skipOdd: HandlerMiddleware = (next) => async (m) => {
      if (!m.id.endsWith('odd')) await next(m);
    };
    const chain = composeMiddleware([rename, skipOdd], async (m) => void got.push(m.id), info);
    await chain(message('even'));
    await chain(message('odd'));
    expect(got).toEqual(['renamed-even']);
  });

  it('returns the handler itself without middleware', () => {
    const handler = async (): Promise<void> => {};
    expect(composeMiddleware([], handler, info)).toBe(handler);
  });
});

describe('idempotent', () => {
  it('keeps keys of different subscriptions apart even when pattern and id contain the separator', async () => {
    const inbox = new MemoryInbox();
    const got: string[] = [];
    const a = composeMiddleware([idempotent(inbox)], async (m) => void got.push(`a:${m.id}`), {
      group: 'g',
      pattern: 'a',
    });
    const b = composeMiddleware([idempotent(inbox)], async (m) => void got.push(`b:${m.id}`), {
      group: 'g',
      pattern: 'a|b.c',
    });
    await a(message('b.c|x'));
    await b(message('x'));
    expect(got).toEqual(['a:b.c|x', 'b:x']);
  });

  it('runs the handler once per message id', async () => {
    const got: string[] = [];
    const chain = composeMiddleware([idempotent(new MemoryInbox())], async (m) => void got.push(m.id), {
      group: 'g',
      pattern: 'order.*',
    });
    await chain(message('m-1'));
    await chain({ ...message('m-1'), attempt: 2 });
    await chain(message('m-2'));
    expect(got).toEqual(['m-1', 'm-2']);
  });

  it('acknowledges a copy whose claim was lost meanwhile, recording nothing for the new holder', async () => {
    const lost: Inbox = {
      begin: async () => ({
        signal: new AbortController().signal,
        complete: async () => {
          throw new ClaimLostError('k');
        },
        abandon: () => {},
      }),
    } as unknown as Inbox;
    let calls = 0;
    const chain = composeMiddleware([idempotent(lost)], async () => void calls++, {
      group: 'g',
      pattern: 'order.*',
    });
    await expect(chain(message('m-1'))).resolves.toBeUndefined();
    expect(calls).toBe(1);
  });

  it('lets a failed message run again and passes the error on', async () => {
    let calls = 0;
    const chain = composeMiddleware(
      [idempotent(new MemoryInbox())],
      async () => {
        calls++;
        if (calls === 1) throw new Error('boom');
      },
      { group: 'g', pattern: 'order.*' },
    );
    await expect(chain(message('m-1'))).rejects.toThrow('boom');
    await chain(message('m-1'));
    await chain(message('m-1'));
    expect(calls).toBe(2);
  });

  it('skips a duplicate delivered while the first is still being handled', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let calls = 0;
    const chain = composeMiddleware(
      [idempotent(new MemoryInbox())],
      async () => {
        calls++;
        await gate;
      },
      { group: 'g', pattern: 'order.*' },
    );
    const first = chain(message('m-1'));
    const duplicate = track(chain(message('m-1')));
    await settle();
    expect(calls).toBe(1);
    expect(duplicate.settled).toBe(false);
    release();
    await first;
    await settle();
    expect(duplicate.settled).toBe(true);
    expect(calls).toBe(1);
  });

  it('keeps keys per group and pattern: every subscription processes the message once', async () => {
    const inbox = new MemoryInbox();
    const got: string[] = [];
    const subscriptions: SubscriptionInfo[] = [
      { group: 'g', pattern: 'order.*' },
      { group: 'g', pattern: 'order.#' },
      { group: 'other', pattern: 'order.*' },
    ];
    const chains = subscriptions.map((s) =>
      composeMiddleware(
        [idempotent(inbox)],
        async (m) => void got.push(`${s.group}/${s.pattern}/${m.id}`),
        s,
      ),
    );
    for (const chain of chains) await chain(message('m-1'));
    for (const chain of chains) await chain(message('m-1'));
    expect(got).toEqual(['g/order.*/m-1', 'g/order.#/m-1', 'other/order.*/m-1']);
  });
});
