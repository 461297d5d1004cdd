import { isClaimLostError } from '../inbox/claim-lost-error.js';
import type { Inbox } from '../inbox/inbox.js';
import type { Message } from './envelope.js';

/** A message handler as the middleware chain sees it. */
export type MessageHandler = (message: Message) => Promise<void>;

/** The subscription a handler chain is built for. */
export interface SubscriptionInfo {
  readonly group: string;
  readonly pattern: string;
}

/**
 * Wraps a handler: `(next) => (message) => …`, the same shape as Ferry's HTTP interceptors. Built once
 * per subscription; `subscription` says which one.
 */
export type HandlerMiddleware = (next: MessageHandler, subscription: SubscriptionInfo) => MessageHandler;

/** Applies middleware so that the first in the list runs first (outermost). */
export function composeMiddleware(
  middleware: readonly HandlerMiddleware[],
  handler: MessageHandler,
  subscription: SubscriptionInfo,
): MessageHandler {
  let next = handler;
  for (let i = middleware.length - 1; i >= 0; i--) next = middleware[i]!(next, subscription);
  return next;
}

/**
 * Idempotent consumer: runs the handler once per (group, subscription pattern, message id). A
 * duplicate delivery (broker redelivery, re-sent publish) is acknowledged without running it. A
 * holder that lost its claim meanwhile (its lease lapsed and another delivery took the message
 * over) records nothing and acknowledges its copy: the new holder's delivery owns the outcome.
 */
export function idempotent(inbox: Inbox): HandlerMiddleware {
  return (next, subscription) => {
    // JSON-encoded so that no (group, pattern, id) can collide with another: `|` is a valid pattern word.
    const prefix = JSON.stringify([subscription.group, subscription.pattern]);
    return async (message) => {
      const claim = await inbox.begin(prefix + message.id);
      if (claim === null) return;
      try {
        await next(message);
      } catch (error) {
        claim.abandon();
        throw error;
      }
      try {
        await claim.complete();
      } catch (error) {
        if (!isClaimLostError(error)) throw error;
      }
    };
  };
}
