import { errorGuard, FerryError } from '../errors/ferry-error.js';

/** The circuit breaker is open (or half-open and out of probes): the call was not made. */
export class CircuitOpenError extends FerryError {
  /** Which breaker refused (e.g. the target origin). */
  readonly breaker: string;
  /** When the breaker lets a probe through again (epoch ms), if known. */
  readonly retryAt: number | undefined;
  constructor(breaker: string, retryAt?: number) {
    super('CIRCUIT_OPEN', `circuit breaker "${breaker}" is open: the call was not made`);
    this.breaker = breaker;
    this.retryAt = retryAt;
  }
}
export const isCircuitOpenError = errorGuard<CircuitOpenError>('CIRCUIT_OPEN');

/** The work did not finish in time; its signal was aborted. */
export class TimeoutError extends FerryError {
  readonly timeoutMs: number;
  constructor(timeoutMs: number, what = 'the operation') {
    super('TIMEOUT', `${what} did not finish within ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}
export const isTimeoutError = errorGuard<TimeoutError>('TIMEOUT');

/** The bulkhead is at its concurrency limit and its queue is full: the call was not made. */
export class BulkheadFullError extends FerryError {
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  constructor(maxConcurrent: number, maxQueue: number) {
    super('BULKHEAD_FULL', `bulkhead full: ${maxConcurrent} calls running and ${maxQueue} waiting`);
    this.maxConcurrent = maxConcurrent;
    this.maxQueue = maxQueue;
  }
}
export const isBulkheadFullError = errorGuard<BulkheadFullError>('BULKHEAD_FULL');

/**
 * A retry was warranted but the retry budget is spent: retries already add their maximum share of
 * traffic. `cause` is the error of the last attempt.
 */
export class RetryBudgetExhaustedError extends FerryError {
  readonly attempts: number;
  constructor(attempts: number, cause: unknown) {
    super('RETRY_BUDGET_EXHAUSTED', `retry budget exhausted after ${attempts} attempt(s); not retrying`, {
      cause,
    });
    this.attempts = attempts;
  }
}
export const isRetryBudgetExhaustedError = errorGuard<RetryBudgetExhaustedError>('RETRY_BUDGET_EXHAUSTED');
