import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from 'ferry';
import { afterEach, describe, expect, it } from 'vitest';
import { type PaymentProvider, startPaymentProvider } from './provider.js';

const open: PaymentProvider[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((p) => p.close()));
});

async function start(options: Parameters<typeof startPaymentProvider>[0] = {}): Promise<PaymentProvider> {
  const provider = await startPaymentProvider({ logger: silentLogger, ...options });
  open.push(provider);
  return provider;
}

async function post(provider: PaymentProvider, path: string, body?: unknown) {
  const res = await fetch(`${provider.url}${path}`, {
    method: 'POST',
    ...(body === undefined
      ? {}
      : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    body: (await res.json()) as Record<string, unknown>,
  };
}

describe('payment provider', () => {
  it('charges an order once: charging it again answers the same charge', async () => {
    const provider = await start();
    const first = await post(provider, '/charges', {
      orderId: 'o-1',
      amount: 900,
      paymentMethod: 'tok_visa',
    });
    expect(first.status).toBe(201);
    expect(first.body).toEqual({ chargeId: expect.stringMatching(/^ch_/), orderId: 'o-1', amount: 900 });
    const again = await post(provider, '/charges', { orderId: 'o-1', amount: 900 });
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(provider.charges()).toEqual([{ ...first.body, refunded: false }]);
  });

  it('refuses to reuse an order id for another amount', async () => {
    const provider = await start();
    await post(provider, '/charges', { orderId: 'o-1', amount: 900 });
    const other = await post(provider, '/charges', { orderId: 'o-1', amount: 100 });
    expect(other.status).toBe(422);
    expect(provider.charges()).toHaveLength(1);
  });

  it('declines tok_chargeDeclined with 402 problem+json and keeps no charge', async () => {
    const provider = await start();
    const declined = await post(provider, '/charges', {
      orderId: 'o-2',
      amount: 500,
      paymentMethod: 'tok_chargeDeclined',
    });
    expect(declined.status).toBe(402);
    expect(declined.type).toMatch(/^application\/problem\+json/);
    expect(declined.body).toMatchObject({ status: 402, declineCode: 'card_declined' });
    expect(provider.charges()).toEqual([]);
  });

  it('answers 400 for a malformed charge', async () => {
    const provider = await start();
    expect((await post(provider, '/charges', { orderId: 'o-3', amount: -1 })).status).toBe(400);
    expect((await post(provider, '/charges', { amount: 1 })).status).toBe(400);
    expect(provider.charges()).toEqual([]);
  });

  it('refunds a charge, idempotently', async () => {
    const provider = await start();
    const charge = await post(provider, '/charges', { orderId: 'o-4', amount: 700 });
    const refund = await post(provider, '/charges/o-4/refund');
    expect(refund.status).toBe(200);
    expect(refund.body).toEqual({ ...charge.body, refunded: true });
    expect((await post(provider, '/charges/o-4/refund')).body).toEqual(refund.body);
    // A refunded order is not charged again either.
    expect((await post(provider, '/charges', { orderId: 'o-4', amount: 700 })).body).toEqual(charge.body);
    expect(provider.charges()).toEqual([{ ...charge.body, refunded: true }]);
  });

  it('voids an order refunded before any charge: a later charge is refused with 409 order_voided', async () => {
    const provider = await start();
    const refund = await post(provider, '/charges/o-v/refund');
    expect(refund).toMatchObject({ status: 200, body: { orderId: 'o-v', voided: true } });
    expect((await post(provider, '/charges/o-v/refund')).body).toEqual(refund.body);
    const charge = await post(provider, '/charges', { orderId: 'o-v', amount: 700 });
    expect(charge.status).toBe(409);
    expect(charge.type).toMatch(/^application\/problem\+json/);
    expect(charge.body).toMatchObject({ status: 409, code: 'order_voided' });
    // Voids are not charges: the ledger lists none.
    expect(provider.charges()).toEqual([]);
  });

  it('refuses a charge still waiting out its latency when its order is voided meanwhile', async () => {
    const provider = await start();
    provider.setFaults({ failureRate: 0, latencyMs: 1000 });
    const slow = post(provider, '/charges', { orderId: 'o-late', amount: 300 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    provider.setFaults({ failureRate: 0, latencyMs: 0 });
    expect((await post(provider, '/charges/o-late/refund')).body).toEqual({
      orderId: 'o-late',
      voided: true,
    });
    expect(provider.charges()).toEqual([]);
    expect(await slow).toMatchObject({ status: 409, body: { code: 'order_voided' } });
    expect(provider.charges()).toEqual([]);
  });

  it('closes at once while calls wait out a long latency: they answer 503 and nothing is done', async () => {
    // Must not happen: a stop of the shop waiting out the latency the operator set (40 s in the
    // README's session), nor a call cut by the stop taking or refunding a charge.
    const dir = mkdtempSync(join(tmpdir(), 'provider-'));
    try {
      const file = join(dir, 'ledger.db');
      const first = await startPaymentProvider({ file, logger: silentLogger });
      await post(first, '/charges', { orderId: 'o-kept', amount: 100 });
      first.setFaults({ failureRate: 0, latencyMs: 60_000 });
      const charge = post(first, '/charges', { orderId: 'o-cut', amount: 300 });
      const refund = post(first, '/charges/o-kept/refund');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const closing = first.close();
      const stopped = await Promise.race([
        closing.then(() => 'closed'),
        new Promise((resolve) => setTimeout(resolve, 10_000, 'still waiting')),
      ]);
      expect(stopped).toBe('closed');
      expect(await charge).toMatchObject({ status: 503 });
      expect(await refund).toMatchObject({ status: 503 });
      const second = await start({ file, faults: { failureRate: 0, latencyMs: 0 } });
      expect(second.charges()).toEqual([expect.objectContaining({ orderId: 'o-kept', refunded: false })]);
    } finally {
      await Promise.all(open.splice(0).map((p) => p.close()));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists the ledger over HTTP', async () => {
    const provider = await start();
    await post(provider, '/charges', { orderId: 'a', amount: 1 });
    await post(provider, '/charges', { orderId: 'b', amount: 2 });
    await post(provider, '/charges/a/refund');
    const res = await fetch(`${provider.url}/charges`);
    expect(await res.json()).toEqual([
      { chargeId: expect.any(String), orderId: 'a', amount: 1, refunded: true },
      { chargeId: expect.any(String), orderId: 'b', amount: 2, refunded: false },
    ]);
  });

  it('fails every call with 503 after the latency at failureRate 1, and none at 0', async () => {
    const provider = await start();
    expect(provider.faults()).toEqual({ failureRate: 0, latencyMs: 0 });
    provider.setFaults({ failureRate: 1, latencyMs: 150 });
    expect(provider.faults()).toEqual({ failureRate: 1, latencyMs: 150 });
    const started = Date.now();
    const failed = await post(provider, '/charges', { orderId: 'o-5', amount: 100 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(failed.status).toBe(503);
    expect((await post(provider, '/charges/o-5/refund')).status).toBe(503);
    expect(provider.charges()).toEqual([]); // the ledger view never fails
    expect((await fetch(`${provider.url}/charges`)).status).toBe(200);

    provider.setFaults({ failureRate: 0, latencyMs: 0 });
    expect((await post(provider, '/charges', { orderId: 'o-5', amount: 100 })).status).toBe(201);
  });

  it('fails the share of calls the random draw falls under', async () => {
    const draws = [0.1, 0.9];
    const provider = await start({ random: () => draws.shift() ?? 0.9 });
    provider.setFaults({ failureRate: 0.5, latencyMs: 0 });
    expect((await post(provider, '/charges', { orderId: 'o-6', amount: 1 })).status).toBe(503);
    expect((await post(provider, '/charges', { orderId: 'o-6', amount: 1 })).status).toBe(201);
  });

  it('PUT /faults changes the settings it names and keeps the one left out', async () => {
    const provider = await start();
    const put = async (body: unknown) => {
      const res = await fetch(`${provider.url}/faults`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    expect(await put({ failureRate: 0.5, latencyMs: 100 })).toEqual({
      status: 200,
      body: { failureRate: 0.5, latencyMs: 100 },
    });
    // It answered { failureRate: 0, latencyMs: 5 }: the failure rate reset without being named.
    expect(await put({ latencyMs: 5 })).toEqual({ status: 200, body: { failureRate: 0.5, latencyMs: 5 } });
    // The README's session turns the failures off this way: the latency stays as the operator set it.
    expect(await put({ failureRate: 0 })).toEqual({ status: 200, body: { failureRate: 0, latencyMs: 5 } });
    expect(await put({})).toEqual({ status: 200, body: { failureRate: 0, latencyMs: 5 } });
    expect((await put({ latencyMs: -1 })).status).toBe(400);
    expect(provider.faults()).toEqual({ failureRate: 0, latencyMs: 5 });
  });

  it('refuses a fault setting out of range', async () => {
    const provider = await start();
    expect(() => provider.setFaults({ failureRate: 2, latencyMs: 0 })).toThrow();
    expect(() => provider.setFaults({ failureRate: 0, latencyMs: -5 })).toThrow();
    expect(provider.faults()).toEqual({ failureRate: 0, latencyMs: 0 });
  });

  it('keeps its ledger, voids included, in a file across restarts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'provider-'));
    try {
      const file = join(dir, 'ledger.db');
      const first = await startPaymentProvider({ file, logger: silentLogger });
      const charge = await post(first, '/charges', { orderId: 'o-7', amount: 300 });
      await post(first, '/charges/o-void/refund');
      await first.close();
      const second = await start({ file });
      expect((await post(second, '/charges', { orderId: 'o-7', amount: 300 })).body).toEqual(charge.body);
      expect((await post(second, '/charges', { orderId: 'o-void', amount: 300 })).status).toBe(409);
      expect(second.charges()).toHaveLength(1);
    } finally {
      await Promise.all(open.splice(0).map((p) => p.close()));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps its fault switch in the ledger file: a restarted provider fails as the operator set it', async () => {
    // Before, a provider restarted by the supervisor came back with no faults: orders confirmed
    // while the operator's switch said every call fails.
    const dir = mkdtempSync(join(tmpdir(), 'provider-'));
    try {
      const file = join(dir, 'ledger.db');
      const first = await startPaymentProvider({ file, logger: silentLogger });
      const put = await fetch(`${first.url}/faults`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ failureRate: 1, latencyMs: 5 }),
      });
      expect(put.status).toBe(200);
      await first.close();
      const second = await start({ file });
      expect(second.faults()).toEqual({ failureRate: 1, latencyMs: 5 });
      expect((await post(second, '/charges', { orderId: 'o-f', amount: 300 })).status).toBe(503);
      second.setFaults({ failureRate: 0, latencyMs: 0 });
      await second.close();
      const third = await start({ file });
      expect(third.faults()).toEqual({ failureRate: 0, latencyMs: 0 });
      expect((await post(third, '/charges', { orderId: 'o-f', amount: 300 })).status).toBe(201);
    } finally {
      await Promise.all(open.splice(0).map((p) => p.close()));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
