import type { ServerResponse } from 'node:http';

/**
 * Responses whose answer is final though a 5xx (a problem whose outcome is unknown: the request may
 * have been carried out): the idempotency middleware keeps it for the request's key and replays it,
 * instead of releasing the key for the request to run again.
 */
const finalAnswers = new WeakSet<ServerResponse>();

/** Marks `res`'s answer final for its `Idempotency-Key` (see {@link isFinalAnswer}). */
export function markFinalAnswer(res: ServerResponse): void {
  finalAnswers.add(res);
}

/** Whether `res`'s answer was marked final by {@link markFinalAnswer}. */
export function isFinalAnswer(res: ServerResponse): boolean {
  return finalAnswers.has(res);
}
