import { afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { createEventStore } from '../connect/create-event-store.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { silentLogger } from '../logging/logger.js';
import { createOutbox } from '../outbox/outbox.js';
import { waitFor } from '../testing/wait.js';
import type { Bus } from './bus.js';
import { MemoryBroker } from './memory/memory-broker.js';
import { MemoryTransport } from './memory/memory-transport.js';

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {});
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function bus(closeTimeoutMs = 5_000, url = `memory://close-overlap-${uuidv7()}`): Promise<Bus> {
  const b = await createBus({ url, service: 'jobs', logger: silentLogger, closeTimeoutMs });
  closers.push(() => b.close());
  return b;
}

/** A subscription whose handler takes `ms`, then publishes `job.done`; what it reached, in order. */
async function slowHandler(b: Bus, ms: number) {
  const seen: string[] = [];
  const sub = await b.subscribe('job.run', async () => {
    seen.push('started');
    await sleep(ms);
    seen.push('finished');
    await b.publish('job.done', {}).then(
      () => seen.push('published'),
      (error: { code?: string }) => seen.push(`publish ${error.code}`),
    );
  });
  await b.subscribe('job.done', () => {}, { group: 'done' });
  await b.publish('job.run', {});
  await waitFor(() => seen.includes('started'), 'the handler to start');
  return { seen, sub };
}

// A close called while another is under way waits for the same handlers (it resolved at once, and a
// handler's publish after the bus's close resolved was refused BUS_CLOSED).
describe('closes that overlap wait for the handlers in flight', () => {
  it('a second sub.close() waits as the first', async () => {
    const b = await bus();
    const { seen, sub } = await slowHandler(b, 300);
    const first = sub.close();
    await sleep(10);
    await sub.close();
    expect(seen.slice(0, 2)).toEqual(['started', 'finished']);
    await first;
  });

  it("bus.close() during a sub.close() waits for that subscription's handler, which may still publish", async () => {
    const b = await bus();
    const { seen, sub } = await slowHandler(b, 300);
    const first = sub.close();
    await b.close();
    expect(seen).toEqual(['started', 'finished', 'published']);
    await first;
  });

  it('sub.close() during bus.close() waits as the bus does', async () => {
    const b = await bus();
    const { seen, sub } = await slowHandler(b, 300);
    const closing = b.close();
    await sleep(10);
    await sub.close();
    expect(seen.slice(0, 2)).toEqual(['started', 'finished']);
    await closing;
  });

  it('two subscriptions closed apart at once: a transactional handler waiting for its turn behind one given up on runs nothing', async () => {
    // Must not happen: the closed subscription running and committing the waiting handler (the
    // first close's rollback freed the turn before the second close had given up). Must not be
    // lost: its message, handled once by the next subscriber.
    const url = `memory://close-overlap-${uuidv7()}`;
    const store = await createEventStore({ url: `memory://close-overlap-${uuidv7()}`, logger: silentLogger });
    closers.push(() => store.close());
    const b = await bus(400, url);
    const outbox = await createOutbox({ store, bus: b, logger: silentLogger });
    closers.push(() => outbox.close());
    let hung = false;
    let waitingRuns = 0;
    const a = await b.subscribe(
      'job.hang',
      async () => {
        hung = true;
        await new Promise(() => {});
      },
      { unitOfWork: outbox, handlerTimeoutMs: 0, group: 'a' },
    );
    const waiting = async (
      _m: unknown,
      { work }: { work: { append: (s: string, e: object[]) => Promise<unknown> } },
    ) => {
      waitingRuns++;
      await work.append('waited', [{ type: 'Ran', data: {} }]);
    };
    const c = await b.subscribe('job.wait', waiting as never, { unitOfWork: outbox, group: 'c' });
    await b.publish('job.hang', {});
    await waitFor(() => hung, 'the hung handler');
    await b.publish('job.wait', {});
    await sleep(20);
    await Promise.all([a.close(), c.close()]);
    await sleep(50);
    expect(waitingRuns).toBe(0);
    expect(await store.readStream('waited')).toEqual([]);
    const next = await bus(5_000, url);
    const nextOutbox = await createOutbox({ store, bus: next, logger: silentLogger });
    closers.push(() => nextOutbox.close());
    await next.subscribe('job.wait', waiting as never, { unitOfWork: nextOutbox, group: 'c' });
    await waitFor(async () => (await store.readStream('waited')).length === 1, 'the next subscriber');
    expect(waitingRuns).toBe(1);
  });
});

