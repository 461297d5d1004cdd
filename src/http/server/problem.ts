import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { FerryContext } from '../../context/context.js';
import { backendUnavailableCode, isOutcomeUnknown, isStorageFull } from '../../errors/backend-faults.js';
import { describeThrown } from '../../errors/describe-thrown.js';
import { describeValue } from '../../errors/describe-value.js';
import { errorGuard, FerryError, InvalidOptionsError, isFerryError } from '../../errors/ferry-error.js';
import { maskedAndCut } from '../../url/redact-url.js';
import type { StandardSchemaV1 } from '../../validation/standard-schema.js';
import { toValidationIssues, type ValidationIssue } from '../../validation/validation-issue.js';
import { HTTP_HEADER } from '../headers.js';
import { deadlinePassed, isClientDisconnectedError } from './request-context.js';

/** An RFC 9457 problem document as the server sends it. */
export interface Problem {
  /** A URI naming the kind of problem; `about:blank` when the status says it all. */
  readonly type: string;
  /** Short and stable; for `about:blank`, the status phrase. */
  readonly title: string;
  readonly status: number;
  /** This occurrence, for people. Never internals. */
  readonly detail?: string;
  /** The request path the problem is about. */
  readonly instance?: string;
  readonly [extension: string]: unknown;
}

/** Optional members of a problem; any other key becomes an extension member. */
export interface ProblemExtra {
  readonly type?: string;
  readonly detail?: string;
  readonly instance?: string;
  readonly [extension: string]: unknown;
}

const RESERVED = new Set(['type', 'title', 'status', 'detail', 'instance']);

/**
 * Builds a problem document; `title` defaults to the status phrase.
 *
 * @example
 * problem(404, 'Order not found', { detail: `no order ${id}`, orderId: id });
 */
export function problem(status: number, title?: string, extra: ProblemExtra = {}): Problem {
  const doc: Record<string, unknown> = {
    type: extra.type ?? 'about:blank',
    title: title ?? STATUS_CODES[status] ?? 'Error',
    status,
  };
  if (extra.detail !== undefined) doc.detail = extra.detail;
  if (extra.instance !== undefined) doc.instance = extra.instance;
  for (const [key, value] of Object.entries(extra)) {
    if (!RESERVED.has(key) && value !== undefined) doc[key] = value;
  }
  return doc as unknown as Problem;
}

/** Options of an {@link HttpProblemError}. */
export interface HttpProblemInit {
  /** @default 'about:blank' */
  readonly type?: string;
  readonly detail?: string;
  /** Extension members added to the problem document. */
  readonly extensions?: Readonly<Record<string, unknown>>;
  /**
   * Response headers, e.g. `Retry-After` for a 503 or `Allow` for a 405. A name or value HTTP does not
   * allow (a line break from request data, say), or `Transfer-Encoding` or `Trailer` (the problem is
   * sent whole, with its length), makes the constructor throw `INVALID_OPTIONS`: such a problem could
   * not be sent as written. `Content-Type` and `Content-Length` are the server's: yours are replaced.
   */
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

/**
 * Thrown by a handler to answer with a given problem: the one way a handler chooses a status through
 * Ferry's error handling. Everything in it is sent to the client.
 *
 * @example
 * throw new HttpProblemError(409, 'Order already shipped', { detail: `order ${id} shipped on ${date}` });
 */
export class HttpProblemError extends FerryError {
  readonly status: number;
  readonly title: string;
  readonly type: string;
  readonly detail: string | undefined;
  readonly extensions: Readonly<Record<string, unknown>>;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, title?: string, init: HttpProblemInit = {}) {
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new InvalidOptionsError(`a problem status must be an integer from 400 to 599, got ${status}`);
    }
    const resolvedTitle = title ?? STATUS_CODES[status] ?? 'Error';
    super('HTTP_PROBLEM', `${status} ${resolvedTitle}${init.detail ? `: ${init.detail}` : ''}`, {
      cause: init.cause,
    });
    this.status = status;
    this.title = resolvedTitle;
    this.type = init.type ?? 'about:blank';
    this.detail = init.detail;
    this.extensions = init.extensions ?? {};
    this.headers = checkedHeaders(init.headers);
  }

  /** The problem document, with `instance` and extra extension members. */
  toProblem(extra: ProblemExtra = {}): Problem {
    return problem(this.status, this.title, {
      ...this.extensions,
      ...extra,
      type: this.type,
      ...(this.detail === undefined ? {} : { detail: this.detail }),
    });
  }
}
export const isHttpProblemError = errorGuard<HttpProblemError>('HTTP_PROBLEM');

