/**
 * What payments knows of an order, as a stream `payment-<orderId>` in its own store. The first
 * outcome recorded is final: a charge message seen again republishes it instead of calling the
 * provider, and a refund recorded before the charge arrives (the saga gave up waiting) means the
 * charge must never stay taken.
 */
import type { EventStore } from 'ferry';

export type PaymentEvent =
  | { readonly type: 'PaymentCharged'; readonly data: { chargeId: string; amount: number } }
  | {
      readonly type: 'PaymentDeclined';
      readonly data: { reason: 'payment_declined' | 'payment_unavailable' };
    }
  | { readonly type: 'PaymentRefunded'; readonly data: { chargeId?: string } };

export interface PaymentState {
  /** Version of the stream's last event, -1 when there is none (for `expectedVersion`). */
  readonly version: number;
  readonly charged?: { readonly chargeId: string; readonly amount: number };
  readonly declined?: 'payment_declined' | 'payment_unavailable';
  readonly refunded: boolean;
}

export const paymentStream = (orderId: string) => `payment-${orderId}`;

export function evolve(state: PaymentState, event: PaymentEvent, version: number): PaymentState {
  switch (event.type) {
    case 'PaymentCharged':
      return { ...state, version, charged: event.data };
    case 'PaymentDeclined':
      return { ...state, version, declined: event.data.reason };
    case 'PaymentRefunded':
      return { ...state, version, refunded: true };
  }
}

export async function loadPayment(store: EventStore, orderId: string): Promise<PaymentState> {
  const events = await store.readStream(paymentStream(orderId));
  return events.reduce<PaymentState>((state, e) => evolve(state, e as unknown as PaymentEvent, e.version), {
    version: -1,
    refunded: false,
  });
}
