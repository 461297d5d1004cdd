import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../time/clock.js';
import type { Envelope } from '../envelope.js';
import type { Delivery, Outcome, SubscriptionSpec } from '../transport.js';
import { MemoryBroker } from './memory-broker.js';
import { MemoryTransport } from './memory-transport.js';

const START = Date.UTC(2030, 0, 1);
const ACKED: Outcome = { action: 'ack' };

function envelope(type = 'order.placed'): Envelope {
  return {
    specversion: '1.0',
    id: randomUUID(),
    source: 'orders',
    type,
    time: new Date(START).toISOString(),
    datacontenttype: 'application/json',
    data: { n: 1 },
    correlationid: randomUUID(),
  };
}

function spec(group: string, retryDelays: readonly number[] = [], pattern = 'order.*'): SubscriptionSpec {
  return { group, pattern, concurrency: 10, retryDelays };
}

/** Whether `promise` has resolved, once what is queued has run. */
async function resolved(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(() => {
    done = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

function setup() {
  const clock = new VirtualClock({ start: START });
  const transport = new MemoryTransport({ broker: new MemoryBroker({ clock }) });
  return { clock, transport };
}

describe('memory transport: publishTracked', () => {
  it('settles once every queue the message reached acked its copy', async () => {
    const { transport } = setup();
    let release!: () => void;
    const gate = new Promise<Outcome>((resolve) => {
      release = () => resolve(ACKED);
    });
    await transport.subscribe(spec('fast'), () => ACKED);
    await transport.subscribe(spec('slow'), () => gate);
    const { confirmed, settled } = transport.publishTracked(envelope());
    await confirmed;
    expect(await resolved(settled)).toBe(false);
    release();
    expect(await resolved(settled)).toBe(true);
  });

  it('does not settle a copy waiting for its retry, nor one waiting for a consumer', async () => {
    const { clock, transport } = setup();
    const attempts: number[] = [];
    await transport.subscribe(spec('retrying', [1000]), (delivery: Delivery) => {
      const attempt = delivery.ok ? delivery.message.attempt : 0;
      attempts.push(attempt);
      return attempt === 1 ? { action: 'retry', attempt: 2, delayMs: 1000 } : ACKED;
    });
    const { settled } = transport.publishTracked(envelope());
    expect(await resolved(settled)).toBe(false);
    await clock.advance(999);
    expect(await resolved(settled)).toBe(false);
    await clock.advance(1);
    expect(await resolved(settled)).toBe(true);
    expect(attempts).toEqual([1, 2]);

    // A queue whose consumer left keeps the message: not settled until a consumer acks it.
    const parked = await transport.subscribe(spec('parked', [], 'parcel.*'), () => ACKED);
    await parked.close(0);
    const waiting = transport.publishTracked(envelope('parcel.sent'));
    expect(await resolved(waiting.settled)).toBe(false);
    await transport.subscribe(spec('parked', [], 'parcel.*'), () => ACKED);
    expect(await resolved(waiting.settled)).toBe(true);
  });

  it('settles a copy dead-lettered, and copies dropped with their deleted queue, delayed ones included', async () => {
    const { transport } = setup();
    await transport.subscribe(spec('strict'), () => ({
      action: 'dead-letter',
      reason: { kind: 'handler-error', message: 'no' },
      attempts: 1,
    }));
    const dead = transport.publishTracked(envelope());
    expect(await resolved(dead.settled)).toBe(true);
    expect(await transport.listDeadLetters('strict', { limit: 10 })).toHaveLength(1);

    const retrying = await transport.subscribe(spec('retrying', [60_000]), () => ({
      action: 'retry',
      attempt: 2,
      delayMs: 60_000,
    }));
    const delayed = transport.publishTracked(envelope());
    expect(await resolved(delayed.settled)).toBe(false);
    await retrying.close(0);
    const buffered = transport.publishTracked(envelope());
    expect(await resolved(buffered.settled)).toBe(false);
    // strict dead-letters its copies: only the retrying queue's hold them back.
    expect(await transport.deleteSubscription(spec('retrying', [60_000]))).toBe(2);
    expect(await resolved(delayed.settled)).toBe(true);
    expect(await resolved(buffered.settled)).toBe(true);
  });

  it('refuses what publish refuses, and never settles it', async () => {
    const { transport } = setup();
    const { confirmed, settled } = transport.publishTracked(envelope('nobody.listens'));
    await expect(confirmed).rejects.toMatchObject({ code: 'UNROUTABLE' });
    expect(await resolved(settled)).toBe(false);
  });
});
