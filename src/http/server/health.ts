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

/** A readiness check: resolves when the dependency is usable, throws or rejects when it is not. */
export type HealthCheck = (signal: AbortSignal) => Promise<void> | void;

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
}

export const DEFAULT_HEALTH_OPTIONS = Object.freeze({ timeoutMs: 2000 });

/** Liveness and readiness of a service. */
export interface Health {
  /** Is the process alive? Always ok while it can answer: restarting would not help anything else. */
  live(): Promise<HealthReport>;
  /** Can it serve traffic? Runs every check (in parallel, each bounded) and looks at the breakers. */
  ready(): Promise<HealthReport>;
}

const FAILING_BREAKER_STATES = new Set(['open', 'isolated']);

/**
 * Builds liveness and readiness probes. Breakers are reported as `breaker:<name>`.
 *
 * @example
 * const health = createHealth({ checks: { db: () => pool.query('select 1') }, breakers: () => users.breakers() });
 */
export function createHealth(options: HealthOptions = {}): Health {
  const checks = Object.entries(options.checks ?? {});
  const timeoutMs = options.timeoutMs ?? DEFAULT_HEALTH_OPTIONS.timeoutMs;
  return {
    live: async () => ({ status: 'ok', checks: {} }),
    ready: async () => {
      const results: Record<string, HealthCheckResult> = {};
      await Promise.all(
        checks.map(async ([name, check]) => {
          results[name] = await runCheck(check, timeoutMs);
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

async function runCheck(check: HealthCheck, timeoutMs: number): Promise<HealthCheckResult> {
  const started = performance.now();
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`timed out after ${timeoutMs} ms`);
      controller.abort(error);
      reject(error);
    }, timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(() => check(controller.signal)), timedOut]);
    return { status: 'ok', durationMs: elapsed(started) };
  } catch (error) {
    return { status: 'fail', error: describe(error), durationMs: elapsed(started) };
  } finally {
    clearTimeout(timer);
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
  /** Prefix of the endpoints: `GET <path>/live` and `GET <path>/ready`. @default '/health' */
  readonly path?: string;
}

export const DEFAULT_HEALTH_PATH = '/health';
