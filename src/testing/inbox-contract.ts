import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { isEventStoreClosedError } from '../eventstore/errors.js';
import { isClaimLostError } from '../inbox/claim-lost-error.js';
import type { Inbox } from '../inbox/inbox.js';
import type { DurableInboxOptions } from '../inbox/lease.js';
import { vitest } from './vitest-api.js';
import { waitFor } from './wait.js';

/** What the inbox contract suite needs. */
export interface InboxHarness {
  /** A fresh, empty inbox; options for durable ones (the harness passes them on as given). */
  create(options?: DurableInboxOptions): Promise<InboxUnderTest>;
}

export interface InboxUnderTest {
  readonly inbox: Inbox;
  /** Another inbox on the same storage (another instance of the service), when the inbox is durable. */
  sibling?(options?: DurableInboxOptions): Promise<Inbox>;
  /** Stores a claim on `key` as a process that died holding it would leave it: lease expired. */
  plantOrphan?(key: string): Promise<void>;
  /** Ends the stored lease of `key` now, as if its holder had been frozen past it. */
  expireLease?(key: string): Promise<void>;
  /** Milliseconds left on the stored lease of `key` (`null`: no lease stored, `undefined`: no row). */
  leaseLeft?(key: string): Promise<number | null | undefined>;
  /** Closes the storage the inbox lives on (its event store backend), when the inbox is durable. */
  close?(): Promise<void>;
}

async function settleSoon<T>(promise: Promise<T>, ms = 150): Promise<{ settled: boolean; value?: T }> {
  let settled = false;
  let value: T | undefined;
  void promise.then((v) => {
    settled = true;
    value = v;
  });
  await new Promise((resolve) => setTimeout(resolve, ms));
  return settled ? { settled, value: value as T } : { settled };
}

/**
 * The inbox contract: every inbox (memory, SQLite, PostgreSQL) must pass it; `durable` inboxes
 * (shared by instances, with leases) also pass the tests of sharing and of dead holders, and their
 * harness must provide `sibling` and `plantOrphan`.
 */
