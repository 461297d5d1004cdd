import type { Dispatcher, Pool } from 'undici';
import { currentContext } from '../context/context.js';
import { InvalidOptionsError, isFerryError } from '../errors/ferry-error.js';
import { uuidv7 } from '../messaging/message-id.js';
import { type Backoff, exponentialBackoff } from '../resilience/backoff.js';
import { RetryBudget, type RetryBudgetOptions } from '../resilience/budget.js';
import { bulkhead } from '../resilience/bulkhead.js';
import { CircuitBreaker, type CircuitBreakerOptions } from '../resilience/circuit-breaker.js';
import { compose } from '../resilience/compose.js';
import { TimeoutError } from '../resilience/errors.js';
import type { Policy } from '../resilience/policy.js';
import { retry } from '../resilience/retry.js';
import { timeout } from '../resilience/timeout.js';
import { type ClientEventMap, ClientEvents } from './client-events.js';
import { HttpError, type ProblemDetails } from './errors.js';
import { HTTP_HEADER, PROBLEM_CONTENT_TYPE } from './headers.js';
import { childTraceparent, newTraceparent } from './server/request-context.js';

/** Retry settings of a client or a call. */
export interface ClientRetryOptions {
  /** Attempts in all, the first included. @default 3 */
  readonly maxAttempts?: number;
  /** Wait before each retry. @default exponential, full jitter, 100 ms doubling up to 5 s */
  readonly backoff?: Backoff;
  /** Longest `Retry-After` honoured; a longer one ends the retries. @default 30000 */
  readonly maxRetryAfterMs?: number;
  /** Statuses retried (for requests that are safe to retry). @default [408, 429, 502, 503, 504] */
  readonly statuses?: readonly number[];
}

/** Options of a {@link ServiceClient}; every one but `name` and the pool's can be overridden per call. */
export interface ServiceClientOptions {
  /** Names the target in errors and events. @default the origin */
  readonly name?: string;
  /** Per-attempt timeout in ms. @default 5000 */
  readonly timeout?: number;
  /** Overall budget of a call in ms, retries and waits included; an ambient deadline may shorten it. @default none */
  readonly deadline?: number;
  /** `false` turns retries off. @default { maxAttempts: 3 } for requests that are safe to retry */
  readonly retry?: false | ClientRetryOptions;
  /** Retries may add at most this share of requests (`false`: unlimited). @default { ratio: 0.2, minRetriesPerSecond: 10 } */
  readonly retryBudget?: false | RetryBudgetOptions;
  /**
   * Circuit breakers, one per target: per origin, or per route (method and path template, see the
   * call option `route`). `false` turns them off. Connection errors, timeouts, 5xx and 429 count as
   * failures; other 4xx do not. @default { key: 'origin' } with the breaker's defaults
   */
  readonly breaker?:
    | false
    | (Omit<CircuitBreakerOptions, 'isFailure' | 'name'> & { readonly key?: 'origin' | 'route' });
  /** Bounds concurrent calls and those waiting; `false` turns it off. @default { maxConcurrent: 256, maxQueue: 1024 } */
  readonly bulkhead?: false | { readonly maxConcurrent?: number; readonly maxQueue?: number };
  /** Headers sent with every request. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Keep-alive connections to the origin. @default 64 */
  readonly connections?: number;
  /** A dispatcher of your own (an undici Agent, a mock…) instead of the client's pool. */
  readonly dispatcher?: Dispatcher;
}

export const DEFAULT_SERVICE_CLIENT_OPTIONS = Object.freeze({
  timeout: 5000,
  retry: Object.freeze({
    maxAttempts: 3,
    maxRetryAfterMs: 30_000,
    statuses: Object.freeze([408, 429, 502, 503, 504]),
  }),
  retryBudget: Object.freeze({ ratio: 0.2, minRetriesPerSecond: 10 }),
  bulkhead: Object.freeze({ maxConcurrent: 256, maxQueue: 1024 }),
  connections: 64,
});

/** Options of one call. */
export interface CallOptions {
  readonly headers?: Readonly<Record<string, string>>;
  /** Per-attempt timeout in ms. */
  readonly timeout?: number;
  /** Overall budget in ms. */
  readonly deadline?: number;
  readonly signal?: AbortSignal;
  readonly retry?: false | ClientRetryOptions;
  /**
   * Makes a POST or PATCH safe to retry: the server stores the first response under this key. With
   * retries on, the client generates one when none is given.
   */
  readonly idempotencyKey?: string;
  /** Path template for per-route breakers, e.g. `/users/:id` (default: the path without its query). */
  readonly route?: string;
  /** Query parameters, appended to the path. */
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
}