describe('the signal of a handler a close gave up on', () => {
  it('names what closed: the subscription, or the bus', async () => {
    for (const which of ['subscription', 'bus'] as const) {
      const b = await bus(100);
      let reason: { code?: string; message?: string } | undefined;
      const sub = await b.subscribe(
        'job.run',
        (_m, { signal }) =>
          new Promise<void>((resolve) => {
            signal.addEventListener('abort', () => {
              reason = signal.reason;
              resolve();
            });
          }),
        { handlerTimeoutMs: 0 },
      );
      await b.publish('job.run', {});
      await sleep(20);
      await (which === 'bus' ? b.close() : sub.close());
      await waitFor(() => reason !== undefined, 'the signal to abort');
      expect(reason).toMatchObject({ code: 'BUS_CLOSED' });
      expect(reason!.message).toMatch(
        new RegExp(`^the ${which} is closed: its close gave up on the handler`),
      );
    }
  });
});

describe('a close that gives up on handlers before the rest of it is done', () => {
  /** The embedded transport, whose subscriptions' closes take `restMs` more after giving up. */
  function slowClosing(restMs: number): MemoryTransport {
    const transport = new MemoryTransport({ broker: MemoryBroker.named(`slow-close-${uuidv7()}`) });
    const subscribe = transport.subscribe.bind(transport);
    transport.subscribe = async (spec, handler) => {
      const inner = await subscribe(spec, handler);
      return {
        close: async (timeoutMs, onGiveUp) => {
          await inner.close(timeoutMs, onGiveUp);
          await sleep(restMs);
        },
      };
    };
    return transport;
  }

  for (const handlerTimeoutMs of [0, 450]) {
    it(`aborts the signals of the handlers given up on as its transport gives up, not once its close is over (handlerTimeoutMs ${handlerTimeoutMs})`, async () => {
      // As on RabbitMQ, which may wait up to 1 s more for a retry under way: the handler ran on with
      // a live signal meanwhile (its limit then aborted it with HANDLER_TIMEOUT).
      const b = await createBus({
        transport: slowClosing(600),
        service: 'jobs',
        logger: silentLogger,
        closeTimeoutMs: 150,
      });
      closers.push(() => b.close());
      let aborted: { at: number; code?: string | undefined } | undefined;
      const sub = await b.subscribe(
        'job.run',
        (_m, { signal }) =>
          new Promise<void>((resolve) => {
            signal.addEventListener('abort', () => {
              aborted = { at: Date.now(), code: (signal.reason as { code?: string }).code };
              resolve();
            });
          }),
        { handlerTimeoutMs },
      );
      await b.publish('job.run', {});
      await sleep(20);
      const started = Date.now();
      await sub.close();
      expect(Date.now() - started).toBeGreaterThanOrEqual(700);
      expect(aborted?.code).toBe('BUS_CLOSED');
      expect(aborted!.at - started).toBeLessThan(400);
    });
  }

  it('logs no dead letter for what a handler given up on decides: nothing is dead-lettered', async () => {
    const warnings: string[] = [];
    const logger = { ...silentLogger, warn: (message: string) => void warnings.push(message) };
    const b = await createBus({
      url: `memory://close-log-${uuidv7()}`,
      service: 'jobs',
      logger,
      closeTimeoutMs: 100,
    });
    closers.push(() => b.close());
    let ended = false;
    const sub = await b.subscribe(
      'job.run',
      (_m, { signal }) =>
        new Promise<void>((_resolve, reject) => {
          // Does what its signal asks: stops, with the signal's reason.
          signal.addEventListener('abort', () => {
            ended = true;
            reject(signal.reason);
          });
        }),
      { maxAttempts: 1, handlerTimeoutMs: 0 },
    );
    await b.publish('job.run', {});
    await sleep(20);
    await sub.close();
    await waitFor(() => ended, 'the handler to stop');
    await sleep(50);
    expect(warnings.filter((w) => w.startsWith('dead-lettering'))).toEqual([]);
    expect(await b.listDeadLetters()).toEqual([]);
  });
});

