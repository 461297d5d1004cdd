import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { createBus } from '../connect/create-bus.js';
import { currentContext, type FerryContext, runWithContext } from '../context/context.js';
import { InvalidOptionsError, isFerryError, isInvalidOptionsError } from '../errors/ferry-error.js';
import { ClaimLostError } from '../inbox/claim-lost-error.js';
import { type Inbox, MemoryInbox } from '../inbox/inbox.js';
import { silentLogger } from '../logging/logger.js';
import { waitFor } from '../testing/wait.js';
import { type Bus, type BusOptions, DEFAULT_SUBSCRIPTION_OPTIONS } from './bus.js';
import type { Contracts, NoContracts } from './contracts.js';
import type { Message } from './envelope.js';
import {
  BusClosedError,
  isBusClosedError,
  isInvalidTopicError,
  isMessageValidationError,
  isUnroutableError,
} from './errors.js';
import { MemoryBroker } from './memory/memory-broker.js';
import { MemoryTransport } from './memory/memory-transport.js';
import type { HandlerMiddleware } from './middleware.js';

const opened: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((bus) => bus.close()));
});

type Extra<C extends Contracts> = Omit<BusOptions<C>, 'service' | 'url' | 'transport' | 'logger'> & {
  readonly service?: string;
};

/** A bus on `broker` (a fresh one unless given), closed after the test. */
async function open<C extends Contracts = NoContracts>(
  extra: Extra<C> = {},
  broker: MemoryBroker = new MemoryBroker(),
): Promise<Bus<C>> {
  const bus = await createBus<C>({
    service: 'svc',
    ...extra,
    transport: new MemoryTransport({ broker }),
    logger: silentLogger,
  });
  opened.push(bus);
  return bus;
}

