import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * An inbox claim is no longer its holder's: its lease lapsed (the holder was frozen, cut off or too
 * slow to renew) and another delivery took the key over, or the holder already released it. Nothing
 * was recorded for the key; the delivery that holds it now decides its outcome.
 */
export class ClaimLostError extends FerryError {
  readonly key: string;
  constructor(key: string) {
    super('CLAIM_LOST', `the inbox claim on "${key}" was lost: another delivery holds the key now`);
    this.key = key;
  }
}

/** True when `error` is a {@link ClaimLostError}. */
export const isClaimLostError = errorGuard<ClaimLostError>('CLAIM_LOST');
