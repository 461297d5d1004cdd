/**
 * A simulated external payment provider (think Stripe's test mode), as its own HTTP service with its
 * own ledger. The order id is the idempotency key: charging an order again answers the charge it
 * already has, so an order is never charged twice, whatever the caller retries or redelivers.
 *
 *   POST /charges {orderId, amount, paymentMethod?}  → 201 {chargeId, orderId, amount}
 *        paymentMethod 'tok_visa' (default) succeeds, 'tok_chargeDeclined' (or any other) → 402;
 *        409 {code: 'order_voided'} for an order voided by an earlier refund
 *   POST /charges/:orderId/refund                    → 200 {chargeId, orderId, amount, refunded};
 *        without a charge, the order is voided: 200 {orderId, voided: true}, and it is never charged
 *   GET  /charges                                    → the ledger [{chargeId, orderId, amount, refunded}]
 *   GET  /faults, PUT /faults {failureRate, latencyMs} → the fault switch (from the next call)
 *
 * With `adminToken` set, the ledger and the fault switch require `Authorization: Bearer <token>`.
 *
 * The fault switch (`setFaults`) delays charge and refund calls and fails a share of them with 503;
 * the ledger view never fails. A call is decided after its delay, in one transaction of the ledger:
 * a charge request that was still waiting when its order was refunded (voided) is refused, so a
 * cancelled order never keeps a charge, whatever order the calls land in.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyRequest } from 'fastify';
import { HttpProblemError, type Logger, stderrLogger, validateRequest, withLinkedSignal } from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import { z } from 'zod';
import { requireAdmin } from '../admin-token.js';
import { listen } from '../listen.js';
import { FaultSwitch, type Faults, faultsSchema, faultsUpdateSchema, NO_FAULTS } from './faults.js';
import { type Charge, Ledger } from './ledger.js';

export interface PaymentProviderOptions {
  /** @default 0 (a free port) */
  readonly port?: number;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** SQLite file of the ledger. @default ':memory:' (lost when the provider stops) */
  readonly file?: string;
  /** @default no faults */
  readonly faults?: Faults;
  /** Draws which calls fail (tests pass a fixed one). @default Math.random */
  readonly random?: () => number;
  /** Token the ledger and fault routes require. @default none: those routes are open (tests) */
  readonly adminToken?: string;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

export interface PaymentProvider {
  readonly url: string;
  /** Applies from the next charge or refund call. */
  setFaults(faults: Faults): void;
  faults(): Faults;
  /** The ledger, oldest charge first. */
  charges(): Charge[];
  close(): Promise<void>;
}

const chargeRequest = z.object({
  orderId: z.string().min(1).max(200),
  amount: z.number().int().nonnegative(),
  paymentMethod: z.string().max(200).default('tok_visa'),
});

/** Payment methods that succeed; `tok_chargeDeclined` and anything unknown is declined. */
const ACCEPTED_METHODS = new Set(['tok_visa', 'tok_mastercard']);

const view = ({ chargeId, orderId, amount }: Charge) => ({ chargeId, orderId, amount });

