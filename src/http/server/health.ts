import { describeValue } from '../../errors/describe-value.js';
import { InvalidOptionsError } from '../../errors/ferry-error.js';
import { MAX_TIMER_MS } from '../../time/max-timer.js';

/** Result of one check or dependency. */
export interface HealthCheckResult {
  readonly status: 'ok' | 'fail';
  /** Why it failed. Health endpoints are for the orchestrator: do not expose them publicly. */
  readonly error?: string;
  readonly durationMs: number;
}

/** The body of a health endpoint; the adapters answer 200 for `ok` and 503 for `fail`. */
export interface HealthReport {
  readonly status: 'ok' | 'fail';
  readonly checks: Readonly<Record<string, HealthCheckResult>>;
}

/**
 * A readiness check: resolves when the dependency is usable, throws or rejects when it is not. What it
 * resolves to is ignored (`() => pool.query('SELECT 1')` is a check).
 */
export type HealthCheck = (signal: AbortSignal) => unknown;

/** Something with circuit breakers, e.g. `() => client.breakers()` of a `ServiceClient`. */
export type BreakerSource = () => Iterable<{ readonly name: string; readonly state: string }>;

/** Options of {@link createHealth}. */
export interface HealthOptions {
  /** Readiness checks by name (database ping, broker connection…). @default {} */
  readonly checks?: Readonly<Record<string, HealthCheck>>;
  /** Circuit breakers to report; an open or isolated one makes the service not ready. @default none */
  readonly breakers?: BreakerSource;
  /** Longest a check may take before it counts as failed; its signal is aborted then. @default 2000 */
  readonly timeoutMs?: number;
  /**
   * How long a check's result is reused by later probes, from when it is known. Probes arriving
   * while a check runs always share that run, cache or not, so that a burst of probes (several
   * orchestrators, load balancers, a dashboard) costs the dependency one check. `0` turns the
   * cache off but still shares runs.
   * @default 1000
   */
  readonly cacheMs?: number;
}

export const DEFAULT_HEALTH_OPTIONS = Object.freeze({ timeoutMs: 2000, cacheMs: 1000 });

/** Liveness and readiness of a service. */
export interface Health {
  /** Is the process alive? Always ok while it can answer: restarting would not help anything else. */
  live(): Promise<HealthReport>;
  /**
   * Can it serve traffic? Runs every check (in parallel, each bounded; concurrent probes share one
   * run of each, and a recent result is reused for `cacheMs`) and looks at the breakers.
   */
  ready(): Promise<HealthReport>;
}

/**
 * Checks are functions and `breakers` one giving breakers: a string check failed readiness for
 * ever, and breakers given as an array answered every readiness probe with a 500.
 * @throws InvalidOptionsError
 */
function checkHealthSources(options: HealthOptions): void {
  const checks: unknown = options.checks;
  if (checks !== undefined) {
    if (typeof checks !== 'object' || checks === null || Array.isArray(checks)) {
      throw new InvalidOptionsError(
        `health checks must be an object of named check functions, not ${describeValue(checks)}`,
      );
    }
    for (const [name, check] of Object.entries(checks)) {
      if (typeof check !== 'function') {
        throw new InvalidOptionsError(
          `health check ${JSON.stringify(name)} must be a function (signal) => Promise, e.g. () => pool.query('SELECT 1'), not ${describeValue(check)}`,
        );
      }
    }
  }
  const breakers: unknown = options.breakers;
  if (breakers !== undefined && typeof breakers !== 'function') {
    throw new InvalidOptionsError(
      `health breakers must be a function giving breakers, e.g. () => client.breakers(), not ${describeValue(breakers)}`,
    );
  }
}

const FAILING_BREAKER_STATES = new Set(['open', 'isolated']);

/**
 * Builds liveness and readiness probes. Breakers are reported as `breaker:<name>`, read afresh on
 * every probe.
 *
 * @example
 * const health = createHealth({ checks: { db: () => pool.query('select 1') }, breakers: () => users.breakers() });
 */
