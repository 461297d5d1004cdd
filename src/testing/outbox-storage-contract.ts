import { isConcurrencyError } from '../eventstore/errors.js';
import type { EventStore } from '../eventstore/store.js';
import { isSagaConcurrencyError } from '../outbox/errors.js';
import type { OutboxStorage, SagaRow, SagaStatus } from '../outbox/storage.js';
import { OUTBOX_T0, outboxTestRow, preparedTestEvents } from './outbox-rows.js';
import { vitest } from './vitest-api.js';

/** What the outbox storage contract needs. */
export interface OutboxStorageHarness {
  /** A fresh, empty store and its outbox storage, isolated from every other call's. */
  create(): Promise<OutboxStorageUnderTest>;
}

export interface OutboxStorageUnderTest {
  readonly storage: OutboxStorage;
  /** The event store on the same backend, to see what units of work appended. */
  readonly store: EventStore;
  /** Another storage on the same database (another instance of the service), for durable backends. */
  sibling?(): Promise<OutboxStorage>;
  /** Closes everything the harness opened for this call. */
  close(): Promise<void>;
}

const T0 = OUTBOX_T0;
const message = outboxTestRow;
const events = preparedTestEvents;

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

/**
 * The outbox storage contract: units of work, the outbox's leases and order per key, inbox marks and
 * saga rows. Every backend (memory, SQLite, PostgreSQL) must pass it.
 */
