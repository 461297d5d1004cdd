import { setMaxListeners } from 'node:events';
import type { Dispatcher, Pool } from 'undici';
import { currentContext } from '../context/context.js';
import { type LinkedSignal, linkSignals } from '../context/linked-signal.js';
import { describeValue } from '../errors/describe-value.js';
import { errorGuard, FerryError, InvalidOptionsError, isFerryError } from '../errors/ferry-error.js';
import { assertOptionsObject } from '../errors/options-object.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { exponentialBackoff } from '../resilience/backoff.js';
import { RetryBudget } from '../resilience/budget.js';
import { bulkhead } from '../resilience/bulkhead.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { compose } from '../resilience/compose.js';
import { TimeoutError } from '../resilience/errors.js';
import type { ExecuteOptions, Policy, PolicyContext } from '../resilience/policy.js';
import { DEFAULT_RETRY, type RetryBudgetLike, retry } from '../resilience/retry.js';
import { maskCredentials, redactUrl } from '../url/redact-url.js';
import { type ClientEventMap, ClientEvents } from './client-events.js';
import {
  type CallOptions,
  callHeaderProblem,
  checkCallHeaders,
  checkClientHeaders,
  checkQuery,
  checkSignal,
  clientSettingsOf,
  DEFAULT_SERVICE_CLIENT_OPTIONS,
  HTTP_TOKEN,
  type RetrySettings,
  refuseUnknownCallOptions,
  retrySettingsOf,
  type ServiceClientOptions,
  validateTimes,
} from './client-options.js';
import { type CollectedResponse, collectResponse } from './collect-response.js';
import { ConnectionError, HttpError, InvalidRequestError, InvalidResponseBodyError } from './errors.js';
import { HTTP_HEADER } from './headers.js';
import { isValidIdempotencyKey, outgoingHeaders, unquotedIdempotencyKey } from './outgoing-headers.js';
import { checkBodyHeaders, encodeRequestBody } from './request-body.js';
import { basePathOf, pathOfCall, requestTarget } from './request-target.js';
import { bodyText, decodeBody, MALFORMED_JSON, parseRetryAfter, problemOf } from './response-body.js';
import { routeOfPath } from './route-of-path.js';
import { loadedUndici, loadUndici } from './undici-module.js';

export type { CallOptions, ClientRetryOptions, ServiceClientOptions } from './client-options.js';
export { DEFAULT_SERVICE_CLIENT_OPTIONS } from './client-options.js';

/** A request for {@link ServiceClient.request}. */
export interface RequestInit extends CallOptions {
  readonly method: string;
  readonly path: string;
  /**
   * A string is sent as it is; bytes (Buffer, any typed array, DataView, ArrayBuffer) as they are
   * when the call is made (copied: changing them afterwards changes no attempt),
   * `application/octet-stream` unless a header says otherwise; anything else as JSON. Streams, Blob,
   * FormData, Map, Set, Response, Request, Error and other objects JSON cannot say (or a `toJSON()`
   * returning one) are refused (`REQUEST_BODY_NOT_SERIALIZABLE`).
   */
  readonly body?: unknown;
}

/** A response: the body parsed as JSON when the server said JSON, else text (undefined when empty). */
export interface ServiceResponse<T = unknown> {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: T;
  /**
   * Set (true) on an answer that is not a 2xx whose body was larger than `maxResponseBytes`: `body`
   * is its start only, as text.
   */
  readonly bodyTruncated?: boolean;
}

const NO_OPTIONS: CallOptions = Object.freeze({});

/** The problem `code` of a 409 saying a request with the same Idempotency-Key is still running. */
const KEY_IN_USE_CODE = 'IDEMPOTENCY_KEY_IN_USE';

const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * Whether a request of this method may be sent again as it is (RFC 9110 9.2.2: GET, HEAD, OPTIONS,
 * PUT, DELETE, TRACE): what `ServiceClient` retries without an Idempotency-Key after an attempt that
 * may have reached the target. Upper case, as `ServiceClient` sends methods.
 */
export function isIdempotentMethod(method: string): boolean {
  return IDEMPOTENT_METHODS.has(method);
}
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

/**
 * What undici (or Node) refuses before sending anything: a request that cannot be sent as given.
 * The body headers are checked before undici sees them (checkBodyHeaders); their codes stay here for
 * a dispatcher of the caller's.
 */
const REFUSED_BEFORE_SENDING_CODES = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_CHAR',
]);

/**
 * An answer that is not HTTP (a bad status line, a bad chunk size…): undici's `HTTPParserError`,
 * whose `code` (llhttp's `HPE_…`) it often leaves unset. Retried as a connection error when safe: a
 * proxy or server answering garbage once may answer the next attempt.
 */
