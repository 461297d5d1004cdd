import { AsyncLocalStorage } from 'node:async_hooks';
import type { EventStoreBackend } from './backend.js';

/**
 * The backend whose subscription's handler the caller runs in, if any: while `store.close()` waits
 * for a handler in progress, that handler may still use the store and its outbox (a projection
 * writing what it made of the event); calls from anywhere else are refused.
 */
export const subscriptionHandlerFrame = new AsyncLocalStorage<HandlerFrame>();

/** The handler the caller runs in: its subscription's backend, and the subscription itself. */
export interface HandlerFrame {
  readonly backend: EventStoreBackend;
  readonly subscription: object;
}

/** Whether the caller runs inside a handler of a subscription on `backend`. */
export function insideHandlerOf(backend: EventStoreBackend): boolean {
  return subscriptionHandlerFrame.getStore()?.backend === backend;
}

/** Whether the caller runs inside a handler of `subscription`. */
export function insideOwnHandler(subscription: object): boolean {
  return subscriptionHandlerFrame.getStore()?.subscription === subscription;
}
