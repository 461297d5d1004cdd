/**
 * The payments service: takes `payment.charge` and `payment.refund` from the order saga, charges and
 * refunds at the payment provider over HTTP, and answers `payment.processed`, `payment.declined` or
 * `payment.refunded`.
 *
 * Each message is handled in two steps. First, outside any transaction, the provider call: it may
 * take seconds (retries, backoff, a slow provider), and a unit of work on SQLite holds the store's
 * write lock for its whole run. The call is idempotent (the order id is the key), so a redelivery
 * simply calls again and gets the same charge. Then one unit of work with the transactional inbox
 * mark records the outcome and writes the reply to the outbox: a message already marked publishes
 * nothing again.
 */
import Fastify from 'fastify';
import {
  type Bus,
  createOutbox,
  type EventStore,
  type Logger,
  type Message,
  type Outbox,
  stderrLogger,
  type UnitOfWork,
  withLinkedSignal,
} from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import type { ShopContracts } from '../contracts.js';
import { listen } from '../listen.js';
import { loadPayment, type PaymentEvent, type PaymentState, paymentStream } from './payment-state.js';
import { type ChargeOutcome, ProviderClient } from './provider-client.js';

export interface PaymentsServiceOptions {
  readonly bus: Bus<ShopContracts>;
  readonly store: EventStore;
  /** The store's outbox; one is created (and closed with the service) when not given. */
  readonly outbox?: Outbox<ShopContracts>;
  /** Base URL of the payment provider. */
  readonly providerUrl: string;
  /**
   * How long after a `payment.charge` was sent (its message's time, not the order's) payments may
   * keep trying an unavailable provider (its retries, and calls the open breaker refuses) before it
   * answers `payment.declined` with reason `payment_unavailable`. No try starts later, and a try
   * still running then is cut unless that leaves it less than 1 s (a charge handled after that time
   * gets one try of 1 s). It gives up sooner when its next try could not start in time (the breaker's
   * 5 s pause, the backoff). @default 30000
   */
  readonly giveUpAfterMs?: number;
  /**
   * Charges (and refunds) this instance has at the provider at once. A charge waiting for a slot
   * counts toward its give-up time: with a provider answering in 10 s, more than this many charges
   * sent at once would wait a round and more, and be given up. @default 64
   */
  readonly concurrency?: number;
  /** Subscription group: instances of the service share it. @default 'payments' */
  readonly group?: string;
  /**
   * Time limit of one charge try at the provider, ms. @default none: a try may run until the give-up
   * time, so that a slow provider's answer is heard (a try cut short may be taken all the same)
   */
  readonly attemptTimeoutMs?: number;
  /**
   * Time limit of one refund call at the provider, its tries included, ms. @default 90000 (longer
   * than the provider's slowest setting, 60 s)
   */
  readonly refundTimeoutMs?: number;
  /** Port of the health endpoint (`GET /health/ready`, `/health/live`). @default 0 (a free port) */
  readonly port?: number;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** @default warnings and errors to stderr */
  readonly logger?: Logger;
}

export const DEFAULT_PAYMENTS_OPTIONS = Object.freeze({
  giveUpAfterMs: 30_000,
  // The bus's default of 10 held a slow provider's charges in a queue while their give-up time ran:
  // at 10 s a charge, the 11th to 40th of 40 sent at once were given up unanswered.
  concurrency: 64,
  group: 'payments',
});

export interface PaymentsService {
  /** Base URL of the health endpoint: payments has no other HTTP route. */
  readonly url: string;
  /** Stops taking messages (a charge still retrying is abandoned, and redelivered later). */
  close(): Promise<void>;
}

type Work = UnitOfWork<ShopContracts>;
type ChargeMessage = Message<{ orderId: string; amount: number; paymentMethod: string }, 'payment.charge'>;