function parserErrorCode(error: unknown): string | undefined {
  return (error as { name?: unknown }).name === 'HTTPParserError' ? HTTP_PARSER_ERROR_CODE : undefined;
}
const HTTP_PARSER_ERROR_CODE = 'HPE_INVALID_RESPONSE';

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  const causeCode = (
    (error as { cause?: { code?: unknown } } | null)?.cause as { code?: unknown } | undefined
  )?.code;
  return typeof code === 'string' ? code : typeof causeCode === 'string' ? causeCode : undefined;
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
  /** The path of the base URL, without its trailing `/`, joined before every call's path. */
  readonly #basePath: string;
  readonly #options: ServiceClientOptions;
  readonly #budget: RetryBudget | undefined;
  /**
   * What the retry policies get of {@link #budget}: its retries, and no request recorded at an
   * execution's start. The client records a call itself as it sends it, past the bulkhead and the
   * breaker: a call they refused, or one refused before anything was sent, is no traffic.
   */
  readonly #retriesOfBudget: RetryBudgetLike | undefined;
  readonly #bulkhead: (Policy & { stats(): { running: number; queued: number } }) | undefined;
  readonly #breakers = new Map<string, CircuitBreaker>();
  readonly #chains = new Map<string, Policy>();
  readonly #retrySettings: RetrySettings | undefined;
  /** Errors the attempts judged safe and worth retrying (with their call); the retry policy consults it. */
  readonly #retryable = new WeakMap<object, { readonly method: string; readonly path: string }>();
  readonly #events = new ClientEvents();
  #dispatcher: Dispatcher | undefined;
  /**
   * Errors that say nothing of the target's health (the caller's abort, a deadline the caller chose
   * running out, a request that could not be sent): breakers neither count them as failures nor as
   * successes.
   */
  readonly #notCounted = new WeakSet<object>();
  /**
   * Errors that attempts sent ended with (their timeout, the deadline's, a connection error, a body
   * too large or not the JSON it claims…): the call's own failure, never a `rejection`. Other
   * TIMEOUTs are deadlines passed before an attempt.
   */
  readonly #attemptFailures = new WeakSet<object>();
  readonly #maxResponseBytes: number;
  readonly #connections: number;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  /** Aborted by close(), with CLIENT_CLOSED: ends the waits in the bulkhead queue and in backoff. */
  readonly #closing = new AbortController();
  readonly #closingOptions: ExecuteOptions;

  /**
   * @param baseUrl an absolute http(s) URL; its path, if any, is a prefix of every call's path
   * (`http://host/api` and `/orders` call `/api/orders`). A query or fragment is refused, an empty
   * one (`http://host/api?`) too.
   * @throws InvalidOptionsError
   */
  constructor(baseUrl: string, options: ServiceClientOptions = {}) {
    // Every call waiting in the bulkhead or in backoff listens to it.
    setMaxListeners(0, this.#closing.signal);
    this.#closingOptions = Object.freeze({ signal: this.#closing.signal });
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new InvalidOptionsError(
        `ServiceClient needs an absolute http(s) URL, not ${typeof baseUrl === 'string' ? describeValue(redactUrl(baseUrl)) : describeValue(baseUrl)}`,
      );
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new InvalidOptionsError(`ServiceClient speaks http and https, not ${url.protocol}`);
    }
    if (url.username !== '' || url.password !== '') {
      // Never sent (undici ignores them) and never quoted here: the URL holds a password.
      throw new InvalidOptionsError(
        `ServiceClient needs a base URL without credentials (user:password@), not one for ${url.origin}: send them in an Authorization header (options.headers)`,
      );
    }
    // A URL object passes as its text: new URL() takes one as well.
    const basePath = basePathOf(url, String(baseUrl));
    if (basePath === undefined) {
      throw new InvalidOptionsError(
        `ServiceClient needs a base URL without a query or fragment, not ${describeValue(redactUrl(String(baseUrl)))}`,
      );
    }
    this.origin = url.origin;
    this.#basePath = basePath;
    const settings = clientSettingsOf(options, url.origin);
    this.name = settings.name;
    this.#connections = settings.connections;
    this.#maxResponseBytes = settings.maxResponseBytes;
    this.#options = options;
    checkClientHeaders(options.headers);
    this.#budget =
      options.retryBudget === false
        ? undefined
        : new RetryBudget({ ...DEFAULT_SERVICE_CLIENT_OPTIONS.retryBudget, ...options.retryBudget });
    this.#retriesOfBudget = this.#budget === undefined ? undefined : retriesOnly(this.#budget);
    this.#bulkhead =
      options.bulkhead === false
        ? undefined
        : bulkhead({ ...DEFAULT_SERVICE_CLIENT_OPTIONS.bulkhead, ...options.bulkhead });
    this.#dispatcher = options.dispatcher;
    this.#retrySettings = retrySettingsOf(options.retry);
    // Loaded now rather than by the first call, which waits for it otherwise (see #call); a failed
    // load is reported by the calls.
    if (options.dispatcher === undefined) loadUndici().catch(() => {});
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
    return this.#call('GET', path, undefined, options, true).then(bodyOfResponse) as Promise<T>;
  }

  delete<T = unknown>(path: string, options?: CallOptions): Promise<T> {
    return this.#call('DELETE', path, undefined, options, true).then(bodyOfResponse) as Promise<T>;
  }

  post<T = unknown>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
    return this.#call('POST', path, body, options, true).then(bodyOfResponse) as Promise<T>;
  }

  put<T = unknown>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
    return this.#call('PUT', path, body, options, true).then(bodyOfResponse) as Promise<T>;
  }

  patch<T = unknown>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
    return this.#call('PATCH', path, body, options, true).then(bodyOfResponse) as Promise<T>;
  }

  /**
   * Any request; resolves the final response whatever its status (after retries), rejecting only
   * when there is none: connection failure, timeout, open breaker, full bulkhead, spent budget.
   */
  request<T = unknown>(init: RequestInit): Promise<ServiceResponse<T>> {
    // Checked here, as a rejection: `init.method.toUpperCase()` threw a TypeError at the caller.
    if (typeof init !== 'object' || init === null || typeof init.method !== 'string' || init.method === '') {
      const method = typeof init === 'object' && init !== null ? init.method : undefined;
      return Promise.reject(
        new InvalidRequestError(
          `request to ${this.origin}`,
          typeof init !== 'object' || init === null
            ? `request takes { method, path, … }, not ${describeValue(init)}`
            : `the method must be a non-empty string, not ${describeValue(method)}`,
        ),
      );
    }
    // Checked before anything is sent: undici refused such a method but kept one of the pool's
    // connections for good (after `connections` of them every call timed out).
    if (!HTTP_TOKEN.test(init.method)) {
      return Promise.reject(
        new InvalidRequestError(
          `request to ${this.origin}`,
          `the method must be an HTTP token (letters, digits and !#$%&'*+-.^_\`|~), not ${describeValue(init.method)}`,
        ),
      );
    }
    const method = init.method.toUpperCase();
    if (method === 'CONNECT') {
      // undici took any answer to it for a tunnel and kept the connection, never answering the call.
      return Promise.reject(
        new InvalidRequestError(
          `CONNECT ${this.origin}`,
          'CONNECT opens a tunnel, which the client does not make',
        ),
      );
    }
    return this.#call(method, init.path, init.body, init, false) as Promise<ServiceResponse<T>>;
  }

  /** get, post… answer the body of a 2xx and reject with `HttpError` otherwise (`throwOnStatus`). */
  #call(
    method: string,
    requestPath: string,
    requestBody: unknown,
    options: CallOptions | undefined,
    throwOnStatus: boolean,
  ): Promise<ServiceResponse> {
    // Not an async function (its promise hop showed in the throughput), so throws become rejections here.
    try {
      return this.#start(method, requestPath, requestBody, options, throwOnStatus);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Runs `begin` once undici is loaded, for a call made while it is still loading (the first calls
   * of a process): the call's clock (timeout, the client's deadline) then measures the call, not the
   * load, which takes 100 ms or more. The caller's signal still ends the wait at once.
   */
  #onceLoaded(
    signal: AbortSignal | undefined,
    begin: () => Promise<ServiceResponse>,
  ): Promise<ServiceResponse> {
    if (signal === undefined) return loadUndici().then(begin);
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      loadUndici().then(
        () => {
          signal.removeEventListener('abort', onAbort);
          if (signal.aborted) return;
          try {
            resolve(begin());
          } catch (error) {
            reject(error);
          }
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  #start(
    method: string,
    requestPath: string,
    requestBody: unknown,
    options: CallOptions | undefined,
    throwOnStatus: boolean,
  ): Promise<ServiceResponse> {
    if (this.#closed) throw new ClientClosedError(this.name);
    const init: CallOptions = options ?? NO_OPTIONS;
    if (init !== NO_OPTIONS) {
      assertOptionsObject('the call', init);
      // request(init) passes its init as the options: method, path and body are its own.
      refuseUnknownCallOptions(init, !throwOnStatus);
      if (init.headers !== undefined) checkCallHeaders(init.headers);
      if (init.query !== undefined) checkQuery(init.query);
      if (init.signal !== undefined) checkSignal(init.signal);
    }
    if (init.timeout !== undefined || init.deadline !== undefined) validateTimes(init);
    const context = currentContext();
    const deadlineMs = init.deadline ?? this.#options.deadline;
    /** When the call must be over (epoch ms), set as its clock starts (see begin). */
    let deadline: number | undefined;

    const settings = init.retry === undefined ? this.#retrySettings : retrySettingsOf(init.retry);
    if (typeof requestPath !== 'string') {
      // It threw a TypeError ("path.charCodeAt is not a function") from deep inside.
      throw new InvalidRequestError(
        `${method} ${this.origin}`,
        `the path must be a string starting with "/", not ${describeValue(requestPath)}`,
      );
    }
    const shownRequestPath = maskCredentials(requestPath);
    const headers = outgoingHeaders(context, this.#options.headers, init.headers);
    const headerProblem = init.headers === undefined ? undefined : callHeaderProblem(init.headers);
    if (headerProblem !== undefined) {
      throw new InvalidRequestError(`${method} ${this.origin}${shownRequestPath}`, headerProblem);
    }
    // A key the server would refuse (or read as another) must not make a POST look safe to retry.
    if (init.idempotencyKey !== undefined && !isValidIdempotencyKey(init.idempotencyKey)) {
      throw new InvalidOptionsError(
        `idempotencyKey must be 1 to 255 printable ASCII characters (spaces only inside), not ${describeKey(init.idempotencyKey)}`,
      );
    }
    const keyHeader = headers[HTTP_HEADER.idempotencyKey];
    if (keyHeader !== undefined && !isValidIdempotencyKey(keyHeader)) {
      throw new InvalidRequestError(
        `${method} ${this.origin}${shownRequestPath}`,
        `the Idempotency-Key header must hold 1 to 255 printable ASCII characters (spaces only inside), not ${describeKey(keyHeader)}`,
      );
    }
    if (
      keyHeader !== undefined &&
      init.idempotencyKey !== undefined &&
      unquotedIdempotencyKey(keyHeader) !== unquotedIdempotencyKey(init.idempotencyKey)
    ) {
      throw new InvalidRequestError(
        `${method} ${this.origin}${shownRequestPath}`,
        `its Idempotency-Key header is not its idempotencyKey: give one of them`,
      );
    }
    let idempotencyKey = init.idempotencyKey ?? keyHeader;
    if (idempotencyKey === undefined && settings !== undefined && (method === 'POST' || method === 'PATCH')) {
      idempotencyKey = uuidv7();
    }
    if (idempotencyKey !== undefined) headers[HTTP_HEADER.idempotencyKey] ??= idempotencyKey;
    const safeToRetry = isIdempotentMethod(method) || idempotencyKey !== undefined;
    // An explicit x-deadline-ms is sent as given; otherwise each attempt sends what is left.
    const sendDeadline = headers[HTTP_HEADER.deadline] === undefined;
    const payload = encodeRequestBody(requestBody, headers, `${method} ${shownRequestPath}`);
    const callPath = pathOfCall(requestPath, `${method} ${this.origin}${this.#basePath}${shownRequestPath}`);
    const path = requestTarget(this.#basePath, callPath, init.query);
    // What errors and events show of the call: the values of secret query parameters (`?api_key=`,
    // `?token=`) masked, since errors and events end up in logs (the server middleware logs a
    // failed dependency's error). The request itself goes to `path`.
    const shownPath = maskCredentials(path);
    const target = `${method} ${this.origin}${shownPath}`;
    checkBodyHeaders(headers, payload, target);
    /** Whether the call was recorded in the retry budget: as its first attempt is sent. */
    let recorded = false;
    const statuses = settings?.statuses ?? DEFAULT_SERVICE_CLIENT_OPTIONS.retry.statuses;
    const maxRetryAfterMs = settings?.maxRetryAfterMs ?? DEFAULT_SERVICE_CLIENT_OPTIONS.retry.maxRetryAfterMs;
    const attemptTimeout = init.timeout ?? this.#options.timeout ?? DEFAULT_SERVICE_CLIENT_OPTIONS.timeout;
    const retryable = this.#retryable;
    const notCounted = this.#notCounted;
    const attemptFailures = this.#attemptFailures;
    const call = { method, path: shownPath };
    const signal = init.signal;

    // An attempt of this call may have reached the target (answered, timed out, reset…): a later
    // attempt's refusal does not mean that nothing was sent.
    let sentBefore = false;
    // A chain of callbacks rather than an async function: every call goes through here, and the
    // promise hops of async/await showed in the throughput.
    const failed = (error: unknown): never => {
      const sentEarlier = sentBefore;
      sentBefore = true;
      if (typeof error !== 'object' || error === null) throw error;
      if (signal?.aborted && error === signal.reason) {
        // The caller gave up: says nothing of the target's health.
        notCounted.add(error);
        throw error;
      }
      if (isFerryError(error)) {
        // Ours: TIMEOUT, RESPONSE_TOO_LARGE, CLIENT_CLOSED…
        attemptFailures.add(error);
        throw error;
      }
      const code = errorCode(error) ?? parserErrorCode(error);
      if (code !== undefined && REFUSED_BEFORE_SENDING_CODES.has(code)) {
        // Never sent: a local mistake, not the target's failure, and no retry would fix it.
        const invalid = new InvalidRequestError(target, error);
        notCounted.add(invalid);
        attemptFailures.add(invalid);
        throw invalid;
      }
      // Below HTTP (refused, reset, closed mid-answer…): one typed error, the original as its cause.
      const broken = new ConnectionError(target, error, code, sentEarlier);
      if (code !== undefined && NOT_SENT_CODES.has(code)) sentBefore = sentEarlier;
      if (
        code !== undefined &&
        (CONNECTION_CODES.has(code) || code.startsWith('HPE_')) &&
        (safeToRetry || NOT_SENT_CODES.has(code))
      ) {
        retryable.set(broken, call);
      }
      attemptFailures.add(broken);
      throw broken;
    };
    const answered = (response: CollectedResponse, n: number, started: number): ServiceResponse => {
      sentBefore = true;
      const status = response.statusCode;
      const truncated = response.bodyTruncated === true;
      // A body cut short is text: JSON cut short may still parse, as something the server never said.
      let body = truncated ? bodyText(response) : decodeBody(response);
      if (this.#events.listens('response')) {
        this.#events.emit('response', {
          client: this.name,
          method,
          path: shownPath,
          attempt: n,
          status,
          durationMs: performance.now() - started,
        });
      }
      if (body === MALFORMED_JSON) {
        // Data the caller would take for the answer must be what it claims; an error answer
        // keeps its broken body as text (the status already says what went wrong).
        if (status < 300) {
          const text = response.body.toString('utf8', 0, 4000);
          const invalid = new InvalidResponseBodyError(target, status, text);
          // The target answered (a `response` event said so): the call fails, nothing refused it.
          attemptFailures.add(invalid);
          throw invalid;
        }
        body = bodyText(response);
      }
      // The idempotency middleware's answer while a request with this key still runs (see
      // server/idempotency.ts): once it ends, a retry gets its stored answer.
      const keyInUse =
        status === 409 &&
        idempotencyKey !== undefined &&
        problemOf(response.headers, body)?.code === KEY_IN_USE_CODE;
      // get/post/… reject anything but a 2xx (redirects are not followed); request() only what it retries.
      if (
        (status < 200 || status >= 300) &&
        (throwOnStatus || status >= 500 || statuses.includes(status) || keyInUse)
      ) {
        const error = new HttpError({
          status,
          method,
          url: `${this.origin}${shownPath}`,
          headers: response.headers,
          body,
          problem: problemOf(response.headers, body),
          retryAfterMs: parseRetryAfter(response.headers['retry-after']),
          bodyTruncated: truncated,
        });
        if (
          safeToRetry &&
          (statuses.includes(status) || keyInUse) &&
          (error.retryAfterMs === undefined || error.retryAfterMs <= maxRetryAfterMs) &&
          // The target already retried its own dependency: retrying here would multiply the load.
          response.headers[HTTP_HEADER.noRetry] === undefined
        ) {
          retryable.set(error, call);
        }
        throw error;
      }
      return truncated
        ? { status, headers: response.headers, body, bodyTruncated: true }
        : { status, headers: response.headers, body };
    };
    const attempt = ({ attempt: n }: PolicyContext): Promise<ServiceResponse> => {
      // Closed while the call waited to start (undici loading): not sent, so no `attempt` event,
      // and the call ends with a `rejection` (CLIENT_CLOSED).
      if (this.#closed) return Promise.reject(this.#closedError());
      // The attempt's own timer bounds it from here (pool queue included) to the last body byte;
      // what is left of the deadline bounds it too, and then its end is the caller's, not the target's.
      let limit = attemptTimeout;
      let cutByDeadline = false;
      if (deadline !== undefined) {
        const left = deadline - Date.now();
        if (left <= 0) {
          // Not sent, so no `attempt` event: the call ends with a `rejection` (see below).
          const expired = new TimeoutError(deadlineMs ?? 0, `${target} (deadline)`);
          notCounted.add(expired);
          return Promise.reject(expired);
        }
        if (sendDeadline) headers[HTTP_HEADER.deadline] = String(left);
        if (left < limit) {
          limit = left;
          cutByDeadline = true;
        }
      }
      // Traffic the budget's retries are a share of, retried or not: the call as it is sent, past
      // the bulkhead and the breaker (a call they refused was not made).
      if (!recorded) {
        recorded = true;
        this.#budget?.recordRequest();
      }
      if (this.#events.listens('attempt'))
        this.#events.emit('attempt', { client: this.name, method, path: shownPath, attempt: n });
      const started = this.#events.listens('response') ? performance.now() : 0;
      const timeoutError = (): Error => {
        const timedOut = new TimeoutError(
          cutByDeadline ? (deadlineMs ?? limit) : limit,
          `${target}${cutByDeadline ? ' (deadline)' : ''}`,
        );
        if (cutByDeadline) notCounted.add(timedOut);
        else if (safeToRetry) retryable.set(timedOut, call);
        return timedOut;
      };
      return this.#dispatch(method, path, headers, payload, limit, timeoutError, signal).then(
        (response) => answered(response, n, started),
        // Includes a body that breaks off mid-way (reset).
        failed,
      );
    };

    // Everything above is read now, as the call is made (its body, headers, context); the clock
    // starts here, or once undici is loaded for the first calls of a process.
    const begin = (): Promise<ServiceResponse> => {
      const now = Date.now();
      deadline = deadlineMs === undefined ? undefined : now + deadlineMs;
      // The ambient context is anyone's (runWithContext takes it as given): a deadline that is not a
      // finite number is none, as an invalid ambient correlation id is replaced. NaN was sent as
      // `x-deadline-ms: NaN` and enforced nothing.
      const ambient = context?.deadline;
      if (
        typeof ambient === 'number' &&
        Number.isFinite(ambient) &&
        (deadline === undefined || ambient < deadline)
      ) {
        deadline = ambient;
      }
      if (deadline !== undefined && deadline <= now) {
        const passed = new TimeoutError(
          deadlineMs ?? 0,
          `${method} ${shownRequestPath} (deadline already passed)`,
        );
        if (this.#events.listens('rejection')) {
          this.#events.emit('rejection', {
            client: this.name,
            method,
            path: shownPath,
            reason: 'deadline',
            error: passed,
          });
        }
        throw passed;
      }
      const breakerName = this.#breakerName(method, init.route, callPath);
      const policy =
        init.retry === undefined ? this.#chain(breakerName) : this.#buildChain(breakerName, settings);
      // The policies wait (bulkhead queue, backoff) on a signal that close() aborts too; the attempt
      // itself listens to the caller's signal only, so that close() lets calls in flight finish.
      let link: LinkedSignal | undefined;
      let executeOptions: ExecuteOptions;
      if (signal === undefined) {
        executeOptions =
          deadline === undefined ? this.#closingOptions : { deadline, signal: this.#closing.signal };
      } else {
        link = linkSignals(signal, this.#closing.signal);
        executeOptions = deadline === undefined ? { signal: link.signal } : { deadline, signal: link.signal };
      }
      let result = policy.execute(attempt, executeOptions);
      if (link !== undefined) {
        const { unlink } = link;
        result = result.then(
          (value) => {
            unlink();
            return value;
          },
          (error: unknown) => {
            unlink();
            throw error;
          },
        );
      }
      // Without a `rejection` listener, get/post/… return the policy's promise as it is: no extra hop.
      if (throwOnStatus && !this.#events.listens('rejection')) return result;
      return result.then(undefined, (error: unknown) => {
        if (isHttpError(error) && !throwOnStatus) {
          const { status, headers, body, bodyTruncated } = error;
          return bodyTruncated ? { status, headers, body, bodyTruncated } : { status, headers, body };
        }
        // What an attempt sent ended with is the call's failure, not a refusal (nor is an answer's
        // status; a refused retry was reported by the retry policy's hooks, with that error).
        if (
          isFerryError(error) &&
          error.code !== 'HTTP_ERROR' &&
          !attemptFailures.has(error) &&
          this.#events.listens('rejection')
        ) {
          if (error.code !== 'TIMEOUT') {
            this.#events.emit('rejection', {
              client: this.name,
              method,
              path: shownPath,
              reason: error.code,
              error,
            });
          } else if (!(signal?.aborted && error === signal.reason)) {
            // No attempt in flight timed out: the deadline passed before one could be sent (in the
            // bulkhead queue, or waiting to retry). A timeout of the caller's own (its signal's
            // reason) is not ours to report.
            this.#events.emit('rejection', {
              client: this.name,
              method,
              path: shownPath,
              reason: 'deadline',
              error,
            });
          }
        }
        throw error;
      });
    };
    if (this.#dispatcher === undefined && loadedUndici() === undefined)
      return this.#onceLoaded(signal, begin);
    return begin();
  }

  /** The policies of a breaker key with the client's retry settings, built once. */
  #chain(breakerName: string | undefined): Policy {
    const key = breakerName ?? '';
    let chain = this.#chains.get(key);
    if (chain === undefined) {
      chain = this.#buildChain(breakerName, this.#retrySettings);
      this.#chains.set(key, chain);
    }
    return chain;
  }

  /** Bulkhead, then retry, then the breaker, so that every attempt passes the breaker. */
  #buildChain(breakerName: string | undefined, settings: RetrySettings | undefined): Policy {
    const policies: Policy[] = [];
    if (this.#bulkhead !== undefined) policies.push(this.#bulkhead);
    if (settings !== undefined && settings.maxAttempts > 1) {
      const retryable = this.#retryable;
      policies.push(
        retry({
          maxAttempts: settings.maxAttempts,
          backoff: settings.backoff ?? exponentialBackoff({ initialDelayMs: 100, maxDelayMs: 5000 }),
          // A Retry-After the client accepts is waited in full, not cut to the policy's default cap.
          maxDelayMs: Math.max(DEFAULT_RETRY.maxDelayMs, settings.maxRetryAfterMs),
          ...(this.#retriesOfBudget === undefined ? {} : { budget: this.#retriesOfBudget }),
          // The attempt decided, knowing the method, statuses and idempotency key of its call.
          shouldRetry: (error) => typeof error === 'object' && error !== null && retryable.has(error),
          // A refused retry ends the call with what its last attempt got (the answer, for request()),
          // told to `rejection` listeners: callers see the real status during an outage.
          onBudgetExhausted: ({ error }) => {
            if (this.#events.listens('rejection')) {
              const call = retryable.get(error as object) ?? { method: '', path: '' };
              this.#events.emit('rejection', {
                client: this.name,
                ...call,
                reason: 'RETRY_BUDGET_EXHAUSTED',
                error,
              });
            }
            return error;
          },
          // Likewise when the breaker, opened by other calls during this one's backoff, refuses its
          // retry: the target was called, and CIRCUIT_OPEN would say the call was not made.
          onRetryRefused: ({ refusal, error }) => {
            if (this.#events.listens('rejection')) {
              const call = retryable.get(error as object) ?? { method: '', path: '' };
              const reason = isFerryError(refusal) ? refusal.code : 'refused';
              this.#events.emit('rejection', { client: this.name, ...call, reason, error });
            }
            return error;
          },
          // A retry whose wait would end past the deadline is not made: the call ends with its last
          // attempt's outcome, and `rejection` listeners are told why there was no retry.
          onDeadlineReached: ({ error }) => {
            if (!this.#events.listens('rejection')) return;
            const call = retryable.get(error as object) ?? { method: '', path: '' };
            this.#events.emit('rejection', { client: this.name, ...call, reason: 'deadline', error });
          },
          onRetry: ({ attempt, delayMs, error }) => {
            if (!this.#events.listens('retry')) return;
            const call = retryable.get(error as object) ?? { method: '', path: '' };
            this.#events.emit('retry', { client: this.name, ...call, attempt, delayMs, error });
          },
        }),
      );
    }
    const breaker = breakerName === undefined ? undefined : this.#breaker(breakerName);
    if (breaker !== undefined) policies.push(breaker);
    return compose(...policies);
  }

  #breakerName(method: string, route: string | undefined, path: string): string | undefined {
    const options = this.#options.breaker;
    if (options === false) return undefined;
    if (options?.key !== 'route') return this.name;
    const name = `${this.name} ${method} ${route ?? routeOfPath(path)}`;
    const known = this.#breakers.get(name);
    if (known !== undefined) {
      // Most recently used last, so that eviction forgets the least recently used.
      this.#breakers.delete(name);
      this.#breakers.set(name, known);
      return name;
    }
    // A breaker per route must not grow without bound: forget the least recently used closed one.
    const maxRoutes = options.maxRoutes ?? DEFAULT_SERVICE_CLIENT_OPTIONS.breaker.maxRoutes;
    if (this.#breakers.size < maxRoutes) return name;
    for (const [oldName, breaker] of this.#breakers) {
      if (oldName !== this.name && breaker.state === 'closed') {
        this.#breakers.delete(oldName);
        this.#chains.delete(oldName);
        return name;
      }
    }
    return this.name;
  }

  #breaker(name: string): CircuitBreaker {
    let breaker = this.#breakers.get(name);
    if (breaker === undefined) {
      const {
        key: _key,
        maxRoutes: _maxRoutes,
        isIgnored: ignored,
        ...settings
      } = this.#options.breaker || {};
      const notCounted = this.#notCounted;
      breaker = new CircuitBreaker({
        ...settings,
        name,
        isFailure,
        // What the client never counts, and what the caller's isIgnored leaves out.
        isIgnored: (error) =>
          typeof error !== 'object' || error === null || notCounted.has(error) || ignored?.(error) === true,
      });
      breaker.onStateChange((change) =>
        this.#events.emit('breaker', { client: this.name, breaker: name, ...change }),
      );
      this.#breakers.set(name, breaker);
    }
    return breaker;
  }

  #dispatch(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: string | Uint8Array | undefined,
    timeoutMs: number,
    timeoutError: () => Error,
    signal: AbortSignal | undefined,
  ): Promise<CollectedResponse> {
    const dispatcher = this.#dispatcher;
    const options: Dispatcher.DispatchOptions = {
      origin: this.origin,
      method: method as Dispatcher.HttpMethod,
      path,
      headers,
    };
    if (body !== undefined) options.body = body;
    const limits = { maxBytes: this.#maxResponseBytes, timeoutMs, timeoutError, signal };
    return collectResponse(dispatcher ?? this.#pool(), options, limits);
  }

  #closedError(): ClientClosedError {
    const error = new ClientClosedError(this.name);
    this.#notCounted.add(error);
    return error;
  }

  /** The client's pool, created by the first dispatch (#call made sure undici is loaded). */
  #pool(): Pool {
    const undici = loadedUndici();
    if (undici === undefined) throw new Error('ServiceClient: undici is not loaded yet');
    const pool = new undici.Pool(this.origin, {
      connections: this.#connections,
      keepAliveTimeout: 10_000,
      // Each attempt's own timer bounds it (see collectResponse): undici's are off.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    this.#dispatcher = pool;
    return pool;
  }

  /** Closes the connection pool (a dispatcher passed in options is left to its owner). */
  close(): Promise<void> {
    // One close for every call: a second one (two shutdown hooks) rejected with undici's raw
    // ClientDestroyedError, and unawaited it ended the process.
    this.#closePromise ??= (async () => {
      this.#closed = true;
      if (!this.#closing.signal.aborted) this.#closing.abort(this.#closedError());
      if (this.#options.dispatcher === undefined) await (this.#dispatcher as Pool | undefined)?.close();
    })();
    return this.#closePromise;
  }
}

/** The client was closed; the call was not made. */
export class ClientClosedError extends FerryError {
  constructor(client: string) {
    super('CLIENT_CLOSED', `ServiceClient ${client} is closed`);
  }
}

export const isClientClosedError = errorGuard<ClientClosedError>('CLIENT_CLOSED');

function bodyOfResponse(response: ServiceResponse): unknown {
  return response.body;
}

/** What counts against a breaker: the target is unhealthy, not the request wrong. */
function isFailure(error: unknown): boolean {
  if (isHttpError(error)) return error.status >= 500 || error.status === 429 || error.status === 408;
  return true;
}

function isHttpError(error: unknown): error is HttpError {
  return isFerryError(error) && error.code === 'HTTP_ERROR';
}

/** A refused key, for a message: quoted, cut after 40 characters. */
function describeKey(key: unknown): string {
  if (typeof key !== 'string') return `a ${typeof key}`;
  if (key.length === 0) return 'an empty string';
  // Never quoted: a key may replay a stored answer to whoever sends it again.
  const unprintable = /[^\x20-\x7e]/.exec(key);
  const what =
    key.length > 255
      ? ''
      : unprintable !== null
        ? `, with U+${unprintable[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')} at index ${unprintable.index}`
        : key.startsWith(' ') || key.endsWith(' ')
          ? ', starting or ending with a space'
          : '';
  return `a key of ${key.length} characters${what}`;
}

export { parseRetryAfter } from './response-body.js';
export { routeOfPath } from './route-of-path.js';

/**
 * `budget` as the client's retry policies use it: they ask it for retries, and record no request
 * (the client records each call as it sends it).
 */
function retriesOnly(budget: RetryBudget): RetryBudgetLike {
  return { recordRequest: () => {}, tryRetry: () => budget.tryRetry() };
}
