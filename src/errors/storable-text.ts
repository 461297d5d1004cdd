import { describeValue } from './describe-value.js';
import { InvalidOptionsError } from './ferry-error.js';

/** `String.prototype.toWellFormed` and `isWellFormed` (Node 20), not yet in TypeScript's ES2023 library. */
interface WellFormed {
  toWellFormed(): string;
  isWellFormed(): boolean;
}

/**
 * `text` as every storage can keep it, and keeps it alike: NUL and lone surrogates as U+FFFD.
 * PostgreSQL refuses a NUL in text (`invalid byte sequence for encoding "UTF8": 0x00`), so an error
 * text holding one could never be recorded: the relay would retry recording it forever, and the
 * message would never be set aside; a subscription could never park its event. A lone surrogate has no UTF-8 form: PostgreSQL and SQLite would
 * store U+FFFD for it, the memory store the surrogate itself.
 */
export function storableText(text: string): string {
  const wellFormed = (text as unknown as WellFormed).toWellFormed();
  return wellFormed.includes('\u0000') ? wellFormed.replaceAll('\u0000', '\uFFFD') : wellFormed;
}

/**
 * Whether every store keeps `text` as it is ({@link storableText} would change nothing): no NUL, no
 * lone surrogate. Without copying the text.
 */
export function isStorableText(text: string): boolean {
  return !text.includes('\u0000') && (text as unknown as WellFormed).isWellFormed();
}

/**
 * Refuses a key (a message id, an inbox or idempotency key, a consumer name) that the stores would
 * not keep apart alike: not a string, or holding NUL (PostgreSQL text cannot hold it) or a lone
 * surrogate (PostgreSQL would take it as U+FFFD, the key of another message). @throws InvalidOptionsError
 */
export function assertStorableKey(what: string, value: unknown): asserts value is string {
  if (typeof value === 'string' && isStorableText(value)) return;
  throw new InvalidOptionsError(
    `${what} must be a string without NUL or lone surrogates, which the stores cannot keep apart, not ${describeValue(value)}`,
  );
}
