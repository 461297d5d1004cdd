import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { ferryFastify } from '../http/server/fastify.js';
import { HttpProblemError } from '../http/server/problem.js';
import { MemoryBroker } from '../messaging/memory/memory-broker.js';
import { MemoryTransport } from '../messaging/memory/memory-transport.js';
import { waitFor } from '../testing/wait.js';
import type { Logger } from './logger.js';

// What must not happen: a password that an error's message or stack quotes in a URL reaching a log
// line or a dead letter (on RabbitMQ its reason travels as headers, readable in the management UI).
// The errors are the kind users meet: fetch's refusal of a URL with credentials quotes it whole.
const PASSWORD = 'Pw-9f3e1c';
const quoting = () =>
  new TypeError(
    `Request cannot be constructed from a URL that includes credentials: http://billing:${PASSWORD}@127.0.0.1:47117/charge?api_key=K-${PASSWORD}`,
  );

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const record = (message: string, fields?: Record<string, unknown>) =>
    void lines.push(fields === undefined ? message : `${message} ${JSON.stringify(fields)}`);
  return { lines, debug: record, info: record, warn: record, error: record };
}

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

/**
 * A memory bus whose one subscription runs `handle` and dead-letters at its first failure; resolves
 * once the message published to it is a dead letter.
 */
async function deadLetterFrom(handle: () => void, logger: Logger = recordingLogger()) {
  const bus = await createBus({
    service: 'billing',
    transport: new MemoryTransport({ broker: new MemoryBroker() }),
    logger,
  });
  closers.push(() => bus.close());
  await bus.subscribe('invoice.created', handle, { group: 'billing', maxAttempts: 1 });
  await bus.publish('invoice.created', { id: 1 });
  await waitFor(async () => (await bus.listDeadLetters()).length === 1, 'the dead letter');
  const [letter] = await bus.listDeadLetters();
  return letter;
}

describe('errors that quote a URL with credentials', () => {
  it('are logged and dead-lettered by the bus with the password masked', async () => {
    const logger = recordingLogger();
    const letter = await deadLetterFrom(() => {
      throw quoting();
    }, logger);
    expect(letter?.reason.message).toContain('http://billing:***@127.0.0.1:47117/charge?api_key=***');
    expect(JSON.stringify(letter?.reason)).not.toContain(PASSWORD);
    expect(logger.lines.join('\n')).toMatch(/dead-lettering message .*billing:\*\*\*@/);
    expect(logger.lines.join('\n')).not.toContain(PASSWORD);
  });

  it('dead-letter a message whose error text is hard to mask (it overflowed the stack and was retried for ever)', async () => {
    let runs = 0;
    await deadLetterFrom(() => {
      runs++;
      throw new Error(`bad query ?${'a=1;'.repeat(20_000)}`);
    });
    expect(runs).toBe(1);
  });

  it('are dead-lettered masked when a plain object was thrown, its long JSON cut after masking', async () => {
    const letter = await deadLetterFrom(() => {
      throw { code: 'E_CONN', detail: 'x'.repeat(928), url: `amqp://svc:${PASSWORD}@rabbit:5672/` };
    });
    expect(letter?.reason.message).toMatch(/^non-Error value thrown: \{"code":"E_CONN"/);
    expect(letter?.reason.message).not.toContain(PASSWORD.slice(0, 4));
  });

  it('are logged and parked by an event store subscription with the password masked', async () => {
    const logger = recordingLogger();
    const store = new EventStore(new MemoryEventStoreBackend(), { logger });
    closers.push(() => store.close());
    await store.append('invoice-1', [{ type: 'InvoiceCreated', data: {} }]);
    const sub = store.subscribe({ name: 'billing', maxAttempts: 1 }, () => {
      throw quoting();
    });
    closers.push(() => sub.close());
    await waitFor(async () => (await sub.parked()).length === 1, 'the parked event');
    const [parked] = await sub.parked();
    expect(parked?.error).toContain('billing:***@');
    expect(parked?.error).not.toContain(PASSWORD);
    expect(logger.lines.join('\n')).toMatch(/parked event .*billing:\*\*\*@/);
    expect(logger.lines.join('\n')).not.toContain(PASSWORD);
  });

  it('are logged by the server middleware with the password masked, thrown or as a 5xx cause', async () => {
    const logger = recordingLogger();
    const app = Fastify();
    ferryFastify(app, { logger });
    app.get('/crash', async () => {
      throw quoting();
    });
    app.get('/named', async () => {
      throw Object.assign(new Error('refused'), { name: `ConnectError(amqp://svc:${PASSWORD}@rabbit)` });
    });
    app.get('/unavailable', async () => {
      throw new HttpProblemError(503, undefined, { detail: 'billing is down', cause: quoting() });
    });
    closers.push(() => app.close());
    expect((await app.inject({ url: '/crash' })).statusCode).toBe(500);
    expect((await app.inject({ url: '/named' })).statusCode).toBe(500);
    expect((await app.inject({ url: '/unavailable' })).statusCode).toBe(503);
    expect(logger.lines).toHaveLength(3);
    for (const line of logger.lines) expect(line).toMatch(/(billing|svc):\*\*\*@/);
    expect(logger.lines.join('\n')).not.toContain(PASSWORD);
  });
});
