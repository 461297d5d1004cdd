/**
 * The order saga: reserve stock, charge, confirm; or compensate and cancel with a reason. Every
 * order ends `order.confirmed` or `order.cancelled`: a durable deadline, scheduled when the order
 * is created, cancels an order still pending when it fires.
 *
 *   reserving ──inventory.reserved──▶ charging ──payment.processed──▶ confirmed
 *       │ unavailable → cancelled out_of_stock   │ declined → release → cancelled (its reason)
 *       │ deadline / customer → cancelled,       │ deadline / customer → release + refund → cancelled
 *       │   waiting for the reservation's answer │   (waiting for the charge's answer)
 *                                                confirmed ──customer──▶ refund + release → cancelled
 *
 * An order cancelled while a reply is still due stays in `cancelled` (not completed) until the
 * reply comes: a late reservation is released, a late charge refunded, then the instance completes.
 * A customer's cancel handled before `order.created` (they travel on different queues) starts the
 * instance cancelled and completed: the creation then finds it completed, and nothing is reserved.
 */
import { defineSaga, type SagaContext } from 'ferry';
import { type CancelReason, type ShopContracts, shopContracts } from '../contracts.js';

/** Options of {@link createOrderSaga}. */
export interface OrderSagaOptions {
  /**
   * Time from the order's creation (`order.created`'s time) until a still-pending order is cancelled
   * (`timeout`). @default 30_000
   */
  readonly timeoutMs?: number;
  /**
   * Told, when a pending order ends (confirmed or cancelled), when it was placed (ms since the
   * epoch): a `SagaBacklog` learns from it whether the saga is behind. Called inside the message's
   * unit of work, so perhaps again if that runs again.
   */
  readonly orderEnded?: (placedAt: number) => void;
}

export const DEFAULT_ORDER_SAGA_OPTIONS = Object.freeze({ timeoutMs: 30_000 });

interface OrderSagaData {
  readonly total: number;
  readonly paymentMethod: string;
  /** When the order was placed (`order.created`'s time), ms since the epoch; absent in instances begun before it was kept. */
  readonly placedAt?: number;
  /** Once cancelled: the reply still due, whose effect must be undone when it comes. */
  readonly awaiting: 'reservation' | 'charge' | null;
}

type Status = 'reserving' | 'charging' | 'confirmed' | 'cancelled';
type Saga = SagaContext<ShopContracts, Status, OrderSagaData>;

const byOrder = (m: { readonly data: { readonly orderId: string } }) => m.data.orderId;

export function createOrderSaga(options: OrderSagaOptions = {}) {
  const timeoutMs = options.timeoutMs ?? DEFAULT_ORDER_SAGA_OPTIONS.timeoutMs;
  const { orderEnded } = options;
  const ended = (saga: Saga) => {
    const { placedAt } = saga.state.data;
    if (orderEnded !== undefined && placedAt !== undefined) orderEnded(placedAt);
    return saga;
  };
  return defineSaga({
    name: 'order',
    contracts: shopContracts,
    // A customer's cancel may reach the saga before the order's creation (two queues, competing
    // instances): it starts the instance too, so that it is never lost (see `started`).
    startedBy: ['order.created', 'order.cancellation-requested'],
    initial: (m) => {
      if (m.type !== 'order.created') {
        return {
          status: 'cancelled',
          data: { total: 0, paymentMethod: '', awaiting: null } as OrderSagaData,
        };
      }
      const placedAt = Date.parse(m.time);
      return {
        status: 'reserving',
        data: {
          total: m.data.total,
          paymentMethod: m.data.paymentMethod,
          awaiting: null,
          ...(Number.isNaN(placedAt) ? {} : { placedAt }),
        } as OrderSagaData,
      };
    },
    started: (saga, m) => {
      if (m.type === 'order.cancellation-requested') {
        saga.publish('order.cancelled', { orderId: saga.id, reason: 'cancelled_by_customer' }).complete();
        return;
      }
      const items = m.data.items.map(({ productId, quantity }) => ({ productId, quantity }));
      // From the order's creation (`order.created` is written in the order's commit), not from now:
      // a message handled late (its relay or the process killed, its lease waited out) would give
      // the order a fresh 30 s. Past already, the deadline fires at once.
      const created = Date.parse(m.time);
      saga
        .send('inventory.reserve', { orderId: saga.id, items })
        .schedule(
          'deadline',
          Number.isNaN(created) ? { delayMs: timeoutMs } : { at: new Date(created + timeoutMs) },
        );
    },
    id: {
      'order.created': byOrder,
      'order.cancellation-requested': byOrder,
      'inventory.reserved': byOrder,
      'inventory.unavailable': byOrder,
      'payment.processed': byOrder,
      'payment.declined': byOrder,
    },
    states: {
      reserving: {
        'inventory.reserved': (saga) => {
          const { total, paymentMethod } = saga.state.data;
          saga
            .done('stock', { type: 'inventory.release', data: { orderId: saga.id } })
            .send('payment.charge', { orderId: saga.id, amount: total, paymentMethod })
            .to('charging');
        },
        'inventory.unavailable': (saga) => {
          cancel(ended(saga), 'out_of_stock').complete();
        },
        // Nothing to undo yet, but the reservation may still be made: wait for its answer.
        'saga.order.timeout': (saga) => {
          cancel(ended(saga), 'timeout', 'reservation');
        },
        'order.cancellation-requested': (saga) => {
          cancel(ended(saga), 'cancelled_by_customer', 'reservation');
        },
      },
      charging: {
        'payment.processed': (saga) => {
          ended(saga)
            .cancelTimeout('deadline')
            .done('payment', { type: 'payment.refund', data: { orderId: saga.id } })
            .send('inventory.commit', { orderId: saga.id })
            .publish('order.confirmed', { orderId: saga.id })
            .to('confirmed');
        },
        'payment.declined': (saga, m) => {
          cancel(ended(saga).compensate(), m.data.reason).complete();
        },
        // The charge may have been taken, or be taken still: refund (harmless without a charge).
        'saga.order.timeout': (saga) => {
          refundAndCancel(ended(saga), 'timeout');
        },
        'order.cancellation-requested': (saga) => {
          refundAndCancel(ended(saga), 'cancelled_by_customer');
        },
      },
      // Not completed: the customer may still cancel a confirmed order.
      confirmed: {
        'order.cancellation-requested': (saga) => {
          saga.compensate().publish('order.cancelled', { orderId: saga.id, reason: 'cancelled_by_customer' });
          saga.to('cancelled').complete();
        },
      },
      cancelled: {
        'inventory.reserved': (saga) => {
          saga.send('inventory.release', { orderId: saga.id }).complete();
        },
        'inventory.unavailable': (saga) => {
          saga.complete();
        },
        'payment.processed': (saga) => {
          saga.send('payment.refund', { orderId: saga.id }).complete();
        },
        'payment.declined': (saga) => {
          saga.complete();
        },
        'order.cancellation-requested': () => {},
      },
    },
  });
}

function cancel(saga: Saga, reason: CancelReason, awaiting: OrderSagaData['awaiting'] = null): Saga {
  return saga
    .cancelTimeout('deadline')
    .publish('order.cancelled', { orderId: saga.id, reason })
    .to('cancelled', { ...saga.state.data, awaiting });
}

/** Releases the stock and refunds whatever was or will be charged (harmless without a charge). */
function refundAndCancel(saga: Saga, reason: CancelReason): Saga {
  saga.compensate().send('payment.refund', { orderId: saga.id });
  return cancel(saga, reason, 'charge');
}
