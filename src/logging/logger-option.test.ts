import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
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
import { silentLogger } from './logger.js';
import { loggerOption } from './logger-option.js';

const refused = { name: 'InvalidOptionsError', code: 'INVALID_OPTIONS' };

describe('loggerOption', () => {
  it('takes undefined, console, silentLogger and a pino-style object', () => {
    expect(loggerOption('x', undefined)).toBeUndefined();
    expect(loggerOption('x', console)).toBe(console);
    expect(loggerOption('x', silentLogger)).toBe(silentLogger);
    const pinoish = { debug() {}, info() {}, warn() {}, error() {}, child() {} };
    expect(loggerOption('x', pinoish)).toBe(pinoish);
    expect(loggerOption('x', { error() {} }, ['error'])).toEqual({ error: expect.any(Function) });
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
