import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../logging/logger.js';
import { waitFor } from '../testing/wait.js';
import type { EventStoreBackend } from './backend.js';
import { MemoryEventStoreBackend } from './memory/memory-backend.js';
import { EventStore } from './store.js';
import { deadOnThisHost, leaseOwner } from './subscription.js';

/** The memory backend, with lease claims that can be refused or failed on demand. */
function leaseControlled(backend: MemoryEventStoreBackend): {
  backend: EventStoreBackend;
  set(mode: 'normal' | 'refuse' | 'fail'): void;
} {
  let mode: 'normal' | 'refuse' | 'fail' = 'normal';
  const controlled = new Proxy(backend, {
    get(target, property) {
      if (property === 'claimSubscription') {
        return async (subscription: string, owner: string, ttlMs: number) => {
          if (mode === 'refuse') return 'another-instance';
          if (mode === 'fail') throw new Error('connection refused');
          return target.claimSubscription(subscription, owner, ttlMs);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return {
    backend: controlled,
    set: (m) => {
      mode = m;
    },
  };
}

function recordingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const noop = () => {};
  return { warnings, debug: noop, info: noop, error: noop, warn: (message) => void warnings.push(message) };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('EventSubscription leases', () => {
  it('stops handling once another instance has its lease, and stands by until it can claim it again', async () => {
    // Must not happen: handling after the lease was lost. Must not be lost: the events appended meanwhile.
    const { backend, set } = leaseControlled(new MemoryEventStoreBackend());
    const logger = recordingLogger();
    const store = new EventStore(backend, { logger });
    await store.append('s', [{ type: 'A', data: 1 }]);
    const seen: string[] = [];
    const sub = store.subscribe({ name: 'p', leaseMs: 300 }, (e) => void seen.push(e.type));
    await waitFor(() => seen.length === 1, 'the first event');
    set('refuse'); // the next renewal finds the lease taken
    await waitFor(() => !sub.active, 'the lease to be lost');
    await store.append('s', [{ type: 'B', data: 2 }]);
    await sleep(400);
    expect(seen).toEqual(['A']);
    expect(logger.warnings.some((w) => w.includes('lost its lease'))).toBe(true);
    set('normal');
    await waitFor(() => seen.length === 2, 'the event appended while standing by');
    expect(seen).toEqual(['A', 'B']);
    await sub.close();
    await store.close();
  });

  it('gives the subscription up when it cannot renew its lease before it expires', async () => {
    const { backend, set } = leaseControlled(new MemoryEventStoreBackend());
    const store = new EventStore(backend, { logger: recordingLogger() });
    const seen: string[] = [];
    const sub = store.subscribe({ name: 'p', leaseMs: 300 }, (e) => void seen.push(e.type));
    await store.append('s', [{ type: 'A', data: 1 }]);
    await waitFor(() => seen.length === 1, 'the first event');
    set('fail'); // the store unreachable for renewals: after 300 ms the lease may be someone else's
    await waitFor(() => !sub.active, 'the lease to run out', 2000);
    await store.append('s', [{ type: 'B', data: 2 }]);
    await sleep(300);
    expect(seen).toEqual(['A']);
    set('normal');
    await waitFor(() => seen.length === 2, 'the takeover once the store answers again');
    await sub.close();
    await store.close();
  });

  it('refuses a lease shorter than 100 ms', () => {
    const store = new EventStore(new MemoryEventStoreBackend());
    expect(() => store.subscribe({ name: 'p', leaseMs: 50 }, () => {})).toThrow(/leaseMs/);
  });
});

describe('deadOnThisHost', () => {
  it('says dead only of an exited process of this host and pid namespace', () => {
    const exited = spawnSync(process.execPath, ['-e', '']).pid!;
    expect(deadOnThisHost(leaseOwner(exited, 'x'))).toBe(true);
    expect(deadOnThisHost(leaseOwner(process.pid, 'x'))).toBe(false);
    expect(deadOnThisHost(leaseOwner(process.ppid, 'x'))).toBe(false);
    expect(deadOnThisHost(`elsewhere~1/${exited}/x`)).toBe(false);
    expect(deadOnThisHost('a-name-without-a-process')).toBe(false);
  });
});

describe('calls that poll the store settle at the close', () => {
  it('replayParked() waiting when the subscription closes has settled once close() resolved (it waited on a timer that kept nothing alive)', async () => {
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: recordingLogger() });
    for (let i = 0; i < 6; i++) await store.append(`rp-${i}`, [{ type: 'A', data: i }]);
    let failing = true;
    const sub = store.subscribe({ name: 'rp-settle', maxAttempts: 1 }, async () => {
      if (failing) throw new Error('down');
      await sleep(100);
    });
    await sub.caughtUp();
    failing = false;
    let state = 'pending';
    const replaying = sub.replayParked().then(
      (n) => {
        state = `resolved ${n}`;
      },
      (error: { code?: string }) => {
        state = `rejected ${error.code}`;
      },
    );
    await sleep(250);
    await sub.close();
    // A script awaiting it next exited with the promise unsettled (exit code 13).
    await new Promise((resolve) => setImmediate(resolve));
    expect(state).toBe('rejected EVENT_STORE_CLOSED');
    await replaying;
    await store.close();
  });
});