/** How a response's body is framed: a problem is sent whole, with its Content-Length. */
const FRAMING_HEADERS = new Set(['transfer-encoding', 'trailer']);

/** A problem's headers as Node will write them: names and values HTTP allows, values strings. */
function checkedHeaders(
  headers: Readonly<Record<string, string>> | undefined,
): Readonly<Record<string, string>> {
  if (headers === undefined) return {};
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw new InvalidOptionsError("a problem's headers must be an object of header names to strings");
  }
  // A copy, each value read once: what was checked is what is sent, whatever becomes of `headers`.
  const copy: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (FRAMING_HEADERS.has(name.toLowerCase())) {
      throw new InvalidOptionsError(
        `a problem's header ${JSON.stringify(name)} is the server's to set: the problem is sent whole, with its length`,
      );
    }
    try {
      validateHeaderName(name);
      if (typeof value !== 'string') throw new TypeError('not a string');
      validateHeaderValue(name, value);
    } catch {
      // The value is not quoted: it may come from a request, or hold what is not for logs.
      throw new InvalidOptionsError(
        `a problem's header ${JSON.stringify(name)} must be a valid HTTP header name with a string value HTTP allows (no line breaks or control characters)`,
      );
    }
    copy[name] = value;
  }
  return Object.freeze(copy);
}

/** A request (body, query, params or headers) does not satisfy its schema. Mapped to 400. */
export class RequestValidationError extends FerryError {
  readonly issues: readonly ValidationIssue[];
  constructor(issues: readonly ValidationIssue[]) {
    const detail = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
    super('REQUEST_INVALID', `the request failed validation: ${detail}`);
    this.issues = issues;
  }
}
export const isRequestValidationError = errorGuard<RequestValidationError>('REQUEST_INVALID');

/**
 * Validates part of a request against a Standard Schema (zod, valibot, arktype…), returning its
 * output or throwing a {@link RequestValidationError} the error handler answers with 400. With
 * `where`, issue paths are prefixed (`body.email`).
 *
 * @example
 * const order = await validateRequest(OrderInput, req.body, 'body');
 */
export async function validateRequest<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  where?: string,
): Promise<StandardSchemaV1.InferOutput<S>> {
  const result = await schema['~standard'].validate(value);
  if (!result.issues) return result.value as StandardSchemaV1.InferOutput<S>;
  const issues = toValidationIssues(result.issues).map((issue) =>
    where === undefined
      ? issue
      : { path: issue.path ? `${where}.${issue.path}` : where, message: issue.message },
  );
  throw new RequestValidationError(issues);
}

/** The body is larger than the endpoint accepts. */
export function bodyTooLargeProblem(): HttpProblemError {
  return new HttpProblemError(413, undefined, {
    detail: 'The request body is larger than this endpoint accepts.',
  });
}

/** The body's media type (or its encoding or charset) is not one the endpoint reads. */
export function unsupportedMediaTypeProblem(): HttpProblemError {
  return new HttpProblemError(415, undefined, {
    detail: 'The media type, encoding or charset of the request body is not supported.',
  });
}

/** The body says it is JSON but is not, or is empty. */
export function malformedJsonProblem(): HttpProblemError {
  return new HttpProblemError(400, undefined, { detail: 'The request body is not valid JSON.' });
}

/** The request path is not valid percent-encoding (`/orders%ZZ`, `/%c0`). */
export function badPathEncodingProblem(): HttpProblemError {
  return new HttpProblemError(400, undefined, { detail: 'The request path is not valid percent-encoding.' });
}