export function createHealth(options: HealthOptions = {}): Health {
  const timeoutMs = options.timeoutMs ?? DEFAULT_HEALTH_OPTIONS.timeoutMs;
  const cacheMs = options.cacheMs ?? DEFAULT_HEALTH_OPTIONS.cacheMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_TIMER_MS) {
    throw new InvalidOptionsError(`timeoutMs must be a positive number up to 2^31 - 1, got ${timeoutMs}`);
  }
  if (!Number.isFinite(cacheMs) || cacheMs < 0) {
    throw new InvalidOptionsError(`cacheMs must be a non-negative number, got ${cacheMs}`);
  }
  checkHealthSources(options);
  const checks = Object.entries(options.checks ?? {}).map(
    ([name, check]) => [name, new SharedCheck(check, timeoutMs, cacheMs)] as const,
  );
  return {
    live: async () => ({ status: 'ok', checks: {} }),
    ready: async () => {
      const results: Record<string, HealthCheckResult> = {};
      await Promise.all(
        checks.map(async ([name, check]) => {
          results[name] = await check.result();
        }),
      );
      for (const breaker of options.breakers?.() ?? []) {
        const failing = FAILING_BREAKER_STATES.has(breaker.state.toLowerCase());
        results[`breaker:${breaker.name}`] = failing
          ? { status: 'fail', error: `circuit ${breaker.state}`, durationMs: 0 }
          : { status: 'ok', durationMs: 0 };
      }
      const ok = Object.values(results).every((r) => r.status === 'ok');
      return { status: ok ? 'ok' : 'fail', checks: results };
    },
  };
}

/**
 * One check as the probes see it: at most one run at a time, its result reused for `cacheMs`.
 * A run is over when the check settles, not when it times out: a check that ignores its aborted
 * signal is not started again on top of itself, and probes meanwhile get the timed-out result.
 */
class SharedCheck {
  readonly #check: HealthCheck;
  readonly #timeoutMs: number;
  readonly #cacheMs: number;
  /** The result of the run in progress (settled already once it timed out). */
  #running: Promise<HealthCheckResult> | undefined;
  #cached: { readonly result: HealthCheckResult; readonly until: number } | undefined;

  constructor(check: HealthCheck, timeoutMs: number, cacheMs: number) {
    this.#check = check;
    this.#timeoutMs = timeoutMs;
    this.#cacheMs = cacheMs;
  }

  result(): Promise<HealthCheckResult> {
    if (this.#running !== undefined) return this.#running;
    const cached = this.#cached;
    if (cached !== undefined && Date.now() < cached.until) return Promise.resolve(cached.result);
    return this.#run();
  }

  #run(): Promise<HealthCheckResult> {
    const started = performance.now();
    const controller = new AbortController();
    let settle!: (result: HealthCheckResult) => void;
    const result = new Promise<HealthCheckResult>((resolve) => {
      settle = resolve;
    });
    let done = false;
    const finish = (outcome: HealthCheckResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (this.#cacheMs > 0) this.#cached = { result: outcome, until: Date.now() + this.#cacheMs };
      settle(outcome);
    };
    const timer = setTimeout(() => {
      const error = new Error(`timed out after ${this.#timeoutMs} ms`);
      controller.abort(error);
      finish({ status: 'fail', error: error.message, durationMs: elapsed(started) });
    }, this.#timeoutMs);
    this.#running = result;
    Promise.resolve()
      .then(() => this.#check(controller.signal))
      .then(
        () => finish({ status: 'ok', durationMs: elapsed(started) }),
        (error: unknown) => finish({ status: 'fail', error: describe(error), durationMs: elapsed(started) }),
      )
      .finally(() => {
        // Only now may another run start: until the check settles, it is still using the dependency.
        if (this.#running === result) this.#running = undefined;
      });
    return result;
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Health options of the server adapters: where the endpoints live, and what they check. */
export interface HealthRouteOptions extends HealthOptions {
  /**
   * Prefix of the endpoints: `GET <path>/live` and `GET <path>/ready`. One or more segments, each
   * `/` and letters, digits, `-`, `.`, `_` or `~` (not `.` or `..`), with no trailing slash, e.g.
   * `'/health'` or `'/_internal/health'`.
   * @default '/health'
   */
  readonly path?: string;
}

export const DEFAULT_HEALTH_PATH = '/health';

/**
 * Segments of unreserved characters only: they mean the same to every client and framework. A
 * path without a leading slash, with a query, `%`-escapes or spaces never matched a request (the
 * readiness route silently absent), and Fastify took `:` and `*` as parameters or refused the path
 * with its own assertion; `.` and `..` segments are resolved away by clients before sending.
 */
const HEALTH_PATH = /^(?:\/(?!\.{1,2}(?:\/|$))[A-Za-z0-9._~-]+)+$/;

/**
 * The prefix of the health endpoints, `path` checked: one the adapters can route.
 * @throws InvalidOptionsError
 */
export function healthPathOf(options: HealthRouteOptions): string {
  // Only left out is the default: null is no path.
  const path: unknown = options.path === undefined ? DEFAULT_HEALTH_PATH : options.path;
  if (typeof path !== 'string' || !HEALTH_PATH.test(path)) {
    throw new InvalidOptionsError(
      `health path must be a path such as '/health': segments of letters, digits, '-', '.', '_' or '~', each after a '/', no trailing '/', not ${describeValue(path)}`,
    );
  }
  return path;
}
