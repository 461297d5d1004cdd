import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../testing/wait.js';
import { holdWriteLock } from './fixtures/write-lock-holder.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';
import { isStoreBusyError } from './store-busy.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-busy-'));
let files = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

async function openBackend(
  busyTimeoutMs: number,
): Promise<{ backend: SqliteEventStoreBackend; path: string }> {
  const path = join(dir, `busy-${++files}.db`);
  const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs });
  await backend.open();
  cleanups.push(() => backend.close());
  return { backend, path };
}

/** Counts event-loop turns (a 5 ms timer) and the longest stall between two of them. */
function watchEventLoop(): { stop(): { ticks: number; longestStallMs: number } } {
  let ticks = 0;
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    ticks++;
  }, 5);
  return {
    stop() {
      clearInterval(timer);
      longest = Math.max(longest, performance.now() - last);
      return { ticks, longestStallMs: Math.round(longest) };
    },
  };
}

describe('SQLite under another process holding the write lock', () => {
  it('waits for the lock without freezing the event loop, then appends', async () => {
    const { backend, path } = await openBackend(5000);
    const holder = await holdWriteLock(path, 1000, cleanups);
    const loop = watchEventLoop();
    const started = Date.now();
    const result = await backend.append('s', [{ id: 'e-1', type: 'A', data: 1, metadata: {} }], 'any');
    const waited = Date.now() - started;
    const { ticks, longestStallMs } = loop.stop();
    // A 5 ms timer over about a second: dozens of turns, none held up for long.
    expect(ticks).toBeGreaterThan(50);
    expect(longestStallMs).toBeLessThan(250);
    expect(waited).toBeGreaterThan(500);
    expect(result.nextExpectedVersion).toBe(0);
    await waitFor(holder.released, 'the other process to report its commit');
  }, 20_000);

  it('fails appends, checkpoints, lease claims and inbox claims with STORE_BUSY after busyTimeoutMs, the loop running meanwhile', async () => {
    const { backend, path } = await openBackend(400);
    const inbox = backend.inbox();
    await holdWriteLock(path, 8000, cleanups);
    const operations: [string, () => Promise<unknown>][] = [
      ['append', () => backend.append('s', [{ id: 'e-1', type: 'A', data: 1, metadata: {} }], 'any')],
      ['saveCheckpoint', () => backend.saveCheckpoint('projector', 1n)],
      ['claimSubscription', () => backend.claimSubscription('projector', 'me', 10_000)],
      ['inbox.begin', () => inbox.begin('k')],
    ];
    for (const [name, operation] of operations) {
      const loop = watchEventLoop();
      const started = Date.now();
      const error = await operation().then(
        () => undefined,
        (e: unknown) => e,
      );
      const waited = Date.now() - started;
      const { ticks, longestStallMs } = loop.stop();
      expect(isStoreBusyError(error), `${name} failed with ${String(error)}`).toBe(true);
      expect(waited, name).toBeGreaterThanOrEqual(390);
      expect(waited, name).toBeLessThan(2000);
      expect(ticks, name).toBeGreaterThan(20);
      expect(longestStallMs, name).toBeLessThan(250);
    }
  }, 30_000);

  it('bounds by busyTimeoutMs, and reports whole, the wait of writes queued behind one that waits on another process', async () => {
    // A lease claim (a subscription starting) and an append called together while another process
    // holds the lock: the append waited its turn here until the other process let go, then failed.
    const { backend, path } = await openBackend(400);
    await holdWriteLock(path, 6000, cleanups);
    const started = Date.now();
    const outcomes = await Promise.allSettled([
      backend.claimSubscription('projector', 'me', 10_000),
      backend.append('s', [{ id: 'e-1', type: 'A', data: 1, metadata: {} }], 'any'),
      backend.saveCheckpoint('projector', 1n),
    ]);
    const waited = Date.now() - started;
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      const reason = (outcome as PromiseRejectedResult).reason;
      expect(isStoreBusyError(reason)).toBe(true);
      // It says how long it waited in all, its turn here included (it said "for 5 ms").
      expect(reason.waitedMs).toBeGreaterThanOrEqual(390);
      expect(String(reason.message)).toContain(`for ${reason.waitedMs} ms`);
    }
    // Each waited at most its own busyTimeoutMs, not the other process's 6 s.
    expect(waited).toBeLessThan(2000);
  }, 30_000);
});