export function testOutboxStorage(name: string, harness: OutboxStorageHarness): void {
  const { afterEach, describe, expect, it } = vitest('testOutboxStorage');
  describe(`outbox storage contract: ${name}`, () => {
    const opened: OutboxStorageUnderTest[] = [];
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((o) => o.close()));
    });
    async function open(): Promise<OutboxStorageUnderTest> {
      const o = await harness.create();
      opened.push(o);
      return o;
    }

    it('commits appended events, outbox rows, inbox marks and saga rows together', async () => {
      const { storage, store } = await open();
      const m = message('order-1');
      const result = await storage.transaction(async (tx) => {
        const appended = await tx.append('order-1', events('OrderPlaced'), 'no_stream');
        await tx.enqueue([m]);
        expect(await tx.markHandled('orders', 'msg-1', T0)).toBe(true);
        await tx.saveSaga(saga('s-1', 1), 0);
        return appended.nextExpectedVersion;
      });
      expect(result).toBe(0);
      expect((await store.readStream('order-1')).map((e) => e.type)).toEqual(['OrderPlaced']);
      const claimed = await storage.claim('relay-a', T0, 10, 30_000);
      expect(claimed).toHaveLength(1);
      expect(claimed[0]).toMatchObject({
        id: m.id,
        key: 'order-1',
        envelope: m.envelope,
        state: 'pending',
        attempts: 0,
        createdAt: T0,
        dueAt: T0,
      });
      expect(typeof claimed[0]!.seq).toBe('bigint');
      expect(await storage.transaction((tx) => tx.markHandled('orders', 'msg-1', T0))).toBe(false);
      expect(await storage.transaction((tx) => tx.loadSaga('order', 's-1'))).toMatchObject({
        state: '{"n":1}',
        version: 1,
        status: 'active',
      });
    });

    it('keeps nothing of a unit of work that throws, and rethrows its error', async () => {
      const { storage, store } = await open();
      const boom = new Error('boom');
      const thrown = await rejection(
        storage.transaction(async (tx) => {
          await tx.append('order-2', events('OrderPlaced'), 'no_stream');
          await tx.enqueue([message()]);
          await tx.markHandled('orders', 'msg-2', T0);
          await tx.saveSaga(saga('s-2', 1), 0);
          throw boom;
        }),
      );
      expect(thrown).toBe(boom);
      expect(await store.readStream('order-2')).toEqual([]);
      expect(await storage.claim('relay-a', T0, 10, 30_000)).toEqual([]);
      expect(await storage.transaction((tx) => tx.markHandled('orders', 'msg-2', T0))).toBe(true);
      expect(await storage.transaction((tx) => tx.loadSaga('order', 's-2'))).toBeUndefined();
    });

    it('shows nothing of an open unit of work to readers outside it', async () => {
      const { storage, store } = await open();
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let appended!: () => void;
      const wrote = new Promise<void>((resolve) => {
        appended = resolve;
      });
      const work = storage.transaction(async (tx) => {
        await tx.append('order-3', events('OrderPlaced'), 'no_stream');
        await tx.enqueue([message()]);
        appended();
        await gate;
      });
      await wrote;
      expect(await store.readStream('order-3')).toEqual([]);
      expect(await storage.claim('relay-a', T0, 10, 30_000)).toEqual([]);
      release();
      await work;
      expect(await store.readStream('order-3')).toHaveLength(1);
      expect(await storage.claim('relay-a', T0, 10, 30_000)).toHaveLength(1);
    });

    it('checks expected versions inside the unit of work, counting its own earlier appends', async () => {
      const { storage, store } = await open();
      await store.append('order-4', [{ type: 'OrderPlaced', data: {} }]);
      const conflict = await rejection(
        storage.transaction((tx) => tx.append('order-4', events('Again'), 'no_stream')),
      );
      expect(isConcurrencyError(conflict)).toBe(true);
      const versions = await storage.transaction(async (tx) => {
        const a = await tx.append('order-4', events('A'), 0);
        const b = await tx.append('order-4', events('B', 'C'), a.nextExpectedVersion);
        return [a.nextExpectedVersion, b.nextExpectedVersion];
      });
      expect(versions).toEqual([1, 3]);
      expect((await store.readStream('order-4')).map((e) => e.type)).toEqual(['OrderPlaced', 'A', 'B', 'C']);
    });

    it('hands out the oldest row of each key only, one key at a time, in commit order', async () => {
      const { storage } = await open();
      const a1 = message('a');
      const a2 = message('a');
      const b1 = message('b');
      await storage.transaction((tx) => tx.enqueue([a1, b1]));
      await storage.transaction((tx) => tx.enqueue([a2]));
      const first = await storage.claim('relay-a', T0, 10, 30_000);
      expect(first.map((r) => r.id)).toEqual([a1.id, b1.id]);
      // Leased: nobody else gets them, nor a2 behind a1.
      expect(await storage.claim('relay-b', T0, 10, 30_000)).toEqual([]);
      expect(await storage.delivered('relay-a', [first[0]!.seq])).toBe(1);
      const second = await storage.claim('relay-b', T0, 10, 30_000);
      expect(second.map((r) => r.id)).toEqual([a2.id]);
      expect(second[0]!.seq > first[1]!.seq).toBe(true);
    });

    it('leases at most `limit` rows per claim, the oldest first, leaving the rest to other relays', async () => {
      // A relay's batchSize is its claim's limit: a storage ignoring it leased every due row at once.
      const { storage } = await open();
      const a1 = message('a');
      const a2 = message('a');
      const [b, c, d, e] = ['b', 'c', 'd', 'e'].map((key) => message(key));
      await storage.transaction((tx) => tx.enqueue([a1, a2, b!, c!, d!, e!]));
      const claim = async (owner: string, limit: number) =>
        (await storage.claim(owner, T0, limit, 30_000)).map((r) => r.id);
      // a2 waits behind a1: it is not handed out, nor does it count against the limit.
      expect(await claim('relay-a', 2), 'claim, limit 2').toEqual([a1.id, b!.id]);
      expect(await claim('relay-b', 2), 'another relay, limit 2').toEqual([c!.id, d!.id]);
      expect(await claim('relay-c', 1), 'a third relay, limit 1').toEqual([e!.id]);
      expect(await claim('relay-d', 10), 'a fourth relay').toEqual([]);
      expect(await storage.backlog(T0)).toMatchObject({ pending: 6 });
    });

    it('lists at most `limit` failed rows, oldest first', async () => {
      const { storage } = await open();
      const rows = ['f1', 'f2', 'f3'].map((key) => message(key));
      await storage.transaction((tx) => tx.enqueue(rows));
      const claimed = await storage.claim('relay-a', T0, 10, 30_000);
      expect(claimed).toHaveLength(3);
      // Failed newest first: the list still goes by age (commit order), not by when each failed.
      for (const row of [...claimed].reverse()) await storage.fail('relay-a', row.seq, 'unroutable');
      const ids = rows.map((r) => r.id);
      const failed = async (limit: number) => (await storage.failed(limit)).map((r) => r.id);
      expect(await failed(1), 'failed(1)').toEqual(ids.slice(0, 1));
      expect(await failed(2), 'failed(2)').toEqual(ids.slice(0, 2));
      expect(await failed(10), 'failed(10)').toEqual(ids);
    });

    it('lists at most `limit` saga instances, oldest first, of the status asked for', async () => {
      const { storage } = await open();
      // Saved in neither age nor id order, so that only the age (updatedAt) gives the order expected.
      const rows: SagaRow[] = [
        { ...saga('m-mid', 1), updatedAt: T0 + 20 },
        { ...saga('a-new', 1), updatedAt: T0 + 30 },
        { ...saga('z-old', 1), updatedAt: T0 + 10 },
        { ...saga('c-done', 1), updatedAt: T0 + 5, status: 'completed' },
        { ...saga('b-done', 1), updatedAt: T0 + 25, status: 'completed' },
      ];
      for (const row of rows) await storage.transaction((tx) => tx.saveSaga(row, 0));
      const ids = async (limit: number, status?: SagaStatus) =>
        (await storage.sagas('order', limit, status)).map((r) => r.id);
      expect(await ids(1)).toEqual(['c-done']);
      expect(await ids(3)).toEqual(['c-done', 'z-old', 'm-mid']);
      expect(await ids(10)).toEqual(['c-done', 'z-old', 'm-mid', 'b-done', 'a-new']);
      expect(await ids(2, 'active')).toEqual(['z-old', 'm-mid']);
      expect(await ids(1, 'completed')).toEqual(['c-done']);
    });

    it('lists saga instances saved at the same time by id, in code point order, alike on every store', async () => {
      const { storage } = await open();
      // Saved in neither order; a language collation would put '_' or 'B' elsewhere.
      for (const id of ['b', 'é', 'B', '_', 'a', '😀', 'Z'])
        await storage.transaction((tx) => tx.saveSaga({ ...saga(id, 1), updatedAt: T0 }, 0));
      const listed = (await storage.sagas('order', 10)).map((r) => r.id);
      expect(listed).toEqual(['B', 'Z', '_', 'a', 'b', 'é', '😀']);
    });

    it('gives a row whose lease ended to another relay, and ignores the old holder afterwards', async () => {
      const { storage } = await open();
      const m = message();
      await storage.transaction((tx) => tx.enqueue([m]));
      const [row] = await storage.claim('relay-a', T0, 10, 1000);
      expect(await storage.claim('relay-b', T0 + 999, 10, 1000)).toEqual([]);
      const [taken] = await storage.claim('relay-b', T0 + 1001, 10, 1000);
      expect(taken?.id).toBe(m.id);
      // The first holder's late outcome does not touch the new holder's row.
      expect(await storage.delivered('relay-a', [row!.seq])).toBe(0);
      await storage.retry('relay-a', row!.seq, 'late', T0 + 5000, true);
      await storage.fail('relay-a', row!.seq, 'late');
      expect(await storage.failed(10)).toEqual([]);
      expect(await storage.delivered('relay-b', [taken!.seq])).toBe(1);
      expect(await storage.claim('relay-a', T0 + 10_000, 10, 1000)).toEqual([]);
    });

    it('retries a row later with its attempt and error, and sets failed rows aside holding their key', async () => {
      const { storage } = await open();
      const k1 = message('k');
      const k2 = message('k');
      const other = message('other');
      await storage.transaction((tx) => tx.enqueue([k1, k2, other]));
      const [r1] = await storage.claim('relay-a', T0, 1, 30_000);
      await storage.retry('relay-a', r1!.seq, 'broker down', T0 + 500, true);
      const others = await storage.claim('relay-a', T0 + 100, 10, 30_000);
      expect(others.map((r) => r.id)).toEqual([other.id]);
      await storage.delivered('relay-a', [others[0]!.seq]);
      expect(await storage.nextDue(T0 + 100)).toBe(T0 + 500);
      const [again] = await storage.claim('relay-a', T0 + 500, 10, 30_000);
      expect(again).toMatchObject({ id: k1.id, attempts: 1, lastError: 'broker down' });
      await storage.fail('relay-a', again!.seq, 'unroutable');
      // k2 stays behind the failed k1: order per key is kept.
      expect(await storage.claim('relay-a', T0 + 600, 10, 30_000)).toEqual([]);
      const failed = await storage.failed(10);
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ id: k1.id, state: 'failed', attempts: 2, lastError: 'unroutable' });
      const backlog = await storage.backlog(T0 + 600);
      expect(backlog).toMatchObject({ pending: 1, failed: 1, scheduled: 0, oldestWaitingSince: T0 });
    });

    it('keeps an error text with NUL or a lone surrogate, alike on every backend (U+FFFD for each)', async () => {
      // PostgreSQL refused the NUL on every try: the relay could never record the refusal.
      const { storage } = await open();
      const row = message('k');
      await storage.transaction((tx) => tx.enqueue([row]));
      const [r1] = await storage.claim('relay-a', T0, 1, 30_000);
      await storage.retry('relay-a', r1!.seq, 'type "a\u0000b" \uD800', T0 + 10, true);
      const [again] = await storage.claim('relay-a', T0 + 10, 1, 30_000);
      expect(again).toMatchObject({ id: row.id, attempts: 1, lastError: 'type "a\uFFFDb" \uFFFD' });
      await storage.fail('relay-a', again!.seq, 'x\u0000');
      expect((await storage.failed(10))[0]).toMatchObject({ id: row.id, lastError: 'x\uFFFD' });
    });

    it('holds a published row until delivered: renewed, handed to no one, not holding back its key', async () => {
      const { storage } = await open();
      // k1 was written earlier than the rest: it would be the oldest waiting, were it not held.
      const k1 = { ...message('k'), createdAt: T0 - 500, dueAt: T0 - 500 };
      const k2 = message('k');
      const k3 = message('k');
      await storage.transaction((tx) => tx.enqueue([k1, k2, k3]));
      const [r1] = await storage.claim('relay-a', T0, 10, 30_000);
      expect(r1?.id).toBe(k1.id);
      // Only the holder's rows are held.
      expect(await storage.hold('relay-b', [r1!.seq], T0 + 1000)).toEqual([]);
      expect(await storage.hold('relay-a', [r1!.seq, 424242n], T0 + 1000)).toEqual([r1!.seq]);
      expect(await storage.backlog(T0 + 10)).toEqual({
        pending: 2,
        held: 1,
        failed: 0,
        scheduled: 0,
        oldestWaitingSince: T0,
      });
      // Its key goes on behind it, in order; the held row goes to no one, its holder included.
      expect((await storage.claim('relay-a', T0 + 10, 10, 30_000)).map((r) => r.id)).toEqual([k2.id]);
      expect(await storage.claim('relay-b', T0 + 10, 10, 30_000)).toEqual([]);
      expect(await storage.nextDue(T0 + 10)).toBeUndefined();
      // A held row is neither retried nor failed: it was published.
      await storage.retry('relay-a', r1!.seq, 'late', T0 + 50, true);
      await storage.fail('relay-a', r1!.seq, 'late');
      expect(await storage.failed(10)).toEqual([]);
      // Renewed: still held past its first lease.
      expect(await storage.hold('relay-a', [r1!.seq], T0 + 2000)).toEqual([r1!.seq]);
      expect(await storage.claim('relay-b', T0 + 1500, 10, 30_000)).toEqual([]);
      expect((await storage.backlog(T0 + 1500)).held).toBe(1);
      // Settled: delivered deletes it.
      expect(await storage.delivered('relay-a', [r1!.seq])).toBe(1);
      expect(await storage.backlog(T0 + 1500)).toMatchObject({ pending: 2, held: 0 });
    });

    it('hands a held row out again once its lease ends (its relay died), before its key goes on', async () => {
      const { storage } = await open();
      const k1 = message('k');
      const k2 = message('k');
      await storage.transaction((tx) => tx.enqueue([k1, k2]));
      const [r1] = await storage.claim('relay-a', T0, 10, 30_000);
      await storage.hold('relay-a', [r1!.seq], T0 + 1000);
      expect(await storage.backlog(T0 + 1000)).toMatchObject({ pending: 1, held: 1 });
      // Past the lease: pending again, due, and the oldest of its key again.
      expect(await storage.backlog(T0 + 1001)).toMatchObject({ pending: 2, held: 0, oldestWaitingSince: T0 });
      expect(await storage.nextDue(T0 + 1001)).toBe(T0);
      const [again] = await storage.claim('relay-b', T0 + 1001, 10, 30_000);
      expect(again).toMatchObject({ id: k1.id, attempts: 0 });
      // The dead relay's late calls touch nothing of it.
      expect(await storage.hold('relay-a', [r1!.seq], T0 + 5000)).toEqual([]);
      expect(await storage.delivered('relay-a', [r1!.seq])).toBe(0);
      await storage.hold('relay-b', [again!.seq], T0 + 2000);
      expect((await storage.claim('relay-b', T0 + 1002, 10, 30_000)).map((r) => r.id)).toEqual([k2.id]);
      expect(await storage.delivered('relay-b', [again!.seq])).toBe(1);
    });

    it('does not count a retry of a message the broker could not be reached for', async () => {
      const { storage } = await open();
      await storage.transaction((tx) => tx.enqueue([message()]));
      const [row] = await storage.claim('relay-a', T0, 10, 30_000);
      await storage.retry('relay-a', row!.seq, 'broker unreachable', T0 + 10, false);
      const [again] = await storage.claim('relay-a', T0 + 10, 10, 30_000);
      expect(again).toMatchObject({ attempts: 0, lastError: 'broker unreachable', dueAt: T0 + 10 });
      await storage.retry('relay-a', again!.seq, 'unroutable', T0 + 20, true);
      const [third] = await storage.claim('relay-a', T0 + 20, 10, 30_000);
      expect(third).toMatchObject({ attempts: 1, lastError: 'unroutable' });
    });

    it('redrives failed rows as new and discards them on request', async () => {
      const { storage } = await open();
      const k1 = message('k');
      const k2 = message('k');
      await storage.transaction((tx) => tx.enqueue([k1, k2]));
      const [r1] = await storage.claim('relay-a', T0, 10, 30_000);
      await storage.fail('relay-a', r1!.seq, 'too large');
      expect(await storage.redrive([k1.id, k1.id, 'unknown'], T0 + 1000)).toBe(1);
      const [back] = await storage.claim('relay-a', T0 + 1000, 10, 30_000);
      expect(back).toMatchObject({ id: k1.id, attempts: 0, state: 'pending' });
      await storage.fail('relay-a', back!.seq, 'too large');
      // Discarding a pending row is refused: only failed rows go.
      expect(await storage.discard([k2.id])).toBe(0);
      expect(await storage.discard([k1.id])).toBe(1);
      expect(await storage.failed(10)).toEqual([]);
      expect((await storage.claim('relay-a', T0 + 2000, 10, 30_000)).map((r) => r.id)).toEqual([k2.id]);
    });

    it('keeps scheduled rows until they are due, lists them, and cancels them', async () => {
      const { storage } = await open();
      const later = message(undefined, T0 + 60_000);
      const sooner = message(undefined, T0 + 30_000);
      const now = message();
      await storage.transaction((tx) => tx.enqueue([later, sooner, now]));
      expect((await storage.scheduled(T0, 10)).map((r) => r.id)).toEqual([sooner.id, later.id]);
      expect((await storage.scheduled(T0, 10, later.key)).map((r) => r.id)).toEqual([later.id]);
      expect(await storage.backlog(T0)).toMatchObject({ pending: 1, scheduled: 2, failed: 0 });
      const [row] = await storage.claim('relay-a', T0, 10, 30_000);
      expect(row?.id).toBe(now.id);
      expect(await storage.nextDue(T0)).toBe(T0 + 30_000);
      // A leased row is being sent: it cannot be cancelled any more.
      const cancelled = await storage.transaction((tx) => tx.cancel([later.id, now.id, 'unknown'], T0));
      expect(cancelled).toEqual([later.id]);
      await storage.delivered('relay-a', [row!.seq]);
      expect((await storage.claim('relay-a', T0 + 60_000, 10, 30_000)).map((r) => r.id)).toEqual([sooner.id]);
      // A cancel that rolls back cancels nothing.
      const other = message(undefined, T0 + 90_000);
      await storage.transaction((tx) => tx.enqueue([other]));
      await rejection(
        storage.transaction(async (tx) => {
          await tx.cancel([other.id], T0);
          throw new Error('rolled back');
        }),
      );
      expect((await storage.scheduled(T0, 10)).map((r) => r.id)).toContain(other.id);
    });

    it('holds nothing of its key back behind a message scheduled for later, which takes its place once due', async () => {
      // A keyed `order.expired` timer held every later message of its order until it fell due.
      const { storage } = await open();
      const timer = message('k', T0 + 5000);
      const paid = message('k');
      const other = message('k', T0 + 9000);
      await storage.transaction((tx) => tx.enqueue([timer]));
      await storage.transaction((tx) => tx.enqueue([paid, other]));
      expect(await storage.nextDue(T0)).toBe(T0);
      const [sent] = await storage.claim('relay-a', T0, 10, 30_000);
      expect(sent?.id).toBe(paid.id);
      // Due while a message of its key committed after it is being sent: it waits for that one.
      expect(await storage.claim('relay-b', T0 + 5000, 10, 30_000)).toEqual([]);
      expect(await storage.nextDue(T0 + 5000)).toBeUndefined();
      // Held (published, waiting to be settled), that message no longer holds the timer back.
      await storage.hold('relay-a', [sent!.seq], T0 + 20_000);
      expect(await storage.nextDue(T0 + 5000)).toBe(T0 + 5000);
      const later = message('k');
      await storage.transaction((tx) => tx.enqueue([later]));
      // Once due, the timer goes in its place, before what its key committed after it.
      const due = await storage.claim('relay-b', T0 + 5000, 10, 30_000);
      expect(due.map((r) => r.id)).toEqual([timer.id]);
      expect(await storage.claim('relay-c', T0 + 5000, 10, 30_000)).toEqual([]);
      // Sent again later (the broker refused it), it holds its key back as any message does.
      await storage.retry('relay-b', due[0]!.seq, 'unroutable', T0 + 6000, true);
      expect(await storage.claim('relay-b', T0 + 5500, 10, 30_000)).toEqual([]);
      expect(await storage.nextDue(T0 + 5500)).toBe(T0 + 6000);
      expect((await storage.claim('relay-b', T0 + 6000, 10, 30_000)).map((r) => r.id)).toEqual([timer.id]);
      await storage.delivered('relay-b', [due[0]!.seq]);
      expect((await storage.claim('relay-b', T0 + 6000, 10, 30_000)).map((r) => r.id)).toEqual([later.id]);
      expect(await storage.backlog(T0 + 6000)).toMatchObject({ pending: 1, held: 1, scheduled: 1 });
    });

    it('cancels only scheduled messages never attempted, and counts retried ones as pending', async () => {
      const { storage } = await open();
      const plain = message();
      const timer = message(undefined, T0 + 1000);
      await storage.transaction((tx) => tx.enqueue([plain, timer]));
      // A plain message is not a timer: cancelling it would lose it.
      expect(await storage.transaction((tx) => tx.cancel([plain.id], T0))).toEqual([]);
      const [row] = await storage.claim('relay-a', T0, 10, 30_000);
      expect(row?.id).toBe(plain.id);
      // Refused once, waiting for its retry: pending, not scheduled, still not cancellable.
      await storage.retry('relay-a', row!.seq, 'unroutable', T0 + 5000, true);
      expect(await storage.backlog(T0)).toMatchObject({
        pending: 1,
        scheduled: 1,
        failed: 0,
        oldestWaitingSince: T0,
      });
      expect((await storage.scheduled(T0, 10)).map((r) => r.id)).toEqual([timer.id]);
      expect(await storage.transaction((tx) => tx.cancel([plain.id], T0))).toEqual([]);
      // The timer, once due, has waited since its due time, not since it was written.
      expect(await storage.backlog(T0 + 1500)).toMatchObject({
        pending: 2,
        scheduled: 0,
        oldestWaitingSince: T0,
      });
      const [due] = await storage.claim('relay-a', T0 + 1500, 10, 30_000);
      expect(due?.id).toBe(timer.id);
      await storage.retry('relay-a', due!.seq, 'broker unreachable', T0 + 2000, false);
      // Attempted: no longer cancellable, no longer listed as scheduled.
      expect(await storage.transaction((tx) => tx.cancel([timer.id], T0 + 1600))).toEqual([]);
      expect(await storage.scheduled(T0 + 1600, 10)).toEqual([]);
      expect(await storage.backlog(T0 + 1600)).toMatchObject({ pending: 2, scheduled: 0 });
    });

    it('says since when a due timer has waited: its due time', async () => {
      const { storage } = await open();
      await storage.transaction((tx) => tx.enqueue([message(undefined, T0 + 1500)]));
      expect(await storage.backlog(T0 + 1700)).toMatchObject({
        pending: 1,
        scheduled: 0,
        oldestWaitingSince: T0 + 1500,
      });
      expect(await storage.backlog(T0 + 1000)).toMatchObject({
        pending: 0,
        scheduled: 1,
        oldestWaitingSince: undefined,
      });
    });

    it('cancels a message scheduled earlier in the same unit of work', async () => {
      const { storage } = await open();
      const timeout = message(undefined, T0 + 30_000);
      const cancelled = await storage.transaction(async (tx) => {
        await tx.enqueue([timeout]);
        return tx.cancel([timeout.id], T0);
      });
      expect(cancelled).toEqual([timeout.id]);
      expect(await storage.scheduled(T0, 10)).toEqual([]);
    });

    it('refuses a message id the outbox already holds, keeping nothing of the unit of work', async () => {
      const { storage, store } = await open();
      const m = message();
      await storage.transaction((tx) => tx.enqueue([m]));
      await rejection(
        storage.transaction(async (tx) => {
          await tx.append('order-5', events('OrderPlaced'), 'no_stream');
          await tx.enqueue([{ ...m, key: 'other' }]);
        }),
      );
      expect(await store.readStream('order-5')).toEqual([]);
      expect(await storage.claim('relay-a', T0, 10, 30_000)).toHaveLength(1);
    });

    it('marks a message handled once per consumer, and prunes old marks in batches', async () => {
      const { storage } = await open();
      const first = await storage.transaction(async (tx) => [
        await tx.markHandled('orders', 'm1', T0),
        await tx.markHandled('orders', 'm1', T0),
        await tx.markHandled('billing', 'm1', T0),
        await tx.markHandled('orders', 'm2', T0 + 10),
        await tx.markHandled('orders', 'm3', T0 + 20),
      ]);
      expect(first).toEqual([true, false, true, true, true]);
      expect(await storage.pruneHandled(T0 + 15, 1)).toBe(1);
      expect(await storage.pruneHandled(T0 + 15, 10)).toBe(2);
      expect(await storage.pruneHandled(T0 + 15, 10)).toBe(0);
      const after = await storage.transaction(async (tx) => [
        await tx.markHandled('orders', 'm1', T0),
        await tx.markHandled('orders', 'm3', T0),
      ]);
      expect(after).toEqual([true, false]);
    });

    it('lets exactly one of two concurrent units of work mark the same message', async () => {
      const { storage } = await open();
      const results = await Promise.all(
        [1, 2].map(() =>
          storage.transaction(async (tx) => {
            const fresh = await tx.markHandled('orders', 'race', T0);
            await new Promise((resolve) => setTimeout(resolve, 20));
            return fresh;
          }),
        ),
      );
      expect(results.sort()).toEqual([false, true]);
    });

    it('saves saga instances with optimistic concurrency', async () => {
      const { storage } = await open();
      await storage.transaction((tx) => tx.saveSaga(saga('s-9', 1), 0));
      const exists = await rejection(storage.transaction((tx) => tx.saveSaga(saga('s-9', 1), 0)));
      expect(isSagaConcurrencyError(exists)).toBe(true);
      const stale = await rejection(storage.transaction((tx) => tx.saveSaga(saga('s-9', 3), 2)));
      expect(isSagaConcurrencyError(stale)).toBe(true);
      await storage.transaction(async (tx) => {
        const row = await tx.loadSaga('order', 's-9');
        await tx.saveSaga({ ...saga('s-9', row!.version + 1), status: 'completed' }, row!.version);
        // Read back inside the same unit of work.
        expect(await tx.loadSaga('order', 's-9')).toMatchObject({ version: 2, status: 'completed' });
      });
      await storage.transaction((tx) => tx.saveSaga(saga('s-10', 1), 0));
      expect((await storage.sagas('order', 10)).map((r) => r.id).sort()).toEqual(['s-10', 's-9']);
      expect((await storage.sagas('order', 10, 'completed')).map((r) => r.id)).toEqual(['s-9']);
      expect((await storage.sagas('order', 10, 'active')).map((r) => r.id)).toEqual(['s-10']);
      expect(await storage.sagas('other', 10)).toEqual([]);
    });

    it('lets one of two concurrent units of work update a saga instance, the other conflicts', async () => {
      const { storage } = await open();
      await storage.transaction((tx) => tx.saveSaga(saga('s-race', 1), 0));
      const outcomes = await Promise.allSettled(
        [1, 2].map((n) =>
          storage.transaction(async (tx) => {
            const row = await tx.loadSaga('order', 's-race');
            await new Promise((resolve) => setTimeout(resolve, 20));
            await tx.saveSaga({ ...row!, state: `{"n":${n}}`, version: row!.version + 1 }, row!.version);
          }),
        ),
      );
      const fulfilled = outcomes.filter((o) => o.status === 'fulfilled');
      // Serialising backends (memory, SQLite) let both through one after the other, each seeing the
      // other's write; the others refuse the second.
      const row = await storage.transaction((tx) => tx.loadSaga('order', 's-race'));
      expect(row!.version).toBe(1 + fulfilled.length);
      for (const o of outcomes) {
        if (o.status === 'rejected') expect(isSagaConcurrencyError(o.reason)).toBe(true);
      }
    });

    it('never hands the same row to two relays claiming at once', async () => {
      const under = await open();
      const other = under.sibling === undefined ? under.storage : await under.sibling();
      const rows = Array.from({ length: 200 }, (_, i) => message(`key-${i % 20}`));
      for (let i = 0; i < rows.length; i += 50) {
        await under.storage.transaction((tx) => tx.enqueue(rows.slice(i, i + 50)));
      }
      const seen: string[] = [];
      const order = new Map<string, string[]>();
      const relay = async (storage: OutboxStorage, owner: string) => {
        for (let rounds = 0; rounds < 500; rounds++) {
          const claimed = await storage.claim(owner, T0, 7, 30_000);
          if (claimed.length === 0) {
            if ((await storage.backlog(T0)).pending === 0) return;
            await new Promise((resolve) => setTimeout(resolve, 2));
            continue;
          }
          for (const row of claimed) {
            seen.push(row.id);
            const list = order.get(row.key) ?? [];
            list.push(row.id);
            order.set(row.key, list);
          }
          expect(
            await storage.delivered(
              owner,
              claimed.map((r) => r.seq),
            ),
          ).toBe(claimed.length);
        }
      };
      await Promise.all([relay(under.storage, 'relay-a'), relay(other, 'relay-b')]);
      expect(seen.sort()).toEqual(rows.map((r) => r.id).sort());
      for (const [key, ids] of order) {
        expect(ids).toEqual(rows.filter((r) => r.key === key).map((r) => r.id));
      }
    });
  });
}

function saga(id: string, n: number): SagaRow {
  return { saga: 'order', id, state: `{"n":${n}}`, version: n, status: 'active', updatedAt: T0 + n };
}