/** A bus on the process-wide broker `url` selects, closed after the test. */
async function openUrl(url: string, service: string): Promise<Bus> {
  const bus = await createBus({ url, service, logger: silentLogger });
  opened.push(bus);
  return bus;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('createBus', () => {
  it('needs exactly one of url and transport', async () => {
    const neither = await rejection(createBus({ service: 'svc', logger: silentLogger }));
    const both = await rejection(
      createBus({ service: 'svc', url: 'memory://', transport: new MemoryTransport(), logger: silentLogger }),
    );
    for (const error of [neither, both]) {
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    }
  });

  it('rejects an unsupported URL scheme without revealing its password', async () => {
    const error = await rejection(
      createBus({ url: 'redis://user:s3cr3t-pw@cache.internal:6379', service: 'svc', logger: silentLogger }),
    );
    expect(isInvalidOptionsError(error)).toBe(true);
    expect((error as Error).message).toContain('redis://');
    expect((error as Error).message).not.toContain('s3cr3t-pw');
  });

  it('does not reveal the password of a URL that has no scheme', async () => {
    const error = await rejection(
      createBus({ url: 'guest:s3cret@localhost:5672', service: 'svc', logger: silentLogger }),
    );
    expect(isInvalidOptionsError(error)).toBe(true);
    expect((error as Error).message).not.toContain('s3cret');
  });

  it('refuses an option it does not read, naming it, and options that are not an object (INVALID_OPTIONS)', async () => {
    // A misspelt or misplaced option (closeTimeout, rabbitmq: { … }) was dropped without a word.
    for (const [options, named] of [
      [{ url: 'memory://', service: 'svc', logger: silentLogger, closeTimeout: 10 }, '"closeTimeout"'],
      [{ url: 'memory://', service: 'svc', logger: silentLogger, rabbitmq: { prefetch: 1 } }, '"rabbitmq"'],
    ] as const) {
      const error = await rejection(createBus(options as never));
      expect(isInvalidOptionsError(error), String(error)).toBe(true);
      expect((error as Error).message).toContain(named);
    }
    for (const options of [undefined, null, 'memory://', []]) {
      expect(isInvalidOptionsError(await rejection(createBus(options as never))), String(options)).toBe(true);
    }
  });

  it('takes a subscription default given as undefined as left out, as subscribe takes its own', async () => {
    // { concurrency: undefined } was refused ("concurrency must be an integer from 1 to 65535").
    const bus = await createBus({
      url: 'memory://',
      service: 'svc',
      logger: silentLogger,
      subscriptionDefaults: { concurrency: undefined, maxAttempts: undefined } as never,
    });
    await bus.close();
  });

  it('rejects an invalid service name', async () => {
    const error = await rejection(
      createBus({ url: 'memory://', service: 'orders.v2', logger: silentLogger }),
    );
    expect(isInvalidTopicError(error)).toBe(true);
  });

  it('connects buses with the same memory:// name to one broker, and keeps other names apart', async () => {
    const shared = `memory://shared-${randomUUID()}`;
    const a = await openUrl(shared, 'svc-a');
    const b = await openUrl(`${shared}/`, 'svc-b');
    const c = await openUrl(`memory://other-${randomUUID()}`, 'svc-c');
    const got: Record<string, string[]> = { a: [], b: [], c: [] };
    await a.subscribe('ping', (m) => void got.a!.push(m.id));
    await b.subscribe('ping', (m) => void got.b!.push(m.id));
    await c.subscribe('ping', (m) => void got.c!.push(m.id));

    await b.publish('ping', {}, { id: 'from-b' });
    await waitFor(() => got.a!.length === 1 && got.b!.length === 1, 'both buses of the shared broker');
    await c.publish('ping', {}, { id: 'from-c' });
    await waitFor(() => got.c!.length === 1, 'the bus of the other broker');

    expect(got).toEqual({ a: ['from-b'], b: ['from-b'], c: ['from-c'] });
  });
});

describe('publish', () => {
  it.each([
    'x-ferry-attempt',
    'x-ferry-routing-key',
    'cloudEvents:causationid',
    'x-death',
    // RabbitMQ reads these itself: a string CC made it close the channel, failing every publish in flight.
    'CC',
    'BCC',
    'x-delivery-count',
    '__proto__',
  ])('rejects the reserved header %s and sends nothing', async (name) => {
    const bus = await open();
    const got: Message[] = [];
    await bus.subscribe('order.created', (m) => void got.push(m));
    const error = await rejection(bus.publish('order.created', {}, { headers: { [name]: 'x' } }));
    expect(isInvalidOptionsError(error)).toBe(true);
    expect((error as Error).message).toContain(name);
    await bus.publish('order.created', {}, { id: 'after' });
    await waitFor(() => got.length > 0, 'the next message');
    expect(got.map((m) => m.id)).toEqual(['after']);
  });

  it('rejects a header value that is not a string', async () => {
    const bus = await open();
    await bus.subscribe('order.created', () => {});
    const headers = { retries: 3 } as unknown as Record<string, string>;
    expect(isInvalidOptionsError(await rejection(bus.publish('order.created', {}, { headers })))).toBe(true);
  });

  it.each(['', 'order..created', 'order.*', 'order.#', 'order created'])(
    'rejects the invalid type "%s" with INVALID_TOPIC as a rejection, not a throw',
    async (type) => {
      const bus = await open();
      let published: Promise<void> | undefined;
      expect(() => {
        published = bus.publish(type, {});
      }).not.toThrow();
      const error = await rejection(published!);
      expect(isInvalidTopicError(error)).toBe(true);
      expect(error).toMatchObject({ code: 'INVALID_TOPIC' });
    },
  );

  it.each([
    ['without contracts', {}],
    ['with contracts for other types', { 'order.created': z.object({ orderId: z.string() }) }],
  ])('publishes and delivers types named like Object.prototype members (%s)', async (_name, contracts) => {
    const bus = await open({ contracts });
    const types = ['constructor', 'toString', '__proto__', 'hasOwnProperty.valueOf'];
    const got: string[] = [];
    await bus.subscribe('#', (m) => void got.push(m.type));
    for (const type of types) await bus.publish(type, { a: 1 });
    await waitFor(() => got.length === types.length, 'every message');
    expect(got.sort()).toEqual([...types].sort());
  });

  it('rejects data that fails its contract as a rejection, not a throw', async () => {
    const bus = await open({ contracts: { 'order.created': z.object({ orderId: z.string() }) } });
    let published: Promise<void> | undefined;
    expect(() => {
      published = bus.publish('order.created', { orderId: 7 } as unknown as { orderId: string });
    }).not.toThrow();
    expect(isMessageValidationError(await rejection(published!))).toBe(true);
  });
});

describe('subscribe', () => {
  it.each([
    ['concurrency 0', { concurrency: 0 }],
    ['fractional concurrency', { concurrency: 1.5 }],
    ['concurrency above 65535', { concurrency: 65_536 }],
    ['NaN concurrency', { concurrency: Number.NaN }],
    ['maxAttempts 0', { maxAttempts: 0 }],
    ['maxAttempts above 100', { maxAttempts: 101 }],
    ['fractional maxAttempts', { maxAttempts: 2.5 }],
    ['a backoff factor below 1', { backoff: { factor: 0.5 } }],
    ['a retry delay of 2^31 ms', { backoff: { initialDelayMs: 2 ** 31, maxDelayMs: 2 ** 31 } }],
    ['a retry delay of 1e15 ms', { backoff: { initialDelayMs: 1e15, factor: 1, maxDelayMs: 1e15 } }],
    [
      'an infinite retry delay',
      { backoff: { initialDelayMs: 1000, maxDelayMs: Number.POSITIVE_INFINITY }, maxAttempts: 100 },
    ],
    ['a NaN retry delay', { backoff: { initialDelayMs: 0, factor: Number.POSITIVE_INFINITY } }],
    // null was taken as "left out" (the default) here, where the event store refuses it.
    ['concurrency null', { concurrency: null as never }],
    ['maxAttempts null', { maxAttempts: null as never }],
    ['handlerTimeoutMs null', { handlerTimeoutMs: null as never }],
    ['backoff null', { backoff: null as never }],
  ])('rejects %s with INVALID_OPTIONS', async (_, options) => {
    const bus = await open();
    const error = await rejection(bus.subscribe('order.created', () => {}, options));
    expect(isInvalidOptionsError(error)).toBe(true);
  });

  it('rejects invalid subscription defaults when the bus is made, not at each subscribe', async () => {
    expect(isInvalidOptionsError(await rejection(open({ subscriptionDefaults: { maxAttempts: 0 } })))).toBe(
      true,
    );
    expect(
      isInvalidOptionsError(
        await rejection(
          open({ subscriptionDefaults: { backoff: { initialDelayMs: 2 ** 31, maxDelayMs: 2 ** 31 } } }),
        ),
      ),
    ).toBe(true);
    // The caller's values are named as theirs, Ferry's as defaults.
    expect(
      String(await rejection(open({ subscriptionDefaults: { backoff: { maxDelayMs: 500 } } }))),
    ).toContain(
      'backoff maxDelayMs 500 must be a number >= initialDelayMs, here initialDelayMs 1000 (not given: the default)',
    );
    expect(String(await rejection(open({ subscriptionDefaults: { backoff: { factor: 0.5 } } })))).toContain(
      'backoff factor 0.5 must be a number >= 1',
    );
    const bus = await open({ subscriptionDefaults: { maxAttempts: 2 } });
    expect(
      isInvalidOptionsError(await rejection(bus.subscribe('order.created', () => {}, { maxAttempts: 0 }))),
    ).toBe(true);
  });

  it('reports the backoff in force in subscriptionDefaults, every key, frozen, a copy of the one given', async () => {
    const given = { backoff: { initialDelayMs: 100 } };
    const bus = await open({ subscriptionDefaults: given });
    expect(bus.subscriptionDefaults.backoff).toEqual({ initialDelayMs: 100, factor: 2, maxDelayMs: 60_000 });
    expect(Object.isFrozen(bus.subscriptionDefaults.backoff)).toBe(true);
    given.backoff.initialDelayMs = 400;
    expect(bus.subscriptionDefaults.backoff.initialDelayMs).toBe(100);
    // The delays as the refusal of one past a timer's range tells them: 100 ms * 2^25 is retry 26.
    const refused = await rejection(
      bus.subscribe('order.created', () => {}, { maxAttempts: 40, backoff: { maxDelayMs: 2 ** 40 } }),
    );
    expect((refused as Error).message).toMatch(/^backoff gives retry 26 /);
  });

  it("fills the backoff keys a subscribe leaves out from the bus's subscriptionDefaults, then Ferry's", async () => {
    const bus = await open({ subscriptionDefaults: { backoff: { initialDelayMs: 200 } } });
    // 200 ms then 400 ms, capped at 500: refused before (the 1 s first delay was over the cap).
    await (await bus.subscribe('order.created', () => {}, { backoff: { maxDelayMs: 500 } })).close();
    // The delays as the refusal of one past a timer's range tells them: 200 ms * 2^24 is retry 25.
    const refused = await rejection(
      bus.subscribe('order.created', () => {}, { maxAttempts: 40, backoff: { maxDelayMs: 2 ** 40 } }),
    );
    expect((refused as Error).message).toMatch(/^backoff gives retry 25 a delay of 3355443200 ms/);
  });

  it('rejects an invalid pattern or group with INVALID_TOPIC', async () => {
    const bus = await open();
    expect(isInvalidTopicError(await rejection(bus.subscribe('order..created', () => {})))).toBe(true);
    expect(
      isInvalidTopicError(await rejection(bus.subscribe('order.*', () => {}, { group: 'audit:eu' }))),
    ).toBe(true);
  });

  it('refuses in the dead-letter calls the groups subscribe refuses (INVALID_TOPIC), rather than list none', async () => {
    const bus = await open();
    for (const group of ['audit:eu', 'x'.repeat(101), 'x'.repeat(240), '']) {
      expect(isInvalidTopicError(await rejection(bus.listDeadLetters({ group }))), group).toBe(true);
      expect(isInvalidTopicError(await rejection(bus.replayDeadLetters({ group }))), group).toBe(true);
    }
    expect(await bus.listDeadLetters({ group: 'x'.repeat(100) })).toEqual([]);
  });

  it('refuses options that are not an object, and middleware that is not a list of functions, with INVALID_OPTIONS', async () => {
    const bus = await open();
    const refusals = [
      // Without a handler every message was dead-lettered ("inner is not a function").
      bus.subscribe('order.*', null as never),
      bus.subscribe('order.*', 'handle' as never),
      bus.publish('order.created', {}, null as never),
      bus.publish('order.created', {}, 'urgent' as never),
      bus.subscribe('order.*', () => {}, null as never),
      bus.subscribe('order.*', () => {}, { middleware: 'x' as never }),
      bus.subscribe('order.*', () => {}, { middleware: [undefined] as never }),
      bus.deleteSubscription('order.*', null as never),
      bus.listDeadLetters(null as never),
      bus.replayDeadLetters([] as never),
      createBus({ url: 'memory://', service: 'svc', logger: silentLogger, middleware: (() => {}) as never }),
    ];
    for (const [i, refusal] of refusals.entries()) {
      const error = await rejection(refusal);
      expect(isInvalidOptionsError(error), `${i}: ${String(error)}`).toBe(true);
    }
  });
});

describe('context', () => {
  it('runs a handler with the correlation id and id of its message as context', async () => {
    const bus = await open();
    const seen: { message: Message; context: FerryContext | undefined }[] = [];
    await bus.subscribe('order.created', async (message) => {
      await Promise.resolve();
      seen.push({ message, context: currentContext() });
    });
    await bus.publish('order.created', {}, { id: 'm-1', correlationId: 'corr-1' });
    await bus.publish('order.created', {}, { id: 'm-2' });
    await waitFor(() => seen.length === 2, 'both messages');
    for (const { message, context } of seen) {
      expect(context).toMatchObject({ correlationId: message.correlationid, messageId: message.id });
      // The handler's time limit (30 s by default) is its deadline and signal.
      expect(context?.deadline).toBeGreaterThan(Date.now() + 25_000);
      expect(context?.signal?.aborted).toBe(false);
    }
    expect(seen.map((s) => s.context?.correlationId).sort()).toEqual(['corr-1', 'm-2']);
  });

  it('takes the correlation id of the ambient context when publishing outside a handler', async () => {
    const bus = await open();
    const got: Message[] = [];
    await bus.subscribe('order.created', (m) => void got.push(m));
    await runWithContext({ correlationId: 'c-1' }, () => bus.publish('order.created', {}));
    await waitFor(() => got.length === 1, 'the message');
    expect(got[0]!.correlationid).toBe('c-1');
    expect(got[0]!.causationid).toBeUndefined();
    expect(got[0]!.id).not.toBe('c-1');
  });

  it('lets explicit publish options override the context', async () => {
    const bus = await open();
    const got: Message[] = [];
    await bus.subscribe('order.created', async () => {
      await bus.publish('order.audited', {}, { correlationId: 'mine', causationId: 'because' });
    });
    await bus.subscribe('order.audited', (m) => void got.push(m));
    await runWithContext({ correlationId: 'ambient', messageId: 'ambient-msg' }, () =>
      bus.publish('order.audited', {}, { id: 'direct', correlationId: 'explicit', causationId: 'cause' }),
    );
    await bus.publish('order.created', {});
    await waitFor(() => got.length === 2, 'both messages');
    const direct = got.find((m) => m.id === 'direct')!;
    const fromHandler = got.find((m) => m.id !== 'direct')!;
    expect(direct).toMatchObject({ correlationid: 'explicit', causationid: 'cause' });
    expect(fromHandler).toMatchObject({ correlationid: 'mine', causationid: 'because' });
  });
});

describe('contracts', () => {
  it('hands the handler the output of transforming and coercing schemas', async () => {
    const contracts = {
      'order.created': z.object({
        total: z.string().transform((s) => Number.parseFloat(s)),
        at: z.coerce.date(),
      }),
    };
    const bus = await open({ contracts });
    const got: { total: number; at: Date }[] = [];
    await bus.subscribe('order.created', (m) => void got.push(m.data));
    await bus.publish('order.created', { total: '12.50', at: '2026-01-02T03:04:05.000Z' });
    await waitFor(() => got.length === 1, 'the message');
    expect(got[0]).toEqual({ total: 12.5, at: new Date('2026-01-02T03:04:05.000Z') });
  });

  it('validates with async schemas at publish and at consume', async () => {
    const known = new Set(['o-1']);
    const contracts = {
      'order.paid': z.object({ orderId: z.string() }).refine(async (d) => known.has(d.orderId), {
        message: 'unknown order',
      }),
    };
    const broker = new MemoryBroker();
    const bus = await open({ contracts, service: 'billing' }, broker);
    const got: string[] = [];
    await bus.subscribe('order.paid', (m) => void got.push(m.data.orderId));

    await bus.publish('order.paid', { orderId: 'o-1' });
    const error = await rejection(bus.publish('order.paid', { orderId: 'o-2' }));
    expect(isMessageValidationError(error)).toBe(true);
    expect((error as Error).message).toContain('unknown order');

    // A producer without the contract sends what the async check refuses: it is dead-lettered.
    const untyped = await open({ service: 'legacy' }, broker);
    await untyped.publish('order.paid', { orderId: 'o-3' }, { id: 'bad' });
    await waitFor(
      async () => (await bus.listDeadLetters()).length === 1,
      'the invalid message dead-lettered',
    );
    const [dead] = await bus.listDeadLetters();
    expect(dead).toMatchObject({ reason: { kind: 'invalid' }, envelope: { id: 'bad' } });
    expect(got).toEqual(['o-1']);
  });
});

describe('contracts and the JSON form subscribers receive', () => {
  it('refuses at publish data whose JSON form fails the contract, instead of dead-lettering every copy', async () => {
    // Must not happen: publish resolving, then every consumer dead-lettering the message as invalid.
    const contracts = {
      'slot.booked': z.object({ at: z.date() }),
      'slot.kept': z.object({ at: z.coerce.date(), note: z.string().optional() }),
      'slot.async': z.object({ at: z.date() }).refine(async () => true),
    };
    const bus = await open({ contracts });
    const got: unknown[] = [];
    await bus.subscribe('slot.*', (m) => void got.push(m.data));
    for (const type of ['slot.booked', 'slot.async'] as const) {
      const error = await rejection(bus.publish(type, { at: new Date(0) }));
      expect(isMessageValidationError(error), type).toBe(true);
      expect((error as Error).message).toContain('as subscribers receive it');
    }
    // A contract that accepts its own JSON form goes through, and the handler gets its output.
    await bus.publish('slot.kept', { at: new Date(0), note: undefined });
    await waitFor(() => got.length === 1, 'the kept message');
    expect(got).toEqual([{ at: new Date(0) }]);
    expect(await bus.listDeadLetters()).toEqual([]);
  });
});

describe('middleware', () => {
  it('runs bus middleware outside subscription middleware', async () => {
    const calls: string[] = [];
    const named =
      (name: string): HandlerMiddleware =>
      (next, subscription) =>
      async (m) => {
        calls.push(`${name}>${subscription.group}/${subscription.pattern}`);
        await next(m);
        calls.push(`${name}<`);
      };
    const bus = await open({ middleware: [named('bus1'), named('bus2')] });
    await bus.subscribe('order.*', () => void calls.push('handler'), {
      group: 'audit',
      middleware: [named('sub1'), named('sub2')],
    });
    await bus.publish('order.created', {});
    await waitFor(() => calls.length === 9, 'the whole chain');
    expect(calls).toEqual([
      'bus1>audit/order.*',
      'bus2>audit/order.*',
      'sub1>audit/order.*',
      'sub2>audit/order.*',
      'handler',
      'sub2<',
      'sub1<',
      'bus2<',
      'bus1<',
    ]);
  });
});

describe('close', () => {
  it('is idempotent', async () => {
    const bus = await open();
    await bus.subscribe('order.created', () => {});
    await expect(Promise.all([bus.close(), bus.close()])).resolves.toBeDefined();
    await expect(bus.close()).resolves.toBeUndefined();
  });

  it('makes publish and subscribe reject with BUS_CLOSED', async () => {
    const bus = await open();
    await bus.subscribe('order.created', () => {});
    await bus.close();
    let published: Promise<void> | undefined;
    let subscribed: Promise<unknown> | undefined;
    expect(() => {
      published = bus.publish('order.created', {});
      subscribed = bus.subscribe('order.created', () => {});
    }).not.toThrow();
    const errors = [await rejection(published!), await rejection(subscribed!)];
    for (const error of errors) {
      expect(error).toBeInstanceOf(BusClosedError);
      expect(isBusClosedError(error)).toBe(true);
      expect(error).toMatchObject({ code: 'BUS_CLOSED' });
    }
  });

  it('takes publishes only while it waits for the handlers in flight: a handler it gave up on gets BUS_CLOSED', async () => {
    const bus = await open({ closeTimeoutMs: 50 });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started = false;
    let published: unknown;
    await bus.subscribe(
      'order.created',
      async () => {
        started = true;
        await gate;
        published = await bus.publish('order.created', {}).then(
          () => 'published',
          (error: unknown) => error,
        );
      },
      { handlerTimeoutMs: 0 },
    );
    await bus.publish('order.created', {});
    await waitFor(() => started, 'the handler to start');
    const closing = bus.close();
    // Outside any handler too, while close waits.
    await expect(bus.publish('order.created', {})).resolves.toBeUndefined();
    await closing;
    release();
    await waitFor(() => published !== undefined, 'the abandoned handler to publish');
    expect(isBusClosedError(published)).toBe(true);
  });
});

describe('close while subscribing', () => {
  it('rejects a subscribe that close overtook, and its handler never runs', async () => {
    const broker = new MemoryBroker();
    const bus = await open({}, broker);
    const other = await open({ service: 'other' }, broker);
    const handled: string[] = [];
    const subscribing = bus.subscribe('ping', (m) => void handled.push(m.id));
    await bus.close();
    expect(isBusClosedError(await rejection(subscribing))).toBe(true);
    // The queue exists, but nothing consumes it for the closed bus.
    await other.publish('ping', {}, { id: 'after-close' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(handled).toEqual([]);
  });
});

describe('error guards', () => {
  const BRAND = Symbol.for('ferry.error');

  /** What another copy of the package (a second version in node_modules) would throw. */
  class ForeignFerryError extends Error {
    readonly code: string;
    constructor(code: string) {
      super(`foreign ${code}`);
      this.code = code;
      Object.defineProperty(this, BRAND, { value: true });
    }
  }

  it('recognise an error of another copy of the package by its brand and code', () => {
    const foreign = new ForeignFerryError('BUS_CLOSED');
    expect(foreign).not.toBeInstanceOf(BusClosedError);
    expect(isBusClosedError(foreign)).toBe(true);
    expect(isFerryError(foreign)).toBe(true);
    expect(isUnroutableError(foreign)).toBe(false);
    expect(isInvalidTopicError(new ForeignFerryError('INVALID_TOPIC'))).toBe(true);
  });

  it('reject look-alikes without the brand, and values that are not errors', () => {
    const unbranded = Object.assign(new Error('x'), { code: 'BUS_CLOSED' });
    expect(isBusClosedError(unbranded)).toBe(false);
    const badCode = new ForeignFerryError('BUS_CLOSED');
    Object.defineProperty(badCode, 'code', { value: 42 });
    expect(isFerryError(badCode)).toBe(false);
    for (const value of [undefined, null, 'BUS_CLOSED', 42, {}]) {
      expect(isBusClosedError(value)).toBe(false);
      expect(isFerryError(value)).toBe(false);
    }
  });

  it('recognise errors thrown by this copy', () => {
    expect(isBusClosedError(new BusClosedError())).toBe(true);
    expect(isInvalidOptionsError(new BusClosedError())).toBe(false);
  });
});

describe('typing with contracts', () => {
  const contracts = {
    'order.created': z.object({ orderId: z.string() }),
    'order.paid': z.object({ amount: z.number() }),
    'user.created': z.object({ name: z.string() }),
  };

  it('types a handler by the contract types its pattern matches, discriminated by type', async () => {
    const bus = await open({ contracts });
    const orders: string[] = [];
    const all: string[] = [];
    const none: unknown[] = [];

    await bus.subscribe(
      'order.*',
      (m) => {
        expectTypeOf(m.type).toEqualTypeOf<'order.created' | 'order.paid'>();
        if (m.type === 'order.created') {
          expectTypeOf(m.data).toEqualTypeOf<{ orderId: string }>();
          orders.push(`created ${m.data.orderId}`);
        } else {
          expectTypeOf(m.data).toEqualTypeOf<{ amount: number }>();
          orders.push(`paid ${m.data.amount.toFixed(2)}`);
        }
      },
      { group: 'orders' },
    );

    await bus.subscribe(
      '#',
      (m) => {
        expectTypeOf(m.type).toEqualTypeOf<'order.created' | 'order.paid' | 'user.created'>();
        if (m.type === 'user.created') {
          expectTypeOf(m.data).toEqualTypeOf<{ name: string }>();
          all.push(m.data.name);
        } else all.push(m.type);
      },
      { group: 'all' },
    );

    await bus.subscribe(
      'payment.*',
      (m) => {
        expectTypeOf(m).toEqualTypeOf<Message<unknown, string>>();
        expectTypeOf(m.data).toBeUnknown();
        none.push(m.data);
      },
      { group: 'payments' },
    );

    await bus.publish('order.created', { orderId: 'o-1' });
    await bus.publish('order.paid', { amount: 3 });
    await bus.publish('user.created', { name: 'Ada' });
    await waitFor(() => orders.length === 2 && all.length === 3, 'every message');
    expect(orders.sort()).toEqual(['created o-1', 'paid 3.00']);
    expect(all.sort()).toEqual(['Ada', 'order.created', 'order.paid']);
    expect(none).toEqual([]);
  });

  it('types publish: contract types only, with their data', async () => {
    const bus = await open({ contracts });
    await bus.subscribe('#', () => {});
    await expect(bus.publish('order.created', { orderId: 'x' })).resolves.toBeUndefined();

    // @ts-expect-error orderId must be a string
    const wrongData = bus.publish('order.created', { orderId: 1 });
    expect(isMessageValidationError(await rejection(wrongData))).toBe(true);

    // @ts-expect-error a type without a contract
    const unknownType = bus.publish('order.shipped', {});
    await expect(unknownType).resolves.toBeUndefined();

    expectTypeOf(bus.publish<'order.paid'>)
      .parameter(1)
      .toEqualTypeOf<{ amount: number }>();
  });
});

describe('handler time limit', () => {
  it('fails an attempt past handlerTimeoutMs, frees its slot although the handler ignores its signal, then dead-letters as timeout', async () => {
    const bus = await open({
      closeTimeoutMs: 50,
      subscriptionDefaults: { backoff: { initialDelayMs: 20, factor: 1, maxDelayMs: 20 } },
    });
    const runs: { n: number; attempt: number }[] = [];
    const signals: AbortSignal[] = [];
    await bus.subscribe(
      'job.run',
      async (m, { signal }) => {
        const n = (m.data as { n: number }).n;
        runs.push({ n, attempt: m.attempt });
        signals.push(signal);
        if (n === 1) await new Promise(() => {}); // hangs, never looks at its signal
      },
      { concurrency: 1, maxAttempts: 2, handlerTimeoutMs: 100 },
    );
    const start = Date.now();
    await bus.publish('job.run', { n: 1 });
    await bus.publish('job.run', { n: 2 });
    await waitFor(async () => (await bus.listDeadLetters()).length === 1, 'the hung message dead-lettered');
    const [dead] = await bus.listDeadLetters();
    expect(dead).toMatchObject({ attempts: 2, reason: { kind: 'timeout' } });
    expect(dead!.reason.message).toMatch(/did not finish within 100 ms/);
    expect(Date.now() - start).toBeGreaterThanOrEqual(190);
    // The single slot came back after each timeout: message 2 ran, between or after the attempts of 1.
    await waitFor(() => runs.some((r) => r.n === 2), 'message 2 in the freed slot');
    expect(runs.filter((r) => r.n === 1).map((r) => r.attempt)).toEqual([1, 2]);
    const first = signals[0]!;
    expect(first.aborted).toBe(true);
    expect(isFerryError(first.reason) && first.reason.code).toBe('HANDLER_TIMEOUT');
  });

  it('aborts the signal a handler listens to, and sets the context deadline', async () => {
    const bus = await open();
    let aborted: unknown;
    let deadline: number | undefined;
    await bus.subscribe(
      'job.watch',
      async (_m, { signal }) => {
        deadline = currentContext()?.deadline;
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => {
            aborted = signal.reason;
            resolve();
          }),
        );
      },
      { maxAttempts: 1, handlerTimeoutMs: 80 },
    );
    const before = Date.now();
    await bus.publish('job.watch', {});
    await waitFor(() => aborted !== undefined, 'the abort');
    expect(isFerryError(aborted) && aborted.code).toBe('HANDLER_TIMEOUT');
    expect(deadline).toBeGreaterThanOrEqual(before + 80);
    expect(deadline).toBeLessThanOrEqual(Date.now() + 80);
    await waitFor(async () => (await bus.listDeadLetters()).length === 1, 'the dead letter');
  });

  it('lets 0 mean no limit, overriding a bus-wide default, and rejects invalid limits', async () => {
    const bus = await open({ subscriptionDefaults: { handlerTimeoutMs: 30 } });
    const done: boolean[] = [];
    let signal: AbortSignal | undefined;
    await bus.subscribe(
      'job.slow',
      async (_m, context) => {
        signal = context.signal;
        await new Promise((resolve) => setTimeout(resolve, 120));
        done.push(true);
      },
      { handlerTimeoutMs: 0, maxAttempts: 1 },
    );
    await bus.publish('job.slow', {});
    await waitFor(() => done.length === 1, 'the slow handler to finish');
    expect(signal!.aborted).toBe(false);
    expect(await bus.listDeadLetters()).toEqual([]);
    for (const handlerTimeoutMs of [-1, 1.5, Number.NaN, 2 ** 31]) {
      expect(
        isInvalidOptionsError(await rejection(bus.subscribe('job.x', () => {}, { handlerTimeoutMs }))),
      ).toBe(true);
    }
  });

  it('defaults to 30 s', () => {
    expect(DEFAULT_SUBSCRIPTION_OPTIONS.handlerTimeoutMs).toBe(30_000);
  });
});

describe('message expiry', () => {
  it('dead-letters a message that arrives after its expiresat, without running the handler', async () => {
    const bus = await open();
    const handled: Message[] = [];
    const sub = await bus.subscribe('offer.made', async (m) => void handled.push(m));
    await sub.close();
    const before = Date.now();
    await bus.publish('offer.made', { n: 1 }, { ttlMs: 50, id: 'short' });
    await bus.publish('offer.made', { n: 2 }, { ttlMs: 60_000, id: 'long' });
    await bus.publish('offer.made', { n: 3 }, { id: 'forever' });
    await new Promise((resolve) => setTimeout(resolve, 120));
    await bus.subscribe('offer.made', async (m) => void handled.push(m));
    await waitFor(() => handled.length === 2, 'the live messages');
    expect(handled.map((m) => m.id)).toEqual(['long', 'forever']);
    expect(Date.parse(handled[0]!.expiresat!)).toBeGreaterThanOrEqual(before + 60_000);
    expect(handled[0]!.expiresat).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(handled[1]!.expiresat).toBeUndefined();
    await waitFor(async () => (await bus.listDeadLetters()).length === 1, 'the expired message');
    const [dead] = await bus.listDeadLetters();
    expect(dead).toMatchObject({ attempts: 1, reason: { kind: 'expired' }, envelope: { id: 'short' } });
  });

  it('expires a message while it waits out a retry delay', async () => {
    const bus = await open();
    const attempts: number[] = [];
    await bus.subscribe(
      'offer.retry',
      async (m) => {
        attempts.push(m.attempt);
        throw new Error('later');
      },
      { maxAttempts: 3, backoff: { initialDelayMs: 150, factor: 1, maxDelayMs: 150 } },
    );
    await bus.publish('offer.retry', {}, { expiresAt: new Date(Date.now() + 80) });
    await waitFor(async () => (await bus.listDeadLetters()).length === 1, 'the expired message');
    const [dead] = await bus.listDeadLetters();
    expect(dead).toMatchObject({ attempts: 2, reason: { kind: 'expired' } });
    expect(attempts).toEqual([1]);
  });

  it("drops an expired message with onExpired: 'drop'", async () => {
    const bus = await open();
    const handled: unknown[] = [];
    const options = { onExpired: 'drop' as const };
    const sub = await bus.subscribe('offer.gone', async (m) => void handled.push(m.data), options);
    await sub.close();
    await bus.publish('offer.gone', 1, { expiresAt: new Date(Date.now() - 1).toISOString() });
    await bus.publish('offer.gone', 2);
    await bus.subscribe('offer.gone', async (m) => void handled.push(m.data), options);
    await waitFor(() => handled.length === 1, 'the live message');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(handled).toEqual([2]);
    expect(await bus.listDeadLetters()).toEqual([]);
  });

  it('rejects a bad expiry at publish and a bad onExpired at subscribe', async () => {
    const bus = await open();
    await bus.subscribe('offer.bad', () => {});
    for (const options of [
      { ttlMs: -1 },
      { ttlMs: Number.NaN },
      { expiresAt: 'tomorrow' },
      { expiresAt: new Date(Number.NaN) },
      { ttlMs: 10, expiresAt: new Date() },
    ]) {
      expect(
        isInvalidOptionsError(await rejection(bus.publish('offer.bad', {}, options))),
        JSON.stringify(options),
      ).toBe(true);
    }
    const onExpired = 'keep' as unknown as 'drop';
    expect(isInvalidOptionsError(await rejection(bus.subscribe('offer.bad', () => {}, { onExpired })))).toBe(
      true,
    );
  });
});

describe('inbox claims', () => {
  /** An inbox whose one claim the test can take away, as a lease lapsing while its holder is frozen does. */
  function losableInbox() {
    const controller = new AbortController();
    const done: string[] = [];
    const inbox: Inbox = {
      begin: async (key) => ({
        signal: controller.signal,
        complete: async () => {
          if (controller.signal.aborted) throw new ClaimLostError(key);
          done.push(key);
        },
        abandon: () => {},
      }),
    };
    return { inbox, done, lose: () => controller.abort(new ClaimLostError('k')) };
  }

  it("aborts the handler's signal when its claim is lost, keeps the time limit too, and acknowledges the copy", async () => {
    // Must not happen: the lost holder's handler running on unaware beside the new holder's, its
    // failure retried or dead-lettered (the new holder owns the outcome), or its completion recorded.
    const { inbox, done, lose } = losableInbox();
    const bus = await open({ inbox });
    let reason: unknown;
    let runs = 0;
    await bus.subscribe(
      'job.claimed',
      async (_m, { signal }) => {
        runs++;
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => {
            reason = signal.reason;
            resolve();
          }),
        );
        throw signal.reason;
      },
      { maxAttempts: 3, handlerTimeoutMs: 60_000 },
    );
    await bus.publish('job.claimed', {});
    await waitFor(() => runs === 1, 'the handler to start');
    lose();
    await waitFor(() => reason !== undefined, 'the abort');
    expect(isFerryError(reason) && reason.code).toBe('CLAIM_LOST');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(runs).toBe(1);
    expect(done).toEqual([]);
    expect(await bus.listDeadLetters()).toEqual([]);
  });

  it('says so when an attempt timed out waiting for an earlier delivery that overran, and runs the handler once', async () => {
    // Must not happen: attempts that never ran the handler reported as the handler not finishing,
    // or the handler run a second time beside the first.
    const bus = await open({ inbox: new MemoryInbox() });
    let runs = 0;
    let finished = false;
    await bus.subscribe(
      'job.overrun',
      async () => {
        runs++;
        await new Promise((resolve) => setTimeout(resolve, 600));
        finished = true;
      },
      { maxAttempts: 3, handlerTimeoutMs: 100, backoff: { initialDelayMs: 10, factor: 1, maxDelayMs: 10 } },
    );
    await bus.publish('job.overrun', {});
    await waitFor(async () => (await bus.listDeadLetters()).length === 1, 'the dead letter');
    const [dead] = await bus.listDeadLetters();
    expect(dead!.reason.kind).toBe('timeout');
    expect(dead!.reason.message).toContain('waiting for an earlier delivery of this message');
    expect(dead!.reason.message).toContain('past its own time limit or after a close gave up on it');
    await waitFor(() => finished, 'the first run to end');
    expect(runs).toBe(1);
    // Replayed, it is recognised as handled (the first run succeeded): acknowledged, not run again.
    expect(await bus.replayDeadLetters()).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(runs).toBe(1);
    expect(await bus.listDeadLetters()).toEqual([]);
  });

  it('still times out a handler holding a claim', async () => {
    const { inbox } = losableInbox();
    const bus = await open({ inbox });
    let reason: unknown;
    await bus.subscribe(
      'job.slow',
      async (_m, { signal }) => {
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => {
            reason = signal.reason;
            resolve();
          }),
        );
      },
      { maxAttempts: 1, handlerTimeoutMs: 50 },
    );
    await bus.publish('job.slow', {});
    await waitFor(() => reason !== undefined, 'the abort');
    expect(isFerryError(reason) && reason.code).toBe('HANDLER_TIMEOUT');
  });
});

