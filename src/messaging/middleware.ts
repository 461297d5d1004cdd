import { currentContext, type FerryContext, runWithContext } from '../context/context.js';
import { isClaimLostError } from '../inbox/claim-lost-error.js';
import type { Inbox } from '../inbox/inbox.js';
import type { Message } from './envelope.js';
import { HandlerRun } from './handler-timeouts.js';

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
 * over) records nothing and acknowledges its copy, whether its handler succeeded or failed: the new
 * holder's delivery owns the outcome. The handler's `signal` aborts (with a `ClaimLostError`) as soon
 * as the holder learns its claim is lost, so a handler that heeds it stops instead of running on
 * beside the new holder's.
 */
export function idempotent(inbox: Inbox): HandlerMiddleware {
  return (next, subscription) => {
    // JSON-encoded so that no (group, pattern, id) can collide with another: `|` is a valid pattern word.
    const prefix = JSON.stringify([subscription.group, subscription.pattern]);
    return async (message) => {
      // A copy may wait here for an earlier delivery still being handled: if its time limit passes
      // meanwhile, its timeout says so rather than blaming a handler that did not run.
      const run = currentContext();
      const timed = run instanceof HandlerRun ? run : undefined;
      timed?.waitingForEarlierDelivery(true);
      let claim: Awaited<ReturnType<Inbox['begin']>>;
      try {
        claim = await inbox.begin(prefix + message.id);
      } finally {
        timed?.waitingForEarlierDelivery(false);
      }
      if (claim === null) return;
      try {
        await withSignal(claim.signal, next, message);
      } catch (error) {
        // Lost meanwhile: whatever this run did, the new holder's delivery owns the outcome.
        if (claim.signal.aborted) return;
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

/** Runs `next` in the ambient context with `signal` joined to its own: either one aborting aborts. */
function withSignal(signal: AbortSignal, next: MessageHandler, message: Message): Promise<void> {
  const outer = currentContext();
  const outerSignal = outer?.signal;
  const context: FerryContext = {
    correlationId: outer?.correlationId ?? message.correlationid,
    messageId: outer?.messageId ?? message.id,
    ...(outer?.deadline === undefined ? {} : { deadline: outer.deadline }),
    ...(outer?.traceparent === undefined ? {} : { traceparent: outer.traceparent }),
    signal: outerSignal === undefined ? signal : AbortSignal.any([outerSignal, signal]),
  };
  return runWithContext(context, next, message);
}
