/**
 * The provider, seen from payments: a ServiceClient for charges (retries with backoff on 503 and
 * timeouts, a breaker, the order id as idempotency key), and a charge that keeps trying until a
 * deadline before it calls the provider unavailable; refunds on a client of their own, without a
 * breaker, so that the charges' open breaker never holds a refund back.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  isBulkheadFullError,
  isCircuitOpenError,
  isConnectionError,
  isHttpError,
  isRetryBudgetExhaustedError,
  isTimeoutError,
  ServiceClient,
} from 'ferry';
import { MAX_LATENCY_MS } from '../payment-provider/faults.js';

/**
 * How a charge ended: `voided` when the provider refused it because the order was refunded before
 * it was charged (a refund sent after a give-up or a deadline landed first): not charged, ever.
 */
export type ChargeOutcome =
  | { readonly kind: 'charged'; readonly chargeId: string; readonly amount: number }
  | { readonly kind: 'declined' }
  | { readonly kind: 'voided' }
  | { readonly kind: 'unavailable' };

interface ChargeView {
  readonly chargeId: string;
  readonly amount: number;
}

/** Failures that say the provider cannot answer now, as opposed to an answer. */
function isUnavailable(error: unknown): boolean {
  if (isHttpError(error)) return error.status >= 500 || error.status === 408 || error.status === 429;
  return (
    isConnectionError(error) ||
    isTimeoutError(error) ||
    isCircuitOpenError(error) ||
    isRetryBudgetExhaustedError(error) ||
    isBulkheadFullError(error)
  );
}

/** Pause between two rounds of calls: until the breaker lets a probe through, else a short backoff. */
function pauseAfter(error: unknown, round: number): number {
  if (isCircuitOpenError(error) && error.retryAt !== undefined)
    return Math.max(50, error.retryAt - Date.now());
  return Math.min(2000, 100 * 2 ** round) * (0.5 + Math.random() / 2);
}

export interface ProviderClientOptions {
  /**
   * Time limit of one charge try, ms. @default none: a try may run until the charge's give-up time
   * (a provider may be slow; a try cut short may still be taken, unseen, and need a refund)
   */
  readonly attemptTimeoutMs?: number | undefined;
  /** Time limit of one refund call (its tries included), ms. @default 90000 */
  readonly refundTimeoutMs?: number | undefined;
}

/**
 * Longer than the slowest answer the provider's fault switch allows: a refund cut at 30 s never
 * reached a provider set to answer in 40 s (it drops a call whose caller left), so a cancelled order
 * kept its charge for as long as the provider stayed that slow.
 */
export const DEFAULT_REFUND_TIMEOUT_MS = MAX_LATENCY_MS + 30_000;

export class ProviderClient {
  /** Charges: behind the breaker. */
  readonly http: ServiceClient;
  /** Refunds: no breaker (they are few, and must reach the provider as soon as it takes calls). */
  readonly #refunds: ServiceClient;
  readonly #attemptTimeoutMs: number | undefined;
  readonly #refundTimeoutMs: number;

  constructor(url: string, options: ProviderClientOptions = {}) {
    this.#attemptTimeoutMs = options.attemptTimeoutMs;
    this.#refundTimeoutMs = options.refundTimeoutMs ?? DEFAULT_REFUND_TIMEOUT_MS;
    this.http = new ServiceClient(url, {
      name: 'payment-provider',
      retry: { maxAttempts: 3 },
      // Opens after 10 calls in 10 s of which half failed; probes again after 5 s, so that orders
      // go through soon after the provider is back.
      breaker: { minimumVolume: 10, errorThresholdPercentage: 50, resetTimeoutMs: 5000 },
    });
    this.#refunds = new ServiceClient(url, {
      name: 'payment-provider refunds',
      timeout: this.#refundTimeoutMs,
      deadline: this.#refundTimeoutMs,
      retry: { maxAttempts: 3 },
      breaker: false,
    });
  }

  /**
   * Charges the order (idempotent at the provider: the order id is the key). Keeps trying while the
   * provider is unavailable, up to `giveUpAt` (epoch ms; at least one call is made), then resolves
   * `unavailable`. A 409 `order_voided` resolves `voided`. Any other failure (another 4xx) rejects:
   * it is a bug, not a decline.
   */
  async charge(
    command: { readonly orderId: string; readonly amount: number; readonly paymentMethod: string },
    giveUpAt: number,
    signal: AbortSignal,
  ): Promise<ChargeOutcome> {
    for (let round = 0; ; round++) {
      try {
        // A message that waited longer than the give-up time still gets one real try.
        const left = Math.max(1000, giveUpAt - Date.now());
        const charge = await this.http.post<ChargeView>('/charges', command, {
          idempotencyKey: command.orderId,
          deadline: left,
          timeout: Math.min(left, this.#attemptTimeoutMs ?? left),
          signal,
        });
        return { kind: 'charged', chargeId: charge.chargeId, amount: charge.amount };
      } catch (error) {
        if (isHttpError(error) && error.status === 402) return { kind: 'declined' };
        if (isHttpError(error) && error.status === 409 && error.problem?.code === 'order_voided') {
          return { kind: 'voided' };
        }
        if (signal.aborted || !isUnavailable(error)) throw error;
        const pause = pauseAfter(error, round);
        if (Date.now() + pause >= giveUpAt) return { kind: 'unavailable' };
        await sleep(pause, undefined, { signal });
      }
    }
  }

  /**
   * Refunds the order's charge; resolves its id, or `undefined` when the provider had no charge for
   * it (the provider then voids the order: a charge request still on its way is refused).
   */
  async refund(orderId: string, signal: AbortSignal): Promise<string | undefined> {
    const answer = await this.#refunds.post<{ readonly chargeId?: string }>(
      `/charges/${encodeURIComponent(orderId)}/refund`,
      undefined,
      { idempotencyKey: `refund-${orderId}`, signal },
    );
    return answer.chargeId;
  }

  /** How long one refund call may take: the refund handler's time limit is set from it. */
  get refundTimeoutMs(): number {
    return this.#refundTimeoutMs;
  }

  async close(): Promise<void> {
    await Promise.all([this.http.close(), this.#refunds.close()]);
  }
}
