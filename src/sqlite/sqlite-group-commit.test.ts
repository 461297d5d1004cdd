import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { isConcurrencyError, isDuplicateEventIdError } from '../eventstore/errors.js';
import type { AppendResult, ExpectedVersion, PreparedEvent } from '../eventstore/types.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-group-'));
let files = 0;
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of cleanup.splice(0).reverse()) await close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function openBackend(): Promise<{ backend: SqliteEventStoreBackend; path: string }> {
  const path = join(dir, `events-${++files}.db`);
  const backend = new SqliteEventStoreBackend({ path });
  await backend.open();
  cleanup.push(() => backend.close());
  return { backend, path };
}

const event = (data: unknown = {}, id: string = randomUUID()): PreparedEvent => ({
  id,
  type: 'Tick',
  data,
  metadata: {},
});

describe('SQLite group commit', () => {
  it('commits concurrent appends to distinct streams together, each with its own result', async () => {
    const { backend } = await openBackend();
    const results = await Promise.all(
      Array.from({ length: 64 }, (_, i) => backend.append(`s-${i}`, [event({ i })], 'no_stream')),
    );
    expect(results.map((r) => r.nextExpectedVersion)).toEqual(Array.from({ length: 64 }, () => 0));
    // Positions follow call order: all 64 in one batch, at the end of the turn they were called in.
    expect(results.map((r) => r.position)).toEqual(Array.from({ length: 64 }, (_, i) => BigInt(i + 1)));
    expect(backend.groupCommits).toBe(1);
    for (const [i, r] of results.entries()) {
      const [stored] = await backend.readStream(`s-${i}`, {});
      expect(stored).toMatchObject({ position: r.position, data: { i } });
    }
  });

  it('commits appends called in separate callbacks of one event-loop turn together (requests that arrived together)', async () => {
    const { backend } = await openBackend();
    // Eight callbacks of one turn (as eight requests read in one poll): before, the first committed
    // within its call, alone, and each of the others in a commit of its own.
    const results = await Promise.all(
      Array.from(
        { length: 8 },
        (_, i) =>
          new Promise<AppendResult>((resolve, reject) =>
            setImmediate(() => backend.append(`t-${i}`, [event({ i })], 'no_stream').then(resolve, reject)),
          ),
      ),
    );
    expect(results.map((r) => r.position)).toEqual(Array.from({ length: 8 }, (_, i) => BigInt(i + 1)));
    expect(backend.groupCommits).toBe(1);
  });

  it('commits the appends called before close() before it closes', async () => {
    const { backend, path } = await openBackend();
    const appended = Promise.all([
      backend.append('last', [event({ n: 1 })], 'no_stream'),
      backend.append('last', [event({ n: 2 })], 0),
    ]);
    await backend.close();
    expect((await appended).map((r) => r.nextExpectedVersion)).toEqual([0, 1]);
    const db = new Database(path, { readonly: true });
    cleanup.push(() => db.close());
    expect(db.prepare('SELECT count(*) FROM ferry_events').pluck().get()).toBe(2);
    await expect(backend.append('after', [event()], 'no_stream')).rejects.toMatchObject({
      code: 'EVENT_STORE_CLOSED',
    });
  });

  it("commits and closes under a test's fake timers (installed after Ferry loaded)", async () => {
    const { backend, path } = await openBackend();
    const idempotency = backend.idempotencyStore({ namespace: 'faked' });
    const claim = await idempotency.begin('key', 'fingerprint');
    const realTimeout = globalThis.setTimeout;
    vi.useFakeTimers();
    try {
      const answer = { status: 201, headers: {}, body: '{}', encoding: 'utf8' } as const;
      const work = Promise.all([
        backend.append('faked', [event({ n: 1 })], 'no_stream'),
        backend.append('faked', [event({ n: 2 })], 0),
        backend.outboxStorage().transaction((tx) => tx.append('unit', [event()], 'no_stream')),
        idempotency.complete('key', answer, claim.state === 'new' ? claim.claim : undefined),
      ]).then(() => backend.close());
      // Before, the commits waited for a faked setImmediate: they never came.
      const outcome = await Promise.race([
        work.then(() => 'done'),
        new Promise((resolve) => realTimeout(() => resolve('stuck'), 5000)),
      ]);
      expect(outcome).toBe('done');
    } finally {
      vi.useRealTimers();
    }
    const db = new Database(path, { readonly: true });
    cleanup.push(() => db.close());
    expect(db.prepare('SELECT count(*) FROM ferry_events').pluck().get()).toBe(3);
  });

  it('fails exactly the appends whose expected version or ids do not hold, and commits the others', async () => {
    const { backend } = await openBackend();
    for (let s = 0; s < 8; s++) await backend.append(`s-${s}`, [event()], 'no_stream');
    const taken = randomUUID();
    const first = await backend.append('dup', [event({}, taken)], 'any');
    const calls: { stream: string; events: PreparedEvent[]; expected: ExpectedVersion; outcome: string }[] = [
      { stream: 'warm', events: [event()], expected: 'any', outcome: 'ok' },
    ];
    for (let s = 0; s < 8; s++) {
      const stream = `s-${s}`;
      if (s % 2 === 0) {
        calls.push({ stream, events: [event({ won: true })], expected: 0, outcome: 'ok' });
        calls.push({ stream, events: [event()], expected: 0, outcome: 'conflict' });
        calls.push({ stream, events: [event()], expected: 5, outcome: 'conflict' });
      } else {
        calls.push({ stream, events: [event()], expected: 5, outcome: 'conflict' });
        calls.push({ stream, events: [event()], expected: 'no_stream', outcome: 'conflict' });
        calls.push({ stream, events: [event({ won: true })], expected: 0, outcome: 'ok' });
      }
      calls.push({ stream: `other-${s}`, events: [event()], expected: 'no_stream', outcome: 'ok' });
    }
    calls.splice(4, 0, {
      stream: 'dup',
      events: [event(), event({}, taken)],
      expected: 'any',
      outcome: 'duplicate',
    });
    calls.splice(9, 0, { stream: 'dup', events: [event({}, taken)], expected: 'any', outcome: 'again' });
    const outcomes = await Promise.allSettled(
      calls.map((c) => backend.append(c.stream, c.events, c.expected)),
    );
    for (const [i, outcome] of outcomes.entries()) {
      const call = calls[i]!;
      const label = `${i} ${call.stream} ${String(call.expected)}`;
      if (call.outcome === 'ok') expect(outcome.status, label).toBe('fulfilled');
      else if (call.outcome === 'again') {
        expect(outcome.status, label).toBe('fulfilled');
        expect((outcome as PromiseFulfilledResult<AppendResult>).value).toEqual(first);
      } else {
        expect(outcome.status, label).toBe('rejected');
        const reason = (outcome as PromiseRejectedResult).reason;
        expect(
          call.outcome === 'conflict' ? isConcurrencyError(reason) : isDuplicateEventIdError(reason),
          label,
        ).toBe(true);
      }
    }
    for (let s = 0; s < 8; s++) {
      const events = await backend.readStream(`s-${s}`, {});
      expect(events.map((e) => e.version)).toEqual([0, 1]);
      expect(events[1]!.data).toEqual({ won: true });
    }
    expect((await backend.readStream('dup', {})).map((e) => e.id)).toEqual([taken]);
    expect(backend.groupCommits).toBeGreaterThanOrEqual(1);
  });

  it('applies appends to one stream in call order within a batch', async () => {
    const { backend } = await openBackend();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => backend.append('seq', [event({ i })], i - 1)),
    );
    expect(results.map((r) => r.nextExpectedVersion)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect((await backend.readStream('seq', {})).map((e) => e.data)).toEqual(
      Array.from({ length: 20 }, (_, i) => ({ i })),
    );
    expect(backend.groupCommits).toBe(1);
  });

  it('keeps call order while another connection holds the write lock, then commits every append', async () => {
    const { backend, path } = await openBackend();
    const other = new Database(path);
    cleanup.push(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    const appends = Array.from({ length: 40 }, (_, i) =>
      backend.append(i % 2 === 0 ? 'shared' : `own-${i}`, [event({ i })], 'any'),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    other.exec('COMMIT');
    const results = await Promise.all(appends);
    expect((await backend.readStream('shared', {})).map((e) => (e.data as { i: number }).i)).toEqual(
      Array.from({ length: 20 }, (_, k) => k * 2),
    );
    const positions = results.map((r) => r.position);
    expect(positions).toEqual([...positions].sort((a, b) => (a < b ? -1 : 1)));
    expect(backend.groupCommits).toBeGreaterThanOrEqual(1);
  });
});
