import { describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import type { Inbox } from '../messaging/inbox.js';
import type { DurableInboxOptions } from '../messaging/lease.js';

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
  /** Milliseconds left on the stored lease of `key` (`null`: no lease stored, `undefined`: no row). */
  leaseLeft?(key: string): Promise<number | null | undefined>;
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
  describe(`inbox contract: ${name}`, () => {
    it('claims a key once; after complete, the key is a duplicate', async () => {
      const { inbox } = await harness.create();
      const claim = await inbox.begin('g|p|m-1');
      expect(claim).not.toBeNull();
      await claim!.complete();
      expect(await inbox.begin('g|p|m-1')).toBeNull();
      expect(await inbox.begin('g|p|m-2')).not.toBeNull();
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

    if (!features.durable) return;

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