/** Whether `path` (without its query) decodes: every `%` escape well formed, the bytes UTF-8. */
export function isDecodablePath(path: string): boolean {
  if (!path.includes('%')) return true;
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The option names of the server middleware, for refusing a misspelt one (`idempotncy` left
 * idempotency off, duplicate POSTs ran twice). The same options object often goes to
 * `ferryFastifyOptions` and `ferryFastify`: both take every name either reads.
 */
export const SERVER_OPTION_NAMES = {
  context: ['maxDeadlineMs', 'minDeadlineMs', 'trustDeadline', 'logger', 'mapError'],
  problem: ['logger', 'mapError'],
  idempotency: ['store', 'methods', 'replayHeaders', 'maxHeldBodyBytes', 'maxStoredBodyBytes', 'scope'],
  health: ['checks', 'breakers', 'timeoutMs', 'cacheMs', 'path'],
  fastify: [
    'maxDeadlineMs',
    'minDeadlineMs',
    'trustDeadline',
    'logger',
    'mapError',
    'idempotency',
    'health',
    'notFound',
    'clientErrors',
  ],
} as const;

/** Where unexpected errors are reported; compatible with console, pino and Ferry's `Logger`. */
export interface ProblemLogger {
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Writes one line to stderr: the default {@link ProblemLogger}. */
export const stderrProblemLogger: ProblemLogger = Object.freeze({
  error(message: string, fields?: Record<string, unknown>): void {
    process.stderr.write(`ferry error: ${message}${fields ? ` ${JSON.stringify(fields)}` : ''}\n`);
  },
});

/** Options of {@link problemFromError}, shared by the adapters. */
export interface ProblemOptions {
  /** Where unexpected errors are reported. @default one line on stderr */
  readonly logger?: ProblemLogger;
  /**
   * Maps your own errors (a domain conflict, a missing entity) to problems; return `undefined` to
   * leave an error to the default mapping. @default none
   */
  readonly mapError?: (error: unknown) => Problem | HttpProblemError | undefined;
}

/** A problem ready to send. */
export interface ProblemResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly problem: Problem;
  /**
   * The answer is final though a 5xx: the request may have been carried out (its outcome is
   * unknown), so an `Idempotency-Key` keeps it and replays it instead of running the request again.
   */
  readonly final?: true;
}

/** What the error handler knows about the request that failed. */
export interface ProblemRequest {
  readonly method: string;
  /** The request path, without the query string: becomes the problem's `instance`. */
  readonly path: string;
  readonly context?: FerryContext | undefined;
}

/** Status recorded when the client left before the answer: nobody reads it, but access logs do. */
const CLIENT_CLOSED_REQUEST = 499;

/**
 * Maps an error to the problem sent to the client: {@link HttpProblemError} as it says,
 * {@link RequestValidationError} to 400 with `errors: [{ path, message }]`, a passed deadline to 504,
 * a write that failed for want of room (SQLite `SQLITE_FULL`, `ENOSPC`, PostgreSQL `53100`, as the
 * error or a cause of it) to 507 `STORAGE_FULL`, a failed call to another service or an unavailable
 * database or broker to 502, 503 or 504 (see dependencyProblem), anything else to 500 with a
 * generic title. The message and stack of an unexpected error never reach the client; they are
 * logged with the correlation id instead.
 */
export function problemFromError(
  error: unknown,
  request: ProblemRequest,
  options: ProblemOptions = {},
): ProblemResponse {
  const correlationId = request.context?.correlationId;
  const extra: ProblemExtra = {
    instance: request.path,
    ...(correlationId === undefined ? {} : { correlationId }),
  };
  /** One line for the operator, with what identifies the request. */
  const report = (message: string, described: { error: string; stack?: string }) =>
    (options.logger ?? stderrProblemLogger).error(message, {
      correlationId,
      method: request.method,
      path: request.path,
      ...described,
    });
  let failure: unknown;
  try {
    const response = sendable(mapError(error, request, options, extra, report));
    if (!(response instanceof Error)) return response;
    failure = response;
  } catch (thrown) {
    failure = thrown;
  }
  // A mapError that threw or made a problem that cannot be sent (a status outside 400-599, a member
  // JSON cannot write): the client gets the 500 any unexpected error gets, the operator both errors.
  const described = describe(failure);
  report('the error handler could not answer with the problem it made for an error', {
    ...described,
    error: `${described.error} (while answering ${describe(error).error})`,
  });
  return respond(problem(500, 'Internal Server Error', extra));
}

/**
 * The answer as it will be sent: its problem as JSON writes it (a plain copy, so that what was checked
 * is what is sent, whatever a `toJSON` or getter would do the next time), or an error saying why it
 * cannot be sent: a status outside 400-599, a member JSON cannot write, a document that is not a
 * problem (not an object, `type` or `title` not a string, a `status` other than the answer's).
 */
function sendable(response: ProblemResponse): ProblemResponse | Error {
  const { status } = response;
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    return new InvalidOptionsError(
      `a problem's status must be an integer from 400 to 599, got ${describeValue(status)}`,
    );
  }
  let written: unknown;
  try {
    written = JSON.parse(renderProblem(response.problem));
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
  const doc = written as Partial<Record<keyof Problem, unknown>> | null;
  if (
    typeof doc !== 'object' ||
    doc === null ||
    Array.isArray(doc) ||
    typeof doc.type !== 'string' ||
    typeof doc.title !== 'string' ||
    doc.status !== status
  ) {
    return new InvalidOptionsError(
      `a problem must be an object with a string type and title and the answer's status (${status})`,
    );
  }
  return { ...response, problem: doc as Problem };
}

/** An `HttpProblemError` thrown or mapped to: as it says; a 5xx with a cause logs that cause. */
function thrownProblem(
  error: HttpProblemError,
  extra: ProblemExtra,
  report: (message: string, described: { error: string; stack?: string }) => void,
): ProblemResponse {
  // A 5xx with what caused it: the client reads the problem, the operator the cause.
  if (error.status >= 500 && error.cause !== undefined) {
    report(`${error.status} ${error.title} while serving a request`, { error: describe(error.cause).error });
  }
  return { status: error.status, headers: error.headers, problem: error.toProblem(extra) };
}

function mapError(
  error: unknown,
  request: ProblemRequest,
  options: ProblemOptions,
  extra: ProblemExtra,
  report: (message: string, described: { error: string; stack?: string }) => void,
): ProblemResponse {
  if (isHttpProblemError(error)) return thrownProblem(error, extra, report);
  if (isRequestValidationError(error)) {
    return respond(
      problem(400, undefined, {
        ...extra,
        detail: 'The request failed validation.',
        code: error.code,
        errors: error.issues.map(({ path, message }) => ({ path, message })),
      }),
    );
  }
  const mapped = options.mapError?.(error);
  if (mapped !== undefined) {
    if (isHttpProblemError(mapped)) return thrownProblem(mapped, extra, report);
    return respond({ ...mapped, ...extra });
  }
  // Before the deadline, a client gone, an outage or a full disk, which its causes may also show: the
  // request may have been carried out whatever else went wrong, so its answer must be final.
  if (isOutcomeUnknown(error)) {
    report('a write whose outcome is unknown while serving a request', describe(error));
    return {
      ...respond(
        problem(500, 'Outcome unknown', {
          ...extra,
          code: 'OUTCOME_UNKNOWN',
          detail: OUTCOME_UNKNOWN_DETAIL,
        }),
      ),
      final: true,
    };
  }
  if (deadlinePassed(error, request.context)) {
    return respond(problem(504, 'Deadline exceeded', { ...extra, code: 'DEADLINE_EXCEEDED' }));
  }
  const signal = request.context?.signal;
  if (signal?.aborted && isClientDisconnectedError(signal.reason)) {
    return respond(problem(CLIENT_CLOSED_REQUEST, 'Client Closed Request', extra));
  }
  const dependency = dependencyProblem(error, extra);
  if (dependency !== undefined) {
    report('a dependency failed while serving a request', { error: describe(error).error });
    return dependency;
  }
  if (isStorageFull(error)) {
    report('storage full while serving a request', describe(error));
    return respond(
      problem(507, undefined, {
        ...extra,
        code: 'STORAGE_FULL',
        detail: 'The server has no room left to store what this request needs; try again later.',
      }),
    );
  }
  report('unexpected error while serving a request', describe(error));
  return respond(problem(500, 'Internal Server Error', extra));
}

const OUTCOME_UNKNOWN_DETAIL =
  'The request may have been carried out: the database failed as it committed what the request wrote. Sent again with the same Idempotency-Key, it gets this answer again; find out whether it took effect before sending it with a new key.';

/**
 * What a failed call to another service (ServiceClient, or any resilience policy) means for the
 * request that made it: 504 when it timed out, 503 when a breaker, bulkhead or retry budget refused
 * it (with Retry-After when the breaker says when), 502 when the other service answered badly or
 * could not be reached (connection refused, reset, closed mid-answer); 503 too when this service's
 * own database or broker is unavailable (`STORE_UNAVAILABLE`, `STORE_BUSY`, `BROKER_UNAVAILABLE`,
 * `PUBLISH_BUFFER_FULL`), not a 500 that looks like a bug. The
 * detail names no service: the problem goes to the caller, the log line to the operator.
 *
 * Every such answer carries `x-ferry-no-retry: 1`: the client of this service already retried the
 * call as far as its policy allowed, and a caller retrying too would multiply the attempts at each
 * hop (3 attempts over 3 services: 9 calls to the last one).
 */
function dependencyProblem(error: unknown, extra: ProblemExtra): ProblemResponse | undefined {
  if (!isFerryError(error)) return undefined;
  const { retryAt, status, retryAfterMs } = error as {
    retryAt?: unknown;
    status?: unknown;
    retryAfterMs?: unknown;
  };
  switch (error.code) {
    case 'TIMEOUT':
      return dependencyAnswer(504, error.code, extra);
    case 'CIRCUIT_OPEN':
    case 'BULKHEAD_FULL':
    case 'RETRY_BUDGET_EXHAUSTED':
      return dependencyAnswer(
        503,
        error.code,
        extra,
        typeof retryAt === 'number' ? retryAt - Date.now() : undefined,
      );
    case 'HTTP_ERROR':
      // A 503 or 504 from further down says the same of this request; any other error answer is a bad gateway.
      if (status === 503 || status === 504) {
        return dependencyAnswer(
          status,
          error.code,
          extra,
          typeof retryAfterMs === 'number' ? retryAfterMs : undefined,
        );
      }
      return dependencyAnswer(502, error.code, extra);
    case 'INVALID_RESPONSE_BODY':
    case 'RESPONSE_TOO_LARGE':
      return dependencyAnswer(502, error.code, extra);
    case 'CONNECTION_ERROR':
      // Refused, reset, closed mid-answer: what a proxy answers 502 for.
      return dependencyAnswer(502, error.code, extra, undefined, UNREACHABLE_DETAIL);
    default: {
      // The database or broker is down or behind (each already tried again as its options say):
      // the request was not done, and may be sent again once it is back.
      const unavailable = backendUnavailableCode(error);
      return unavailable === undefined
        ? undefined
        : dependencyAnswer(503, unavailable, extra, undefined, BACKEND_DETAIL);
    }
  }
}

const UNREACHABLE_DETAIL = 'A service this request needs could not be reached.';
const BACKEND_DETAIL = 'The database or message broker this service needs is unavailable; try again later.';

const DEPENDENCY_DETAIL = {
  502: 'A service this request needs answered with an error.',
  503: 'A service this request needs is unavailable; try again later.',
  504: 'A service this request needs did not answer in time.',
} as const;

/**
 * The answer to a failed dependency call: marked not to be retried, with `Retry-After` (whole
 * seconds, at least 1) when there is a wait to suggest.
 */
function dependencyAnswer(
  status: keyof typeof DEPENDENCY_DETAIL,
  code: string,
  extra: ProblemExtra,
  waitMs?: number,
  detail: string = DEPENDENCY_DETAIL[status],
): ProblemResponse {
  const headers: Record<string, string> = { [HTTP_HEADER.noRetry]: '1' };
  if (waitMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(waitMs / 1000)));
  return {
    status,
    headers,
    problem: problem(status, undefined, { ...extra, code, detail }),
  };
}

function respond(doc: Problem): ProblemResponse {
  return { status: doc.status, headers: {}, problem: doc };
}

/**
 * `Name: message` (and the stack, for an Error) for the log; never throws, whatever the handler threw
 * (see describeThrown).
 */
function describe(error: unknown): { error: string; stack?: string } {
  const { message, stack } = describeThrown(error);
  let name: unknown;
  try {
    name = error instanceof Error ? error.name : undefined;
  } catch {
    // A hostile `name` getter: the message alone.
  }
  // The name is the error's to set: masked and cut as the message is.
  const text = typeof name === 'string' && name !== '' ? `${maskedAndCut(name, 200)}: ${message}` : message;
  return stack ? { error: text, stack } : { error: text };
}

/** The JSON body of a problem. */
export function renderProblem(doc: Problem): string {
  return JSON.stringify(doc);
}