export async function startPaymentsService(options: PaymentsServiceOptions): Promise<PaymentsService> {
  const { bus, store } = options;
  const giveUpAfterMs = options.giveUpAfterMs ?? DEFAULT_PAYMENTS_OPTIONS.giveUpAfterMs;
  const group = options.group ?? DEFAULT_PAYMENTS_OPTIONS.group;
  const concurrency = options.concurrency ?? DEFAULT_PAYMENTS_OPTIONS.concurrency;
  const logger = options.logger ?? stderrLogger;
  const outbox = options.outbox ?? (await createOutbox({ store, bus, logger }));
  const provider = new ProviderClient(options.providerUrl, {
    attemptTimeoutMs: options.attemptTimeoutMs,
    refundTimeoutMs: options.refundTimeoutMs,
  });
  const stopping = new AbortController();
  // The inbox marks are per (group, pattern), as `subscribe(…, { unitOfWork })` names them.
  const chargeConsumer = JSON.stringify([group, 'payment.charge']);
  const refundConsumer = JSON.stringify([group, 'payment.refund']);

  /** The order's charge: the provider call, then the outcome and its reply in one unit of work. */
  async function handleCharge(message: ChargeMessage, signal: AbortSignal): Promise<void> {
    const { orderId } = message.data;
    const state = await loadPayment(store, orderId);
    let outcome: ChargeOutcome | undefined;
    if (state.refunded) {
      // A refund came first (the saga gave up waiting): whatever an earlier delivery of this
      // charge took at the provider must not stay taken, and nothing may be taken later (the
      // provider voids an order refunded without a charge).
      await provider.refund(orderId, signal);
    } else if (state.charged === undefined && state.declined === undefined) {
      // Counted from when the charge was sent, so that a redelivery after a crash does not start over.
      const sentAt = Math.min(Date.now(), Date.parse(message.time) || Date.now());
      outcome = await provider.charge(message.data, sentAt + giveUpAfterMs, signal);
    }
    await outbox.runHandler(chargeConsumer, message.id, async (work) => {
      if (outcome !== undefined) {
        // Against the version read before the call: a refund recorded meanwhile fails this with a
        // ConcurrencyError, and the redelivery takes the refund path above.
        await work.append(paymentStream(orderId), [eventOf(outcome)], { expectedVersion: state.version });
      }
      await reply(work, orderId, outcome, state);
    });
  }

  async function reply(work: Work, orderId: string, outcome: ChargeOutcome | undefined, state: PaymentState) {
    if (outcome !== undefined) logger.info(`order ${orderId}: ${outcome.kind}`);
    if (outcome?.kind === 'charged') {
      await work.publish('payment.processed', {
        orderId,
        chargeId: outcome.chargeId,
        amount: outcome.amount,
      });
    } else if (outcome?.kind === 'declined') {
      await work.publish('payment.declined', { orderId, reason: 'payment_declined' });
    } else if (outcome?.kind === 'voided') {
      // Refunded before it was charged (the saga's deadline or a give-up sent the refund while this
      // charge was retrying): not charged, and it never will be. The saga, already cancelled and
      // waiting for this answer, ends.
      await work.publish('payment.declined', { orderId, reason: 'payment_unavailable' });
    } else if (outcome?.kind === 'unavailable') {
      logger.warn(`payments: provider unavailable for ${giveUpAfterMs} ms, order ${orderId} not charged`);
      await work.publish('payment.declined', { orderId, reason: 'payment_unavailable' });
      // An attempt whose answer was lost (a timeout) may still have charged: refund it once the
      // provider is back, so that a cancelled order never keeps a charge.
      await work.publish('payment.refund', { orderId });
    } else if (state.refunded) {
      // The order was compensated before its charge was handled: not charged (the refund above
      // voided it, or refunded what an earlier delivery took). A saga still waiting for the charge's
      // answer (cancelled at its deadline) gets one, and ends; an outcome already answered stands.
      if (state.charged === undefined && state.declined === undefined) {
        await work.publish('payment.declined', { orderId, reason: 'payment_unavailable' });
      }
    } else if (state.charged !== undefined) {
      // The same command sent again (a new message id): the first outcome stands.
      await work.publish('payment.processed', { orderId, ...state.charged });
    } else if (state.declined !== undefined) {
      await work.publish('payment.declined', { orderId, reason: state.declined });
    }
  }

  const charges = await bus.subscribe(
    'payment.charge',
    (message, { signal }) =>
      withLinkedSignal(signal, stopping.signal, (linked) => handleCharge(message, linked)),
    // The handler may try the provider for giveUpAfterMs (a late message: one try of 1 s), then
    // records the outcome: give it that, and time to spare.
    { group, concurrency, handlerTimeoutMs: withSpare(giveUpAfterMs) },
  );

  const refunds = await bus.subscribe(
    'payment.refund',
    async (message, { signal }) => {
      const { orderId } = message.data;
      const chargeId = await withLinkedSignal(signal, stopping.signal, (linked) =>
        provider.refund(orderId, linked),
      );
      await outbox.runHandler(refundConsumer, message.id, async (work) => {
        const data = chargeId === undefined ? {} : { chargeId };
        await work.append(paymentStream(orderId), [{ type: 'PaymentRefunded', data }], {
          expectedVersion: 'any',
        });
        await work.publish('payment.refunded', { orderId, ...data });
      });
    },
    // A refund must happen: keep trying an unavailable provider for about 45 minutes (backoff
    // doubling from 1 s to 60 s), then the message waits in the dead-letter queue for an operator.
    // Each delivery's call may take refundTimeoutMs; the record after it, a few seconds more.
    { group, concurrency, maxAttempts: 50, handlerTimeoutMs: withSpare(provider.refundTimeoutMs) },
  );

  // Ready while the outbox's database answers and its relay keeps up; the provider's breaker too.
  const app = Fastify(ferryFastifyOptions({ logger }));
  ferryFastify(app, {
    logger,
    health: {
      checks: { outbox: outbox.healthCheck(), bus: options.bus.healthCheck() },
      breakers: () => provider.http.breakers(),
    },
  });
  let url: string;
  try {
    url = await listen(app, options);
  } catch (error) {
    await Promise.all([charges.close(), refunds.close()]);
    throw error;
  }

  let closing: Promise<void> | undefined;
  return {
    url,
    close() {
      closing ??= (async () => {
        stopping.abort(new Error('the payments service is closing'));
        await app.close();
        await Promise.all([charges.close(), refunds.close()]);
        await provider.close();
        if (options.outbox === undefined) await outbox.close();
      })();
      return closing;
    },
  };
}

function eventOf(outcome: ChargeOutcome): PaymentEvent {
  switch (outcome.kind) {
    case 'charged':
      return { type: 'PaymentCharged', data: { chargeId: outcome.chargeId, amount: outcome.amount } };
    case 'declined':
      return { type: 'PaymentDeclined', data: { reason: 'payment_declined' } };
    case 'voided':
    case 'unavailable':
      return { type: 'PaymentDeclined', data: { reason: 'payment_unavailable' } };
  }
}

/** The longest time limit a handler takes (a Node timer's), about 24.8 days. */
const MAX_HANDLER_TIMEOUT_MS = 2_147_483_647;

/**
 * A handler's time limit for work that may take `ms`: 10 s more, to record its outcome, within the
 * longest limit a handler takes (SHOP_PAYMENT_GIVE_UP_MS near its top passed the settings check,
 * then stopped the service at start).
 */
function withSpare(ms: number): number {
  return Math.min(ms + 10_000, MAX_HANDLER_TIMEOUT_MS);
}