export async function startPaymentProvider(options: PaymentProviderOptions = {}): Promise<PaymentProvider> {
  const logger = options.logger ?? stderrLogger;
  const ledger = new Ledger(options.file);
  // The switch is kept with the ledger: a provider restarted (by the supervisor, or the whole shop)
  // goes on failing as the operator set it, until they set it otherwise.
  const faults = new FaultSwitch(options.faults ?? storedFaults(ledger) ?? NO_FAULTS, options.random);
  const setFaults = (next: Faults): Faults => {
    faults.set(next);
    ledger.saveSetting(FAULTS_SETTING, faults.get());
    return faults.get();
  };
  const app = Fastify(ferryFastifyOptions({ logger }));
  ferryFastify(app, { logger, health: {} });

  /** Aborted as the provider closes: a call waiting out its injected delay ends then. */
  const stopping = new AbortController();

  /**
   * What the fault switch does to one call, drawn when it arrives. The delay ends early, with a 503
   * and nothing done, when the caller leaves or the provider closes: closing waited for it (a stop
   * of the shop took as long as the latency set, 40 s in the README's session).
   */
  async function suffer(request: FastifyRequest): Promise<void> {
    const { delayMs, fail } = faults.draw();
    if (delayMs > 0) {
      try {
        await withLinkedSignal(request.ferry.signal, stopping.signal, (signal) =>
          sleep(delayMs, undefined, { signal }),
        );
      } catch {
        throw new HttpProblemError(503, 'Payment provider unavailable', {
          detail: 'The provider stopped, or the caller left, before it acted on the call: nothing was done.',
        });
      }
    }
    if (fail) throw new HttpProblemError(503, 'Payment provider unavailable', { detail: 'Injected fault.' });
  }

  app.post('/charges', async (request, reply) => {
    const { orderId, amount, paymentMethod } = await validateRequest(chargeRequest, request.body, 'body');
    // Decided after the delay: a refund that voided the order meanwhile wins.
    await suffer(request);
    const attempt = ledger.charge(orderId, amount, ACCEPTED_METHODS.has(paymentMethod));
    switch (attempt.kind) {
      case 'voided':
        throw new HttpProblemError(409, 'Order voided', {
          detail: `Order ${orderId} was refunded before it was charged: it is never charged.`,
          extensions: { code: 'order_voided' },
        });
      case 'existing':
        if (attempt.charge.amount !== amount) {
          throw new HttpProblemError(422, 'Idempotency key reused', {
            detail: `Order ${orderId} was charged ${attempt.charge.amount}, not ${amount}.`,
          });
        }
        return reply.code(201).header('idempotent-replayed', 'true').send(view(attempt.charge));
      case 'declined':
        throw new HttpProblemError(402, 'Card declined', {
          detail: 'The payment method was declined.',
          extensions: {
            declineCode: paymentMethod === 'tok_chargeDeclined' ? 'card_declined' : 'invalid_token',
          },
        });
      case 'taken':
        return reply.code(201).send(view(attempt.charge));
    }
  });

  app.post<{ Params: { orderId: string } }>('/charges/:orderId/refund', async (request) => {
    const { orderId } = request.params;
    await suffer(request);
    const outcome = ledger.refund(orderId);
    return outcome.kind === 'refunded' ? outcome.charge : { orderId, voided: true };
  });

  const operator = (request: FastifyRequest) => {
    if (options.adminToken !== undefined) requireAdmin(request, options.adminToken);
  };
  app.get('/charges', async (request) => {
    operator(request);
    return ledger.all();
  });
  app.get('/faults', async (request) => {
    operator(request);
    return faults.get();
  });
  app.put('/faults', async (request) => {
    operator(request);
    // A setting left out keeps its value: it was reset to 0 ({"latencyMs":5} cleared the failure rate).
    const update = await validateRequest(faultsUpdateSchema, request.body, 'body');
    const now = faults.get();
    return setFaults({
      failureRate: update.failureRate ?? now.failureRate,
      latencyMs: update.latencyMs ?? now.latencyMs,
    });
  });

  const url = await listen(app, options);
  let closing: Promise<void> | undefined;
  return {
    url,
    setFaults: (next) => void setFaults(next),
    faults: () => faults.get(),
    charges: () => ledger.all(),
    close: () => {
      if (closing === undefined) stopping.abort();
      closing ??= app.close().then(() => ledger.close());
      return closing;
    },
  };
}

const FAULTS_SETTING = 'faults';

/** The fault switch as an operator last set it on this ledger; `undefined` if never (or unreadable). */
function storedFaults(ledger: Ledger): Faults | undefined {
  const parsed = faultsSchema.safeParse(ledger.setting(FAULTS_SETTING));
  return parsed.success ? parsed.data : undefined;
}