/** A request for {@link ServiceClient.request}. */
export interface RequestInit extends CallOptions {
  readonly method: string;
  readonly path: string;
  /** A plain value is sent as JSON; a string or bytes as they are. */
  readonly body?: unknown;
}

/** A response: the body parsed as JSON when the server said JSON, else text (undefined when empty). */
export interface ServiceResponse<T = unknown> {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: T;
}

const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** Errors raised before anything was sent: safe to retry whatever the method. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN']);
/** Connection-level errors: retried for requests that are safe to retry. */
const CONNECTION_CODES = new Set([
  ...NOT_SENT_CODES,
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  const causeCode = (
    (error as { cause?: { code?: unknown } } | null)?.cause as { code?: unknown } | undefined
  )?.code;
  return typeof code === 'string' ? code : typeof causeCode === 'string' ? causeCode : undefined;
}

/** `Retry-After`: delay seconds or an HTTP date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === '') return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function isJson(contentType: string | string[] | undefined): boolean {
  const type = (Array.isArray(contentType) ? contentType[0] : contentType)
    ?.split(';')[0]
    ?.trim()
    .toLowerCase();
  return type === 'application/json' || (type?.endsWith('+json') ?? false);
}

/**
 * A resilient HTTP client for one service, on an undici keep-alive pool: per-attempt timeouts and
 * an overall deadline (propagated to the callee), retries with jittered backoff for what is safe to
 * retry under a shared retry budget, a circuit breaker per target and a bulkhead. The ambient
 * correlation id and trace context travel with every call.
 *
 * @example
 * const users = new ServiceClient('http://127.0.0.1:3001', { name: 'users', timeout: 2000 });
 * const user = await users.get<User>('/users/42');
 * await users.post('/orders', order, { idempotencyKey: order.id });
 */
export class ServiceClient {
  readonly name: string;
  readonly origin: string;
  readonly #options: ServiceClientOptions;
  readonly #budget: RetryBudget | undefined;
  readonly #bulkhead: (Policy & { stats(): { running: number; queued: number } }) | undefined;
  readonly #breakers = new Map<string, CircuitBreaker>();
  readonly #events = new ClientEvents();
  #dispatcher: Dispatcher | undefined;
  #closed = false;

  constructor(baseUrl: string, options: ServiceClientOptions = {}) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new InvalidOptionsError(
        `ServiceClient needs an absolute http(s) URL, not ${JSON.stringify(baseUrl)}`,
      );
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new InvalidOptionsError(`ServiceClient speaks http and https, not ${url.protocol}`);
    }
    this.origin = url.origin;
    this.name = options.name ?? url.origin;
    this.#options = options;
    validateTimes(options);
    this.#budget =
      options.retryBudget === false
        ? undefined
        : new RetryBudget({ ...DEFAULT_SERVICE_CLIENT_OPTIONS.retryBudget, ...options.retryBudget });
    this.#bulkhead =
      options.bulkhead === false
        ? undefined
        : bulkhead({ ...DEFAULT_SERVICE_CLIENT_OPTIONS.bulkhead, ...options.bulkhead });
    this.#dispatcher = options.dispatcher;
  }

  /** Subscribes to `attempt`, `retry`, `response`, `breaker` (state changes) and `rejection` events. */
  on<K extends keyof ClientEventMap>(event: K, listener: (payload: ClientEventMap[K]) => void): () => void {
    return this.#events.on(event, listener);
  }

  /** Breaker states by key, for health checks and dashboards. */
  breakers(): { name: string; state: string }[] {
    return [...this.#breakers].map(([name, breaker]) => ({ name, state: breaker.state }));
  }

  /** Calls running and waiting in the bulkhead. */
  bulkheadStats(): { running: number; queued: number } | undefined {
    return this.#bulkhead?.stats();
  }

  get<T = unknown>(path: string, options?: CallOptions): Promise<T> {
    return this.#bodyOf<T>({ ...options, method: 'GET', path });
  }

  delete<T = unknown>(path: string, options?: CallOptions): Promise<T> {
    return this.#bodyOf<T>({ ...options, method: 'DELETE', path });
  }

  post<T = unknown>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
    return this.#bodyOf<T>({ ...options, method: 'POST', path, body });
  }

  put<T = unknown>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
    return this.#bodyOf<T>({ ...options, method: 'PUT', path, body });
  }

  patch<T = unknown>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
    return this.#bodyOf<T>({ ...options, method: 'PATCH', path, body });
  }

  /** The parsed body of a 2xx response; any other status rejects with `HttpError`. */
  async #bodyOf<T>(init: RequestInit): Promise<T> {
    const response = await this.#call(init, true);
    return response.body as T;
  }

  /**
   * Any request; resolves the final response whatever its status (after retries), rejecting only
   * when there is none: connection failure, timeout, open breaker, full bulkhead, spent budget.
   */
  request<T = unknown>(init: RequestInit): Promise<ServiceResponse<T>> {
    return this.#call(init, false) as Promise<ServiceResponse<T>>;
  }

  async #call(init: RequestInit, throwOnStatus: boolean): Promise<ServiceResponse> {
    if (this.#closed) throw new InvalidOptionsError(`ServiceClient ${this.name} is closed`);
    const method = init.method.toUpperCase();
    const context = currentContext();
    const now = Date.now();
    const deadlineMs = init.deadline ?? this.#options.deadline;
    let deadline = deadlineMs === undefined ? undefined : now + deadlineMs;
    if (context?.deadline !== undefined && (deadline === undefined || context.deadline < deadline)) {
      deadline = context.deadline;
    }
    if (deadline !== undefined && deadline <= now) {
      this.#events.emit('rejection', { client: this.name, method, path: init.path, reason: 'deadline' });
      throw new TimeoutError(deadlineMs ?? 0, `${method} ${init.path} (deadline already passed)`);
    }

    const retryOptions = init.retry ?? this.#options.retry;
    const retrySettings =
      retryOptions === false ? undefined : { ...DEFAULT_SERVICE_CLIENT_OPTIONS.retry, ...retryOptions };
    let idempotencyKey = init.idempotencyKey;
    if (
      idempotencyKey === undefined &&
      retrySettings !== undefined &&
      (method === 'POST' || method === 'PATCH')
    ) {
      idempotencyKey = uuidv7();
    }
    const safeToRetry = IDEMPOTENT_METHODS.has(method) || idempotencyKey !== undefined;

    // Explicit headers win over the ambient context's.
    const headers: Record<string, string> = {
      [HTTP_HEADER.correlationId]: context?.correlationId ?? uuidv7(),
      [HTTP_HEADER.traceparent]: context?.traceparent
        ? childTraceparent(context.traceparent)
        : newTraceparent(),
      ...this.#options.headers,
      ...init.headers,
    };
    if (idempotencyKey !== undefined) headers[HTTP_HEADER.idempotencyKey] = idempotencyKey;
    let payload: string | Uint8Array | undefined;
    if (init.body !== undefined) {
      if (typeof init.body === 'string' || init.body instanceof Uint8Array) payload = init.body;
      else {
        payload = JSON.stringify(init.body);
        headers['content-type'] ??= 'application/json';
      }
    }
    const path = withQuery(init.path, init.query);
    const url = `${this.origin}${path}`;
    const statuses = retrySettings?.statuses ?? DEFAULT_SERVICE_CLIENT_OPTIONS.retry.statuses;
    const breaker = this.#breaker(method, init.route ?? init.path.split('?')[0]!);
    const attemptTimeout = init.timeout ?? this.#options.timeout ?? DEFAULT_SERVICE_CLIENT_OPTIONS.timeout;

    const attempt = async ({ signal, attempt: n }: { signal: AbortSignal; attempt: number }) => {
      this.#events.emit('attempt', { client: this.name, method, path, attempt: n });
      if (deadline !== undefined) headers[HTTP_HEADER.deadline] = String(Math.max(0, deadline - Date.now()));
      const started = performance.now();
      const response = await this.#dispatch(method, path, headers, payload, signal);
      const body = await readBody(response);
      this.#events.emit('response', {
        client: this.name,
        method,
        path,
        attempt: n,
        status: response.statusCode,
        durationMs: performance.now() - started,
      });
      if (
        response.statusCode >= 400 &&
        (response.statusCode >= 500 || statuses.includes(response.statusCode) || throwOnStatus)
      ) {
        throw new HttpError({
          status: response.statusCode,
          method,
          url,
          headers: response.headers,
          body,
          problem: problemOf(response.headers, body),
          retryAfterMs: parseRetryAfter(response.headers['retry-after']),
        });
      }
      return { status: response.statusCode, headers: response.headers, body };
    };

    const policies: Policy[] = [];
    if (this.#bulkhead !== undefined) policies.push(this.#bulkhead);
    if (retrySettings !== undefined && retrySettings.maxAttempts > 1) {
      policies.push(
        retry({
          maxAttempts: retrySettings.maxAttempts,
          backoff: retrySettings.backoff ?? exponentialBackoff({ initialDelayMs: 100, maxDelayMs: 5000 }),
          ...(this.#budget === undefined ? {} : { budget: this.#budget }),
          shouldRetry: (error) => {
            if (isHttpError(error)) {
              if (!safeToRetry || !statuses.includes(error.status)) return false;
              return error.retryAfterMs === undefined || error.retryAfterMs <= retrySettings.maxRetryAfterMs;
            }
            if (isFerryError(error)) return error.code === 'TIMEOUT' && safeToRetry;
            const code = errorCode(error);
            if (code === undefined || !CONNECTION_CODES.has(code)) return false;
            return safeToRetry || NOT_SENT_CODES.has(code);
          },
          onRetry: ({ attempt: n, delayMs, error }) =>
            this.#events.emit('retry', { client: this.name, method, path, attempt: n, delayMs, error }),
        }),
      );
    }
    if (breaker !== undefined) policies.push(breaker);
    policies.push(timeout({ ms: attemptTimeout }));

    try {
      return await compose(...policies).execute(attempt, {
        ...(init.signal === undefined ? {} : { signal: init.signal }),
        ...(deadline === undefined ? {} : { deadline }),
      });
    } catch (error) {
      if (isHttpError(error) && !throwOnStatus) {
        return { status: error.status, headers: error.headers, body: error.body };
      }
      if (isFerryError(error) && error.code !== 'HTTP_ERROR' && error.code !== 'TIMEOUT') {
        this.#events.emit('rejection', { client: this.name, method, path, reason: error.code, error });
      }
      throw error;
    }
  }

  #breaker(method: string, route: string): CircuitBreaker | undefined {
    const options = this.#options.breaker;
    if (options === false) return undefined;
    const { key = 'origin', ...settings } = options ?? {};
    const name = key === 'route' ? `${this.name} ${method} ${route}` : this.name;
    let breaker = this.#breakers.get(name);
    if (breaker === undefined) {
      breaker = new CircuitBreaker({ ...settings, name, isFailure });
      breaker.onStateChange((change) =>
        this.#events.emit('breaker', { client: this.name, breaker: name, ...change }),
      );
      this.#breakers.set(name, breaker);
    }
    return breaker;
  }

  async #dispatch(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: string | Uint8Array | undefined,
    signal: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    const dispatcher = this.#dispatcher ?? (await this.#createPool());
    return dispatcher.request({
      origin: this.origin,
      method: method as Dispatcher.HttpMethod,
      path,
      headers,
      body: body ?? null,
      signal,
    });
  }

  async #createPool(): Promise<Pool> {
    const { Pool } = await import('undici');
    // Check again: another call may have created it while this one awaited the import.
    if (this.#dispatcher !== undefined) return this.#dispatcher as Pool;
    const pool = new Pool(this.origin, {
      connections: this.#options.connections ?? DEFAULT_SERVICE_CLIENT_OPTIONS.connections,
      keepAliveTimeout: 10_000,
    });
    this.#dispatcher = pool;
    return pool;
  }

  /** Closes the connection pool (a dispatcher passed in options is left to its owner). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#options.dispatcher === undefined) await (this.#dispatcher as Pool | undefined)?.close();
  }
}

/** What counts against a breaker: the target is unhealthy, not the request wrong. */
function isFailure(error: unknown): boolean {
  if (isHttpError(error)) return error.status >= 500 || error.status === 429 || error.status === 408;
  return true;
}

function isHttpError(error: unknown): error is HttpError {
  return isFerryError(error) && error.code === 'HTTP_ERROR';
}

async function readBody(response: Dispatcher.ResponseData): Promise<unknown> {
  const text = await response.body.text();
  if (text.length === 0) return undefined;
  if (isJson(response.headers['content-type'])) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function problemOf(
  headers: Record<string, string | string[] | undefined>,
  body: unknown,
): ProblemDetails | undefined {
  const type = headers['content-type'];
  const base = (Array.isArray(type) ? type[0] : type)?.split(';')[0]?.trim().toLowerCase();
  if (base !== PROBLEM_CONTENT_TYPE || typeof body !== 'object' || body === null) return undefined;
  return body as ProblemDetails;
}

function withQuery(path: string, query: CallOptions['query']): string {
  if (query === undefined) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query))
    if (value !== undefined) params.append(key, String(value));
  const text = params.toString();
  if (text === '') return path;
  return `${path}${path.includes('?') ? '&' : '?'}${text}`;
}

function validateTimes(options: ServiceClientOptions): void {
  for (const name of ['timeout', 'deadline'] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
      throw new InvalidOptionsError(`${name} must be a positive number of milliseconds`);
    }
  }
}
