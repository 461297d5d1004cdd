import Fastify from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { AmqpTransport } from '../amqp/amqp-transport.js';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import { createIdempotencyStore } from '../connect/create-idempotency-store.js';
import { ferryContext, ferryErrors, ferryIdempotency, ferryNotFound } from '../http/server/express.js';
import { ferryFastify, ferryFastifyOptions } from '../http/server/fastify.js';
import { MemoryIdempotencyStore } from '../http/server/memory-idempotency-store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { createOutbox } from '../outbox/outbox.js';
import { defineSaga } from '../saga/define-saga.js';
import { startSaga } from '../saga/start-saga.js';
import { waitFor } from '../testing/wait.js';
import { type Logger, silentLogger } from './logger.js';
import { loggerOption } from './logger-option.js';

const refused = { name: 'InvalidOptionsError', code: 'INVALID_OPTIONS' };

/** A logger whose levels do nothing, but for those given. */
function sinkWith(levels: Partial<Record<'debug' | 'info' | 'warn' | 'error', () => unknown>>): Logger {
  return { debug() {}, info() {}, warn() {}, error() {}, ...levels } as Logger;
}

/** What is written to stderr until `restore()`, written nowhere else. */
function captureStderr(): { written: string[]; restore: () => void } {
  const written: string[] = [];
  const write = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    written.push(String(chunk));
    return true;
  });
  return { written, restore: () => write.mockRestore() };
}

describe('loggerOption', () => {
  it('takes undefined, console, silentLogger, a pino-style object and a class instance, calling their own methods', () => {
    expect(loggerOption('x', undefined)).toBeUndefined();
    expect(() => loggerOption('x', console)).not.toThrow();
    expect(() => loggerOption('x', silentLogger)).not.toThrow();
    const lines: string[] = [];
    const pinoish = {
      debug: (m: string) => lines.push(`debug ${m}`),
      info: (m: string) => lines.push(`info ${m}`),
      warn: (m: string) => lines.push(`warn ${m}`),
      error: (m: string) => lines.push(`error ${m}`),
      child() {},
    };
    loggerOption<Logger>('x', pinoish)?.warn('careful', { n: 1 });
    class Sink {
      readonly #lines = lines;
      debug() {}
      info() {}
      warn() {}
      error(message: string, fields?: Record<string, unknown>) {
        this.#lines.push(`sink ${message} ${JSON.stringify(fields)}`);
      }
    }
    loggerOption('x', new Sink())?.error('broken', { id: 7 });
    loggerOption('x', { error: (m: string) => lines.push(`only ${m}`) }, ['error'])?.error('here');
    expect(lines).toEqual(['warn careful', 'sink broken {"id":7}', 'only here']);
  });

  it('hands a line without fields to the logger as the message alone (console printed "… undefined")', async () => {
    const calls: unknown[][] = [];
    const line = (...args: unknown[]) => calls.push(args);
    const consoleLike = sinkWith({ info: line, warn: line, error: line });
    const logger = loggerOption<Logger>('x', consoleLike);
    logger?.warn('alone');
    logger?.warn('with', { n: 1 });
    expect(calls).toEqual([['alone'], ['with', { n: 1 }]]);
    // Where users met it: the outbox relay's line about a message nobody receives.
    calls.length = 0;
    // Names of their own: `memory://` alone is the process's default store and broker, and a row left
    // in its outbox reached the next test's relay.
    const store = await createEventStore({ url: `memory://lines-${uuidv7()}` });
    const bus = await createBus({
      url: `memory://lines-${uuidv7()}`,
      service: 'lines',
      logger: silentLogger,
    });
    const outbox = await createOutbox({ store, bus, logger: consoleLike, relay: { retryDelayMs: 50 } });
    try {
      await outbox.unitOfWork((work) => work.publish('nobody.listens', { a: 1 }));
      await waitFor(() => calls.length > 0, "the relay's line about the refused message");
      for (const args of calls) expect(args.at(-1)).not.toBeUndefined();
    } finally {
      await outbox.close();
      await bus.close();
      await store.close();
    }
  });

  it('wraps a logger once: one it already kept from throwing is handed back as it is', () => {
    const once = loggerOption<Logger>('x', console);
    expect(once).not.toBe(console);
    expect(loggerOption('y', once)).toBe(once);
    // Kept for the error level only, it still lacks the others where every level is needed.
    const errorOnly = loggerOption('x', { error() {} }, ['error']);
    expect(() => loggerOption('y', errorOnly)).toThrow(/it has no debug, info, warn/);
  });

  it('keeps a logger that throws from stopping its caller, and says so on stderr once per level', () => {
    const { written, restore } = captureStderr();
    try {
      const closedSink = sinkWith({
        warn() {
          throw new Error('log sink closed');
        },
      });
      const logger = loggerOption<Logger>('x', closedSink);
      expect(() => logger?.warn('first')).not.toThrow();
      expect(() => logger?.warn('second')).not.toThrow();
    } finally {
      restore();
    }
    expect(written).toEqual([
      "ferry: the logger's warn threw (log sink closed); its lines are lost while it does: first\n",
    ]);
  });

  it('keeps a logger that throws a value with no text, or whose promise rejects, from stopping its caller', async () => {
    const { written, restore } = captureStderr();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const odd = sinkWith({
        // String() of a null-prototype object throws: the guard threw, and a subscription stopped.
        warn() {
          throw Object.create(null);
        },
        async error() {
          throw new Error('async sink closed');
        },
      });
      const logger = loggerOption<Logger>('x', odd);
      expect(() => logger?.warn('w')).not.toThrow();
      expect(() => logger?.error('e')).not.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      restore();
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(written).toEqual([
      "ferry: the logger's warn threw (a value with no text); its lines are lost while it does: w\n",
      "ferry: the logger's error threw (async sink closed); its lines are lost while it does: e\n",
    ]);
  });

  it('refuses what has not every level as a function, naming what is missing', () => {
    expect(() => loggerOption('createOutbox', {})).toThrow(
      'createOutbox logger must have debug, info, warn, error functions (console, a pino logger or silentLogger do); it has no debug, info, warn, error',
    );
    expect(() => loggerOption('x', { debug() {}, info() {}, warn: 'loud', error() {} })).toThrow(
      /it has no warn$/,
    );
    for (const bad of [null, 5, 'console', true]) {
      expect(() => loggerOption('x', bad as never)).toThrow(expect.objectContaining(refused));
    }
    expect(() => loggerOption('ferryErrors', { warn() {} }, ['error'])).toThrow(
      /^ferryErrors logger must have error functions .*; it has no error$/,
    );
  });
});

