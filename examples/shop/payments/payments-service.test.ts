import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Bus,
  createBus,
  createEventStore,
  createOutbox,
  EventStore,
  MemoryEventStoreBackend,
  type Message,
  type Outbox,
  silentLogger,
} from 'ferry';
import { sleep, waitFor } from 'ferry/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type ShopContracts, shopContracts } from '../contracts.js';
import { type PaymentProvider, startPaymentProvider } from '../payment-provider/provider.js';
import { type PaymentsService, startPaymentsService } from './payments-service.js';

interface World {
  readonly bus: Bus<ShopContracts>;
  readonly store: EventStore;
  readonly outbox: Outbox<ShopContracts>;
  readonly provider: PaymentProvider;
  readonly payments: PaymentsService;
  /** Replies payments published (`payment.*` but the commands), in order. */
  readonly replies: Message[];
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function world(
  options: { giveUpAfterMs?: number; attemptTimeoutMs?: number; store?: EventStore } = {},
): Promise<World> {
  const { store = new EventStore(new MemoryEventStoreBackend()), ...serviceOptions } = options;
  const provider = await startPaymentProvider({ logger: silentLogger });
  closers.push(() => provider.close());
  const bus = await createBus({
    url: `memory://payments-${randomUUID()}`,
    service: 'payments',
    contracts: shopContracts,
    logger: silentLogger,
  });
  closers.push(() => bus.close());
  const outbox = await createOutbox({ store, bus, logger: silentLogger });
  closers.push(() => outbox.close());
  const replies: Message[] = [];
  const sub = await bus.subscribe(
    'payment.*',
    (message) => {
      if (message.type !== 'payment.charge' && message.type !== 'payment.refund') replies.push(message);
    },
    { group: 'observer' },
  );
  closers.push(() => sub.close());
  const payments = await startPaymentsService({
    bus,
    store,
    outbox,
    providerUrl: provider.url,
    logger: silentLogger,
    ...serviceOptions,
  });
  closers.push(() => payments.close());
  return { bus, store, outbox, provider, payments, replies };
}

const summary = (replies: Message[]) => replies.map((m) => ({ type: m.type, data: m.data }));

/** Lets redeliveries and late replies land, so that "exactly once" is not just "not yet twice". */
async function settle(w: World): Promise<void> {
  await sleep(200);
  await w.outbox.flush();
  await sleep(50);
}

describe('payments service', () => {
  it('charges an order and answers payment.processed once', async () => {
    const w = await world();
    await w.bus.publish('payment.charge', { orderId: 'o-1', amount: 900, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length > 0, 'a reply');
    await settle(w);
    const [charge] = w.provider.charges();
    expect(w.provider.charges()).toEqual([
      { chargeId: expect.any(String), orderId: 'o-1', amount: 900, refunded: false },
    ]);
    expect(summary(w.replies)).toEqual([
      { type: 'payment.processed', data: { orderId: 'o-1', chargeId: charge!.chargeId, amount: 900 } },
    ]);
  });

  it('handles a redelivered payment.charge once: one charge, one payment.processed', async () => {
    const w = await world();
    const id = randomUUID();
    const data = { orderId: 'o-2', amount: 500, paymentMethod: 'tok_visa' };
    await Promise.all([
      w.bus.publish('payment.charge', data, { id }),
      w.bus.publish('payment.charge', data, { id }),
    ]);
    await waitFor(() => w.replies.length > 0, 'a reply');
    await w.bus.publish('payment.charge', data, { id }); // and once more, after the first was handled
    await settle(w);
    expect(w.provider.charges()).toHaveLength(1);
    expect(summary(w.replies)).toEqual([
      {
        type: 'payment.processed',
        data: { orderId: 'o-2', chargeId: w.provider.charges()[0]!.chargeId, amount: 500 },
      },
    ]);
  });

  it('answers the same charge sent again as a new command with the first outcome, charging once', async () => {
    const w = await world();
    const data = { orderId: 'o-3', amount: 500, paymentMethod: 'tok_visa' };
    await w.bus.publish('payment.charge', data);
    await waitFor(() => w.replies.length === 1, 'the first reply');
    await w.bus.publish('payment.charge', data);
    await waitFor(() => w.replies.length === 2, 'the second reply');
    expect(w.provider.charges()).toHaveLength(1);
    expect(w.replies[1]!.data).toEqual(w.replies[0]!.data);
  });

  it('answers payment.declined payment_declined for a declined card, with no charge', async () => {
    const w = await world();
    await w.bus.publish('payment.charge', {
      orderId: 'o-4',
      amount: 500,
      paymentMethod: 'tok_chargeDeclined',
    });
    await waitFor(() => w.replies.length > 0, 'a reply');
    await settle(w);
    expect(summary(w.replies)).toEqual([
      { type: 'payment.declined', data: { orderId: 'o-4', reason: 'payment_declined' } },
    ]);
    expect(w.provider.charges()).toEqual([]);
  });

  it('gives up on a provider that stays unavailable: payment.declined payment_unavailable, no charge', async () => {
    const w = await world({ giveUpAfterMs: 1500 });
    w.provider.setFaults({ failureRate: 1, latencyMs: 0 });
    await w.bus.publish('payment.charge', { orderId: 'o-5', amount: 500, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length > 0, 'a reply');
    expect(summary(w.replies)[0]).toEqual({
      type: 'payment.declined',
      data: { orderId: 'o-5', reason: 'payment_unavailable' },
    });
    expect(w.provider.charges()).toEqual([]);
    // Once the provider is back, the safety refund it queued finds nothing to refund: still no charge.
    w.provider.setFaults({ failureRate: 0, latencyMs: 0 });
    await waitFor(() => w.replies.some((m) => m.type === 'payment.refunded'), 'the safety refund', 20_000);
    expect(w.provider.charges()).toEqual([]);
  });

  it('starts with the longest give-up time the settings take (2147483647 ms: the handler limit past it stopped the service)', async () => {
    const w = await world({ giveUpAfterMs: 2_147_483_647 });
    await w.bus.publish('payment.charge', { orderId: 'o-max', amount: 100, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length > 0, 'a reply');
    expect(summary(w.replies)[0]).toMatchObject({ type: 'payment.processed', data: { orderId: 'o-max' } });
  });

  it('keeps trying while the provider recovers within the give-up time', async () => {
    const w = await world({ giveUpAfterMs: 20_000 });
    w.provider.setFaults({ failureRate: 1, latencyMs: 0 });
    await w.bus.publish('payment.charge', { orderId: 'o-6', amount: 500, paymentMethod: 'tok_visa' });
    await sleep(700);
    expect(w.replies).toEqual([]);
    w.provider.setFaults({ failureRate: 0, latencyMs: 0 });
    await waitFor(() => w.replies.length > 0, 'a reply', 15_000);
    expect(summary(w.replies)).toEqual([
      { type: 'payment.processed', data: { orderId: 'o-6', chargeId: expect.any(String), amount: 500 } },
    ]);
    expect(w.provider.charges()).toHaveLength(1);
  });

  it('hears a provider slower than 5 s: one try may run until the give-up time', async () => {
    const w = await world({ giveUpAfterMs: 20_000 });
    w.provider.setFaults({ failureRate: 0, latencyMs: 6000 });
    const started = Date.now();
    await w.bus.publish('payment.charge', { orderId: 'o-slow', amount: 500, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length > 0, 'a reply', 15_000);
    expect(summary(w.replies)).toEqual([
      { type: 'payment.processed', data: { orderId: 'o-slow', chargeId: expect.any(String), amount: 500 } },
    ]);
    // One try, answered after the provider's 6 s: not cut and tried again (each try paying the latency).
    expect(Date.now() - started).toBeLessThan(9000);
    expect(w.provider.charges()).toEqual([expect.objectContaining({ orderId: 'o-slow', refunded: false })]);
  }, 20_000);

  it('refunds what a cut try charged as soon as it gives up, though the charges opened the breaker', async () => {
    // Tries cut at 300 ms against a provider answering in 1 s: twelve orders open the charges'
    // breaker and give up at 2 s, each charge taken at the provider all the same. Their safety
    // refunds must reach the provider at once, not wait for the breaker (5 s, and again after each
    // failed probe) and the redeliveries' backoff.
    const w = await world({ giveUpAfterMs: 2000, attemptTimeoutMs: 300 });
    w.provider.setFaults({ failureRate: 0, latencyMs: 1000 });
    const orders = Array.from({ length: 12 }, (_, i) => `o-cut-${i}`);
    await Promise.all(
      orders.map((orderId) =>
        w.bus.publish('payment.charge', { orderId, amount: 100, paymentMethod: 'tok_visa' }),
      ),
    );
    await waitFor(
      () => w.replies.filter((m) => m.type === 'payment.declined').length === orders.length,
      'every order given up',
      15_000,
    );
    expect(new Set(w.replies.map((m) => (m.data as { reason?: string }).reason))).toEqual(
      new Set(['payment_unavailable']),
    );
    const gaveUp = Date.now();
    await waitFor(
      () => w.replies.filter((m) => m.type === 'payment.refunded').length === orders.length,
      'every safety refund',
      30_000,
    );
    // A refund sent at once lands one latency later (1 s), give or take the last give-ups.
    expect(Date.now() - gaveUp).toBeLessThan(3500);
    await sleep(1200); // charges still held by the provider land
    expect(w.provider.charges().filter((c) => !c.refunded)).toEqual([]);
  }, 60_000);

  it('refunds a charge: refunded in the ledger, payment.refunded with the charge id', async () => {
    const w = await world();
    await w.bus.publish('payment.charge', { orderId: 'o-7', amount: 800, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length === 1, 'payment.processed');
    await w.bus.publish('payment.refund', { orderId: 'o-7' });
    await waitFor(() => w.replies.length === 2, 'payment.refunded');
    await settle(w);
    const [charge] = w.provider.charges();
    expect(charge).toMatchObject({ orderId: 'o-7', refunded: true });
    expect(summary(w.replies)[1]).toEqual({
      type: 'payment.refunded',
      data: { orderId: 'o-7', chargeId: charge!.chargeId },
    });
    expect(w.replies).toHaveLength(2);
  });

  it('refunds at a provider slower than 30 s (a refund cut at 30 s never reached it, the charge kept)', async () => {
    const w = await world();
    await w.bus.publish('payment.charge', {
      orderId: 'o-slow-refund',
      amount: 800,
      paymentMethod: 'tok_visa',
    });
    await waitFor(() => w.replies.length === 1, 'payment.processed');
    // Slower than the old 30 s limit, well within the switch's 60 s.
    w.provider.setFaults({ failureRate: 0, latencyMs: 31_000 });
    await w.bus.publish('payment.refund', { orderId: 'o-slow-refund' });
    await waitFor(() => w.replies.length === 2, 'payment.refunded', 40_000);
    expect(summary(w.replies)[1]?.type).toBe('payment.refunded');
    expect(w.provider.charges()).toEqual([
      expect.objectContaining({ orderId: 'o-slow-refund', refunded: true }),
    ]);
  }, 50_000);

  it('answers a refund without a charge with payment.refunded, harmlessly', async () => {
    const w = await world();
    await w.bus.publish('payment.refund', { orderId: 'o-8' });
    await waitFor(() => w.replies.length > 0, 'payment.refunded');
    await settle(w);
    expect(summary(w.replies)).toEqual([{ type: 'payment.refunded', data: { orderId: 'o-8' } }]);
    expect(w.provider.charges()).toEqual([]);
  });

  it('never charges an order whose refund came before its charge, and answers the charge', async () => {
    const w = await world();
    await w.bus.publish('payment.refund', { orderId: 'o-9' });
    await waitFor(() => w.replies.length > 0, 'payment.refunded');
    await w.bus.publish('payment.charge', { orderId: 'o-9', amount: 100, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length > 1, 'the answer to the charge');
    await settle(w);
    await waitFor(async () => (await w.outbox.backlog()).pending === 0, 'the outbox drained');
    expect(w.provider.charges()).toEqual([]);
    // The answer ends a saga that cancelled the order at its deadline and waits for the charge's.
    expect(summary(w.replies)).toEqual([
      { type: 'payment.refunded', data: { orderId: 'o-9' } },
      { type: 'payment.declined', data: { orderId: 'o-9', reason: 'payment_unavailable' } },
    ]);
  });

  it('answers payment.declined, charging nothing, when the provider refuses a voided order', async () => {
    const w = await world();
    // A refund that reached the provider first, as one sent at the saga's deadline may.
    await fetch(`${w.provider.url}/charges/o-10/refund`, { method: 'POST' });
    await w.bus.publish('payment.charge', { orderId: 'o-10', amount: 100, paymentMethod: 'tok_visa' });
    await waitFor(() => w.replies.length > 0, 'a reply');
    await settle(w);
    expect(summary(w.replies)).toEqual([
      { type: 'payment.declined', data: { orderId: 'o-10', reason: 'payment_unavailable' } },
    ]);
    expect(w.provider.charges()).toEqual([]);
  });

  it('never keeps a charge that lands at the provider after payments gave up on it', async () => {
    // Payments gives up (at its one real try's 1 s), answers payment_unavailable and sends a safety
    // refund; the provider, faster again, takes the refund at once, then the charge it was still
    // holding (2 s of latency, drawn when it arrived) lands: it must be refused, not kept.
    const w = await world({ giveUpAfterMs: 300 });
    w.provider.setFaults({ failureRate: 0, latencyMs: 2000 });
    const started = Date.now();
    await w.bus.publish('payment.charge', { orderId: 'o-11', amount: 100, paymentMethod: 'tok_visa' });
    await sleep(400);
    w.provider.setFaults({ failureRate: 0, latencyMs: 0 });
    await waitFor(() => w.replies.some((m) => m.type === 'payment.refunded'), 'the safety refund');
    expect(Date.now() - started).toBeLessThan(1900); // the refund came before the charge
    expect(summary(w.replies)).toEqual([
      { type: 'payment.declined', data: { orderId: 'o-11', reason: 'payment_unavailable' } },
      { type: 'payment.refunded', data: { orderId: 'o-11' } },
    ]);
    // Everything settles: the charge held by the provider has landed since.
    await sleep(Math.max(0, started + 2500 - Date.now()));
    await settle(w);
    expect(w.provider.charges().filter((c) => c.orderId === 'o-11' && !c.refunded)).toEqual([]);
  });

  it('charges 40 orders sent at once to a slow provider within one latency, none given up (10 at a time gave up 30)', async () => {
    const w = await world({ giveUpAfterMs: 6_000 });
    w.provider.setFaults({ failureRate: 0, latencyMs: 2_000 });
    const orders = Array.from({ length: 40 }, (_, i) => `slow-${i}`);
    await Promise.all(
      orders.map((orderId) =>
        w.bus.publish('payment.charge', { orderId, amount: 100, paymentMethod: 'tok_visa' }),
      ),
    );
    await waitFor(() => w.replies.length >= orders.length, 'every reply', 15_000);
    // Must not happen: a charge given up (payment_unavailable) though the provider never failed.
    expect(w.replies.filter((m) => m.type !== 'payment.processed').map((m) => m.data)).toEqual([]);
    expect(w.provider.charges()).toHaveLength(40);
  }, 20_000);

  it('runs on a SQLite store, charges in flight concurrently with a slow provider', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'payments-'));
    closers.push(async () => rmSync(dir, { recursive: true, force: true }));
    const store = await createEventStore({ url: `sqlite:${join(dir, 'payments.db')}` });
    closers.push(() => store.close());
    const w = await world({ store });
    w.provider.setFaults({ failureRate: 0, latencyMs: 200 });
    const orders = ['s-1', 's-2', 's-3', 's-4', 's-5'];
    await Promise.all(
      orders.map((orderId) =>
        w.bus.publish('payment.charge', { orderId, amount: 100, paymentMethod: 'tok_visa' }),
      ),
    );
    await waitFor(() => w.replies.length === orders.length, 'every reply');
    expect(new Set(w.replies.map((m) => m.type))).toEqual(new Set(['payment.processed']));
    expect(
      w.provider
        .charges()
        .map((c) => c.orderId)
        .sort(),
    ).toEqual(orders);
  });
});
