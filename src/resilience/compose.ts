import { setMaxListeners } from 'node:events';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import type { ExecuteOptions, Policy, PolicyContext } from './policy.js';

/**
 * The context Ferry's policies actually hand on: a {@link PolicyContext} that also carries the
 * execution's deadline, so that `compose` can pass a deadline tightened by a timeout to the policies
 * inside it. Functions see it as a plain `PolicyContext`.
 * @internal
 */
export type DeadlineContext = PolicyContext & { readonly deadline?: number };

/**
 * The signal given to functions when the caller passed none. Shared (allocating a controller per
 * call would cost more than a whole breaker call) and never aborted; functions may add abort
 * listeners to it freely, hence no listener limit warning.
 * @internal
 */
export const NEVER_ABORTED: AbortSignal = new AbortController().signal;
setMaxListeners(0, NEVER_ABORTED);

const DEFAULT_CONTEXT: DeadlineContext = Object.freeze({ signal: NEVER_ABORTED, attempt: 1 });

/**
 * The context a pass-through policy hands to its function: the caller's signal, attempt and
 * deadline. Allocates nothing when the caller gave no options.
 * @internal
 */
export function contextOf(options: ExecuteOptions | undefined): DeadlineContext {
  if (options === undefined) return DEFAULT_CONTEXT;
  const signal = options.signal ?? NEVER_ABORTED;
  const attempt = options.attempt ?? 1;
  return options.deadline === undefined
    ? { signal, attempt }
    : { signal, attempt, deadline: options.deadline };
}

/** Runs `fn` and turns a synchronous throw into a rejection. @internal */
export function invoke<T>(
  fn: (context: PolicyContext) => PromiseLike<T> | T,
  context: PolicyContext,
): Promise<T> {
  try {
    return Promise.resolve(fn(context));
  } catch (error) {
    return Promise.reject(error);
  }
}

/** The policy that only runs the function: the neutral element of {@link compose}. */
export const noop: Policy = Object.freeze({
  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    return invoke(fn, contextOf(options));
  },
});

/**
 * Combines policies into one; the first is outermost. `compose(timeout, retry, breaker).execute(fn)`
 * runs `timeout(retry(breaker(fn)))`: the timeout bounds all attempts together, and every attempt goes
 * through the breaker. Each policy's context (signal, attempt, deadline) becomes the options of the
 * next one, so `fn` gets the innermost signal and the attempt number set by the retry policy.
 *
 * A bulkhead belongs inside any timeout (`compose(retry, timeout, bulkhead, breaker)`): a timeout
 * rejects at once while the work may go on, and only a bulkhead inside it keeps the slot until the
 * work really ends; outside it, the slot is freed early and concurrency is no longer bounded.
 *
 * @example
 * const perAttempt = compose(retry({ maxAttempts: 3 }), timeout({ ms: 500 })); // 500 ms per attempt
 * const overall = compose(timeout({ ms: 2000 }), retry({ maxAttempts: 3 }));   // 2 s for all of them
 */
export function compose(...policies: readonly Policy[]): Policy {
  policies.forEach(checkPolicy);
  if (policies.length === 0) return noop;
  if (policies.length === 1) return policies[0]!;
  return new ComposedPolicy(policies);
}

/**
 * A policy is an object with `execute`: anything else (`timeout` not called, `null`) failed every
 * execution with a TypeError. @throws InvalidOptionsError
 */
function checkPolicy(policy: unknown, index: number): void {
  if (typeof (policy as { execute?: unknown } | null | undefined)?.execute === 'function') return;
  const hint =
    typeof policy === 'function'
      ? ` (a policy factory not called? ${factoryCall(policy.name)}, not ${policy.name || 'the function'})`
      : '';
  throw new InvalidOptionsError(
    `compose takes policies (objects with an execute method): argument ${index} is ${describeValue(policy)}${hint}`,
  );
}

class ComposedPolicy implements Policy {
  readonly #policies: readonly Policy[];

  constructor(policies: readonly Policy[]) {
    this.#policies = [...policies];
  }

  execute<T>(fn: (context: PolicyContext) => PromiseLike<T> | T, options?: ExecuteOptions): Promise<T> {
    return this.#run(0, fn, options);
  }

  #run<T>(
    index: number,
    fn: (context: PolicyContext) => PromiseLike<T> | T,
    options: ExecuteOptions | undefined,
  ): Promise<T> {
    const policy = this.#policies[index]!;
    if (index === this.#policies.length - 1) return policy.execute(fn, options);
    const outerDeadline = options?.deadline;
    return policy.execute(
      (context: DeadlineContext) => this.#run(index + 1, fn, optionsOf(context, outerDeadline)),
      options,
    );
  }
}

/** What an inner policy receives from the context of the policy around it. */
function optionsOf(context: DeadlineContext, outerDeadline: number | undefined): ExecuteOptions {
  // The context has the shape of the options: hand it on as it is, unless a policy from elsewhere
  // dropped the deadline, which the caller's still applies then.
  if (context.deadline !== undefined || outerDeadline === undefined) return context;
  return { signal: context.signal, attempt: context.attempt, deadline: outerDeadline };
}

/** How the factory named `name` is called: each takes its options object. */
function factoryCall(name: string): string {
  const example: Record<string, string> = {
    timeout: 'timeout({ ms: 1000 })',
    retry: 'retry({ maxAttempts: 3 })',
    bulkhead: 'bulkhead({ maxConcurrent: 10 })',
    circuitBreaker: 'circuitBreaker({})',
  };
  return Object.hasOwn(example, name) ? (example[name] as string) : `${name || 'it'} called with its options`;
}