describe('a logger without its functions is refused where it is given, not at its first line', () => {
  const broken = {} as never;

  it('by the bus, the event store, the idempotency store, the outbox and a saga', async () => {
    await expect(
      createBus({ url: `memory://logger-${uuidv7()}`, service: 's', logger: broken }),
    ).rejects.toMatchObject(refused);
    await expect(createEventStore({ url: 'memory://', logger: broken })).rejects.toMatchObject(refused);
    await expect(createIdempotencyStore({ url: 'memory://', logger: broken })).rejects.toMatchObject(refused);
    expect(() => new AmqpTransport({ url: 'amqp://127.0.0.1', logger: broken })).toThrow(
      expect.objectContaining(refused),
    );

    const bus = await createBus({ url: `memory://logger-${uuidv7()}`, service: 's', logger: silentLogger });
    const store = await createEventStore({ url: 'memory://', logger: silentLogger });
    try {
      // The relay's first warning threw a TypeError: the message stayed pending, close() rejected.
      await expect(createOutbox({ store, bus, logger: broken })).rejects.toMatchObject(refused);
      const outbox = await createOutbox({ store, bus, logger: silentLogger });
      const saga = defineSaga({
        name: 'quiet',
        contracts: { 'a.started': z.object({}) },
        startedBy: ['a.started'],
        initial: () => ({ status: 'open' as const, data: {} }),
        id: { 'a.started': () => 'one' },
        states: { open: {} },
      });
      await expect(startSaga(saga, { outbox, logger: broken })).rejects.toMatchObject(refused);
      await outbox.close();
    } finally {
      await bus.close();
      await store.close();
    }
  });

  it('a logger whose warn throws does not stop the relay: a refused message is set aside, the next one is delivered', async () => {
    const bus = await createBus({ url: `memory://logger-${uuidv7()}`, service: 's', logger: silentLogger });
    const store = await createEventStore({ url: `memory://logger-${uuidv7()}`, logger: silentLogger });
    const { restore } = captureStderr();
    try {
      const closed = () => {
        throw new Error('log sink closed');
      };
      const closedSink = sinkWith({ warn: closed, error: closed });
      const outbox = await createOutbox({
        store,
        bus,
        logger: closedSink,
        relay: { retryDelayMs: 10, maxAttempts: 2 },
      });
      // Nobody subscribes: refused, retried, set aside, with a warning each time.
      await outbox.unitOfWork((work) => work.publish('nobody.listens', {}).then(() => undefined));
      await waitFor(async () => (await outbox.failed()).length === 1, 'the refused message set aside');
      const got: string[] = [];
      await bus.subscribe('ok.*', (m) => void got.push(m.type), { group: 'g' });
      await outbox.unitOfWork((work) => work.publish('ok.one', {}).then(() => undefined));
      await waitFor(() => got.length === 1, 'the next message delivered');
      await outbox.close();
    } finally {
      restore();
      await bus.close();
      await store.close();
    }
  });

  it('by the server middleware', () => {
    const noError = { warn() {} } as never;
    expect(() => ferryErrors({ logger: noError })).toThrow(expect.objectContaining(refused));
    expect(() => ferryNotFound({ logger: noError })).toThrow(expect.objectContaining(refused));
    expect(() => ferryContext({ logger: noError })).toThrow(expect.objectContaining(refused));
    expect(() => ferryIdempotency({ store: new MemoryIdempotencyStore(), logger: noError })).toThrow(
      expect.objectContaining(refused),
    );
    expect(() => ferryFastifyOptions({ logger: noError })).toThrow(expect.objectContaining(refused));
    expect(() => ferryFastify(Fastify(), { logger: noError })).toThrow(expect.objectContaining(refused));
    // An error function is all a problem logger needs.
    expect(() => ferryErrors({ logger: { error() {} } })).not.toThrow();
  });
});
