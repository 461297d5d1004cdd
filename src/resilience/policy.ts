/** What a policy hands to the function it runs. */
export interface PolicyContext {
  /** Aborted when the work should stop: caller's signal, a timeout, shutdown. Pass it on to I/O. */
  readonly signal: AbortSignal;
  /** 1 for the first try, incremented by a retry policy. */
  readonly attempt: number;
}

/** Options of one execution. */
export interface ExecuteOptions {
  /** Cancels the execution: waiting, retrying and the work itself (through the context's signal). */
  readonly signal?: AbortSignal;
  /** Set by an outer retry policy; policies pass it through. @default 1 */
  readonly attempt?: number;
  /**
   * Epoch ms by which the whole execution must be done, e.g. an incoming request's deadline.
   * Policies pass it through; a timeout policy never waits past it and a retry policy does not start
   * a wait that would end after it. @default undefined (no deadline)
   */
  readonly deadline?: number;
}

/**
 * A resilience policy: runs a function under some rule (retry, timeout, breaker, bulkhead…). Every
 * policy has this one shape, so they compose in any order with `compose`.
 *
 * @example
 * const policy = compose(timeout({ ms: 2000 }), retry({ maxAttempts: 3 }), circuitBreaker());
 * const user = await policy.execute(({ signal }) => fetchUser(42, { signal }));
 */
export interface Policy {
  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T>;
}