export function testInbox(
  name: string,
  harness: InboxHarness,
  features: { readonly durable: boolean },
): void {
  const { describe, expect, it } = vitest('testInbox');
  describe(`inbox contract: ${name}`, () => {
    it('claims a key once; after complete, the key is a duplicate', async () => {
      const { inbox } = await harness.create();
      const claim = await inbox.begin('g|p|m-1');
      expect(claim).not.toBeNull();
      await claim!.complete();
      expect(await inbox.begin('g|p|m-1')).toBeNull();
      expect(await inbox.begin('g|p|m-2')).not.toBeNull();
    });

    it('refuses a key no store keeps apart (not a string, NUL, a lone surrogate) with INVALID_OPTIONS', async () => {
      // PostgreSQL took 'k-\uD800' as 'k-\uFFFD': a message already handled under that key was
      // skipped; NUL failed with the database's raw error. Memory and SQLite took them as new.
      const { inbox } = await harness.create();
      const claim = await inbox.begin('g|p|k-\uFFFD');
      await claim!.complete();
      for (const key of ['g|p|k-\uD800', 'g|p|k-\u0000', 5]) {
        await expect(inbox.begin(key as string)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      }
      expect(await inbox.begin('g|p|k-\uFFFD')).toBeNull();
    });

    it('lets an abandoned key be claimed again', async () => {
      const { inbox } = await harness.create();
      const claim = await inbox.begin('k');
      claim!.abandon();
      await new Promise((resolve) => setTimeout(resolve, 20));
      const again = await inbox.begin('k');
      expect(again).not.toBeNull();
      await again!.complete();
    });

    it('makes a concurrent delivery of a held key wait for the outcome', async () => {
      const { inbox } = await harness.create();
      const first = await inbox.begin('held');
      const waiting = inbox.begin('held');
      expect((await settleSoon(waiting)).settled).toBe(false);
      await first!.complete();
      expect(await waiting).toBeNull();

      const second = await inbox.begin('held-2');
      const retry = inbox.begin('held-2');
      expect((await settleSoon(retry)).settled).toBe(false);
      second!.abandon();
      const claim = await retry;
      expect(claim).not.toBeNull();
      await claim!.complete();
    });

    it("acts only on its own claim: once released, it cannot complete or release the next holder's", async () => {
      const { inbox } = await harness.create();
      const first = await inbox.begin('own');
      first!.abandon();
      const second = await inbox.begin('own');
      expect(second).not.toBeNull();
      first!.abandon();
      const third = inbox.begin('own');
      expect((await settleSoon(third)).settled, 'a stale release freed the key').toBe(false);
      await expect(first!.complete()).rejects.toSatisfy(isClaimLostError);
      expect((await settleSoon(third, 100)).settled, 'a stale completion recorded the key').toBe(false);
      await second!.complete();
      expect(await third).toBeNull();
    });

    if (!features.durable) return;

    it('after its storage is closed, rejects begin and complete with EventStoreClosedError', async () => {
      const underTest = await harness.create();
      const held = await underTest.inbox.begin('held-at-close');
      expect(held).not.toBeNull();
      await underTest.close!();
      await expect(underTest.inbox.begin('after-close')).rejects.toSatisfy(isEventStoreClosedError);
      await expect(held!.complete()).rejects.toSatisfy(isEventStoreClosedError);
      // Releasing returns nothing to reject with: it must not throw, nor leave an unhandled rejection.
      expect(() => held!.abandon()).not.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 50));
    });

    it('tells a holder whose lease lapsed and was taken over, and leaves the new claim alone', async () => {
      // The holder renews every second; the takeover below happens well before its first renewal.
      const underTest = await harness.create({ leaseMs: 3000 });
      const other = await underTest.sibling!({ leaseMs: 3000 });
      const stale = await underTest.inbox.begin('frozen');
      const staleToo = await underTest.inbox.begin('frozen-too');
      // As if the holder's process had been frozen past its lease:
      await underTest.expireLease!('frozen');
      await underTest.expireLease!('frozen-too');
      const current = await other.begin('frozen');
      const currentToo = await other.begin('frozen-too');
      expect(current).not.toBeNull();
      expect(currentToo).not.toBeNull();

      // Its next renewal finds the claim gone.
      await waitFor(() => stale!.signal.aborted, 'the stale holder to learn it lost its claim', 3000);
      expect(isClaimLostError(stale!.signal.reason)).toBe(true);
      expect(current!.signal.aborted).toBe(false);

      // Its handler failed: releasing must not free the key the new holder is processing.
      stale!.abandon();
      const third = other.begin('frozen');
      expect((await settleSoon(third, 300)).settled, 'a stale release freed the key').toBe(false);
      // Its handler succeeded: completing must not record the key for the new holder.
      await expect(staleToo!.complete()).rejects.toSatisfy(isClaimLostError);
      const thirdToo = other.begin('frozen-too');
      expect((await settleSoon(thirdToo, 300)).settled, 'a stale completion recorded the key').toBe(false);

      // The new holders' renewals still hold (the stale ones did not steal them back), then they decide.
      expect(current!.signal.aborted || currentToo!.signal.aborted).toBe(false);
      await current!.complete();
      expect(await third).toBeNull();
      currentToo!.abandon();
      const again = await thirdToo;
      expect(again).not.toBeNull();
      await again!.complete();
    });

    it('takes options given as undefined for their defaults', async () => {
      const underTest = await harness.create({ leaseMs: undefined, retentionMs: undefined });
      const claim = await underTest.inbox.begin('default-lease');
      const left = await underTest.leaseLeft!('default-lease');
      // The default lease: 30 s, not a lease that never lapses (NULL) nor none at all.
      expect(left).toBeGreaterThan(25_000);
      expect(left).toBeLessThanOrEqual(30_000);
      await claim!.complete();
      expect(await underTest.inbox.begin('default-lease')).toBeNull();
      const sibling = await underTest.sibling!({ leaseMs: undefined });
      expect(await sibling.begin('default-lease')).toBeNull();
    });

    it('refuses a lease or a retention that is not a positive integer', async () => {
      const bad = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '100' as unknown as number];
      // A lease beyond 2^31 - 1 ms would renew at once, all the time: Node fires such timers at once.
      for (const leaseMs of [...bad, 2 ** 31]) {
        await expect(harness.create({ leaseMs }), `leaseMs ${String(leaseMs)}`).rejects.toSatisfy(
          isInvalidOptionsError,
        );
      }
      for (const retentionMs of bad) {
        await expect(harness.create({ retentionMs }), `retentionMs ${String(retentionMs)}`).rejects.toSatisfy(
          isInvalidOptionsError,
        );
      }
      const underTest = await harness.create();
      await expect(underTest.sibling!({ leaseMs: 0 })).rejects.toSatisfy(isInvalidOptionsError);
      // A misspelt option was dropped for its default (a 30 s lease where 5 min was meant).
      await expect(harness.create({ leaseMS: 300_000 } as never)).rejects.toThrow(
        /inbox has no option "leaseMS": it takes leaseMs, retentionMs/,
      );
    });

    it('is shared by every instance on the same storage', async () => {
      const underTest = await harness.create();
      const claim = await underTest.inbox.begin('shared');
      await claim!.complete();
      const other = await underTest.sibling!();
      expect(await other.begin('shared')).toBeNull();
      const held = await other.begin('held-elsewhere');
      const fromFirst = underTest.inbox.begin('held-elsewhere');
      expect((await settleSoon(fromFirst)).settled).toBe(false);
      await held!.complete();
      expect(await fromFirst).toBeNull();
    });

    it('takes over a key whose holder died, and keeps the lease of a slow holder alive', async () => {
      const underTest = await harness.create({ leaseMs: 200 });
      await underTest.plantOrphan!('orphan');
      const other = await underTest.sibling!({ leaseMs: 200 });
      const takeover = await other.begin('orphan');
      expect(takeover).not.toBeNull();
      await takeover!.complete();

      const slow = await underTest.inbox.begin('slow');
      // Longer than the lease: renewals keep the claim.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const rival = other.begin('slow');
      expect((await settleSoon(rival)).settled).toBe(false);
      await slow!.complete();
      expect(await rival).toBeNull();
    });
  });
}
