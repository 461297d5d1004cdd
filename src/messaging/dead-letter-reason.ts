import { cutAt } from '../errors/cut-text.js';
import type { DeadLetterReason } from './transport.js';

/**
 * Most UTF-16 units of a dead letter's `reason.message` and `reason.stack`, on every transport: on
 * RabbitMQ both travel as headers of the dead-lettered copy, in the 64 KiB header table it shares
 * with the application's headers (at most 32,768 bytes) and Ferry's own.
 */
export const MAX_REASON_CHARS = 4000;

/**
 * `full` itself when it has at most `max` UTF-16 units, else its start ending in `…`, `max` units
 * at most, never cut between the two halves of a surrogate pair (a lone half has no UTF-8 form);
 * lone surrogates become U+FFFD, as RabbitMQ carries them.
 */
export function cutText(full: string, max = MAX_REASON_CHARS): string {
  // A lone surrogate has no UTF-8 form: RabbitMQ carries U+FFFD in its place, and so does memory.
  return cutAt((full as unknown as { toWellFormed(): string }).toWellFormed(), max);
}

/** The reason a transport stores with a dead letter: its message and stack cut by {@link cutText}. */
export function cutReason(reason: DeadLetterReason): DeadLetterReason {
  const message = cutText(reason.message);
  const stack = reason.stack === undefined ? undefined : cutText(reason.stack);
  if (message === reason.message && stack === reason.stack) return reason;
  return stack === undefined ? { kind: reason.kind, message } : { kind: reason.kind, message, stack };
}