describe('publish and listing options', () => {
  it('takes expiresAt only as a Date or an RFC 3339 time with its offset, read the same in every time zone', async () => {
    const bus = await open();
    await bus.subscribe('offer.made', () => {});
    for (const at of [
      'Jan 1 2099',
      '2099-01-01',
      '2099-01-01T00:00:00',
      '2099-13-01T00:00:00Z',
      '2999-02-30T00:00:00Z',
      '2999-02-29T00:00:00Z',
      '2999-01-01T24:00:00Z',
      '2999-01-01T00:00:00+24:00',
      'soon',
    ]) {
      expect(
        isInvalidOptionsError(await rejection(bus.publish('offer.made', {}, { expiresAt: at }))),
        at,
      ).toBe(true);
    }
    let got: string | undefined;
    await bus.subscribe(
      'offer.kept',
      (m) => {
        got = m.expiresat;
      },
      { group: 'kept' },
    );
    await bus.publish('offer.kept', {}, { expiresAt: '2099-01-01T09:00:00+09:00' });
    await waitFor(() => got !== undefined, 'the message');
    expect(got).toBe('2099-01-01T00:00:00.000Z');
    const at = async (expiresAt: string) => {
      got = undefined;
      await bus.publish('offer.kept', {}, { expiresAt });
      await waitFor(() => got !== undefined, 'the message');
      return got;
    };
    expect(await at('2998-12-31T23:59:60Z')).toBe('2999-01-01T00:00:00.000Z');
    expect(await at('2096-02-29t12:00:00.250z')).toBe('2096-02-29T12:00:00.250Z');
    expect(await at('2099-01-01 00:00:00-01:30')).toBe('2099-01-01T01:30:00.000Z');
    const tooLong = await rejection(bus.publish('offer.kept', {}, { ttlMs: Number.MAX_SAFE_INTEGER }));
    expect((tooLong as Error).message).toContain('ttlMs');
  });

  it('refuses a dead-letter listing limit that is not a positive integer', async () => {
    const bus = await open();
    for (const limit of [0, -1, 1.5, Number.NaN, 10_001]) {
      expect(isInvalidOptionsError(await rejection(bus.listDeadLetters({ limit }))), String(limit)).toBe(
        true,
      );
    }
    expect(await bus.listDeadLetters({ limit: undefined })).toEqual([]);
  });

  it('refuses a misspelt dead-letter option rather than list or replay another selection', async () => {
    const bus = await open();
    await bus.subscribe(
      'job.failing',
      () => {
        throw new Error('broken');
      },
      { maxAttempts: 1 },
    );
    await bus.publish('job.failing', { n: 1 });
    await bus.publish('job.failing', { n: 2 });
    await waitFor(async () => (await bus.listDeadLetters()).length === 2, 'two dead letters');
    const [first] = await bus.listDeadLetters();
    // deadLetterId (for deadLetterIds) replayed every letter of the group; grop another group's.
    for (const [call, options, named] of [
      ['replayDeadLetters', { deadLetterId: [first!.deadLetterId] }, '"deadLetterId"'],
      ['replayDeadLetters', { grop: 'svc', limit: 1 }, '"grop"'],
      ['listDeadLetters', { limt: 1 }, '"limt"'],
    ] as const) {
      const refused = await rejection(
        call === 'listDeadLetters'
          ? bus.listDeadLetters(options as never)
          : bus.replayDeadLetters(options as never),
      );
      expect(isInvalidOptionsError(refused), String(refused)).toBe(true);
      expect((refused as Error).message).toContain(`${call} has no option ${named}`);
    }
    // Nothing replayed: both letters still there.
    expect(await bus.listDeadLetters()).toHaveLength(2);
    // A group given as null is refused, as subscribe refuses it.
    expect(await rejection(bus.listDeadLetters({ group: null as never }))).toBeDefined();
  });

  it('refuses a replay limit that is not a positive integer, and ids that are not strings', async () => {
    const bus = await open();
    // 0, -1 and NaN replayed nothing without a word.
    for (const limit of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const refused = await rejection(bus.replayDeadLetters({ limit }));
      expect(isInvalidOptionsError(refused), String(limit)).toBe(true);
      expect((refused as Error).message).toContain('limit');
    }
    for (const deadLetterIds of [
      'abc',
      [1],
      null,
      new Array(3),
      Object.assign(new Array(3), { 0: 'a', 2: 'b' }),
    ]) {
      const refused = await rejection(bus.replayDeadLetters({ deadLetterIds: deadLetterIds as never }));
      expect(isInvalidOptionsError(refused), JSON.stringify(deadLetterIds)).toBe(true);
    }
    expect(await bus.replayDeadLetters({ limit: 1 })).toBe(0);
    expect(await bus.replayDeadLetters({ deadLetterIds: [] })).toBe(0);
  });
});