describe('a handler that acts as its signal aborts at a close', () => {
  it('is refused a publish once bus.close() gave up on it, and what it published is not delivered', async () => {
    const url = `memory://close-publish-${uuidv7()}`;
    const b = await bus(150, url);
    let published: string | undefined;
    await b.subscribe(
      'job.run',
      (_m, { signal }) =>
        new Promise<void>(() => {
          signal.addEventListener('abort', () => {
            b.publish('job.followed', {}).then(
              () => {
                published = 'ok';
              },
              (error: { code?: string }) => {
                published = error.code;
              },
            );
          });
        }),
      { handlerTimeoutMs: 0 },
    );
    const watcher = await bus(5_000, url);
    const followed: unknown[] = [];
    await watcher.subscribe('job.followed', (m) => void followed.push(m.id), { group: 'watcher' });
    await b.publish('job.run', {});
    await sleep(20);
    await b.close();
    await waitFor(() => published !== undefined, 'the publish to end');
    expect(published).toBe('BUS_CLOSED');
    await sleep(100);
    expect(followed).toEqual([]);
  });

  for (const handlerTimeoutMs of [0, 250]) {
    it(`finds its unit of work ended at once: a last write is refused, not taken and undone (handlerTimeoutMs ${handlerTimeoutMs})`, async () => {
      const store = await createEventStore({ url: `memory://close-write-${uuidv7()}`, logger: silentLogger });
      closers.push(() => store.close());
      const b = await bus(400, `memory://close-write-${uuidv7()}`);
      const outbox = await createOutbox({ store, bus: b, logger: silentLogger });
      closers.push(() => outbox.close());
      let lateWrite: string | undefined;
      const handler = async (
        _m: unknown,
        {
          signal,
          work,
        }: { signal: AbortSignal; work: { append: (s: string, e: object[]) => Promise<unknown> } },
      ) => {
        await work.append('first', [{ type: 'Wrote', data: {} }]);
        await new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => {
            work.append('late', [{ type: 'Wrote', data: {} }]).then(
              () => {
                lateWrite = 'accepted';
              },
              (error: { code?: string }) => {
                lateWrite = error.code;
              },
            );
            resolve();
          });
        });
      };
      const sub = await b.subscribe('job.write', handler as never, { unitOfWork: outbox, handlerTimeoutMs });
      await b.publish('job.write', {});
      await sleep(50);
      await sub.close();
      await waitFor(() => lateWrite !== undefined, 'the late write to end');
      expect(lateWrite).toBe('INVALID_OPTIONS');
      expect(await store.readStream('first')).toEqual([]);
      expect(await store.readStream('late')).toEqual([]);
    });
  }
});

it("a transactional handler whose turn comes within bus.close()'s wait (another's limit freed it) runs and commits, as on RabbitMQ", async () => {
  // It ran nothing on memory: the other subscription's wait, ended early, set every close deadline.
  const store = await createEventStore({ url: `memory://close-turn-${uuidv7()}`, logger: silentLogger });
  closers.push(() => store.close());
  const b = await bus(400, `memory://close-turn-${uuidv7()}`);
  const outbox = await createOutbox({ store, bus: b, logger: silentLogger });
  closers.push(() => outbox.close());
  let hung = false;
  await b.subscribe(
    'job.hang',
    async () => {
      hung = true;
      await new Promise(() => {});
    },
    { unitOfWork: outbox, handlerTimeoutMs: 250, group: 'a', maxAttempts: 1 },
  );
  const waiting = async (
    _m: unknown,
    { work }: { work: { append: (s: string, e: object[]) => Promise<unknown> } },
  ) => {
    await work.append('waited', [{ type: 'Ran', data: {} }]);
  };
  await b.subscribe('job.wait', waiting as never, { unitOfWork: outbox, group: 'c' });
  await b.publish('job.hang', {});
  await waitFor(() => hung, 'the hung handler');
  await b.publish('job.wait', {});
  await sleep(20);
  await b.close();
  expect(await store.readStream('waited')).toHaveLength(1);
});
