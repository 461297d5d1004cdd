/**
 * The brand is a registered symbol so that `isFerryError` recognises errors thrown by another copy
 * of the package (two versions in one `node_modules` tree), where `instanceof` would fail.
 */
const BRAND = Symbol.for('ferry.error');

/** Options accepted by every Ferry error. */
export interface FerryErrorOptions {
  /** The underlying error, kept for diagnosis. */
  readonly cause?: unknown;
}

/**
 * Base class of every error Ferry throws on purpose. `code` is stable across releases and is what
 * callers should branch on; `message` is for people and may change.
 */
export class FerryError extends Error {
  readonly code: string;
  declare readonly [BRAND]: true;

  constructor(code: string, message: string, options: FerryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
    this.name = new.target.name;
  }
}

/** True for any error raised by Ferry, whichever copy of the package created it. */
export function isFerryError(error: unknown): error is FerryError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === true &&
    typeof (error as { code?: unknown }).code === 'string'
  );
}

/** Builds an `isXxxError` guard for one error code. */
export function errorGuard<E extends FerryError>(code: string): (error: unknown) => error is E {
  return (error: unknown): error is E => isFerryError(error) && error.code === code;
}

/** Raised when options passed to a Ferry factory are invalid. */
export class InvalidOptionsError extends FerryError {
  constructor(message: string) {
    super('INVALID_OPTIONS', message);
  }
}

/** True when `error` is an {@link InvalidOptionsError}. */
export const isInvalidOptionsError = errorGuard<InvalidOptionsError>('INVALID_OPTIONS');
