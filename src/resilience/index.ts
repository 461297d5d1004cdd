export type {
  Backoff,
  DecorrelatedJitterOptions,
  ExponentialBackoffOptions,
  ExponentialBackoffStrategyOptions,
} from './backoff.js';
export {
  constantBackoff,
  DEFAULT_DECORRELATED_JITTER,
  DEFAULT_EXPONENTIAL_BACKOFF,
  DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY,
  decorrelatedJitter,
  exponentialBackoff,
  exponentialDelays,
} from './backoff.js';
export type { RetryBudgetOptions, RetryBudgetStats } from './budget.js';
export { DEFAULT_RETRY_BUDGET, RetryBudget } from './budget.js';
export type { BulkheadOptions, BulkheadStats } from './bulkhead.js';
export { Bulkhead, bulkhead, DEFAULT_BULKHEAD } from './bulkhead.js';
export type {
  CircuitBreakerOptions,
  CircuitBreakerSnapshot,
  CircuitBreakerStats,
  CircuitState,
  CircuitStateChange,
} from './circuit-breaker.js';
export { CircuitBreaker, circuitBreaker, DEFAULT_CIRCUIT_BREAKER } from './circuit-breaker.js';
export { compose, noop } from './compose.js';
export {
  BulkheadFullError,
  CircuitOpenError,
  isBulkheadFullError,
  isCircuitOpenError,
  isRetryBudgetExhaustedError,
  isTimeoutError,
  RetryBudgetExhaustedError,
  TimeoutError,
} from './errors.js';
export type { ExecuteOptions, Policy, PolicyContext } from './policy.js';
export type { RetryBudgetLike, RetryInfo, RetryOptions } from './retry.js';
export { DEFAULT_RETRY, defaultShouldRetry, RetryPolicy, retry } from './retry.js';
export type { TimeoutOptions } from './timeout.js';
export { TimeoutPolicy, timeout } from './timeout.js';
