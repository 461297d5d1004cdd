import { errorGuard, FerryError } from '../errors/ferry-error.js';

/** An RFC 9457 problem document, as a server sent it. */
export interface ProblemDetails {
  readonly type?: string;
  readonly title?: string;
  readonly status?: number;
  readonly detail?: string;
  readonly instance?: string;
  readonly [extension: string]: unknown;
}

/**
 * The server answered with a status the call treats as a failure. Carries the response: status,
 * headers, the body (parsed JSON or text) and, for `application/problem+json`, the problem.
 */
export class HttpError extends FerryError {
  readonly status: number;
  readonly method: string;
  readonly url: string;
  /**
   * The response's headers. Not enumerable, so that logging the error (JSON, `util.inspect`, a
   * structured logger's error serializer) does not print a `Set-Cookie` the server sent with it.
   */
  declare readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: unknown;
  readonly problem: ProblemDetails | undefined;
  /** From `Retry-After`, when the server sent one: how long it asked us to wait. */
  readonly retryAfterMs: number | undefined;
  /**
   * True when the body was larger than the client's `maxResponseBytes`: `body` is its start only
   * (as text, when cut JSON no longer parses), and `problem` is then undefined.
   */
  readonly bodyTruncated: boolean;

  constructor(init: {
    status: number;
    method: string;
    url: string;
    headers: Readonly<Record<string, string | string[] | undefined>>;
    body: unknown;
    problem?: ProblemDetails | undefined;
    retryAfterMs?: number | undefined;
    bodyTruncated?: boolean | undefined;
  }) {
    const summary = init.problem?.title ?? (typeof init.body === 'string' ? init.body.slice(0, 200) : '');
    super('HTTP_ERROR', `${init.method} ${init.url} answered ${init.status}${summary ? `: ${summary}` : ''}`);
    this.status = init.status;
    this.method = init.method;
    this.url = init.url;
    Object.defineProperty(this, 'headers', { value: init.headers, enumerable: false });
    this.body = init.body;
    this.problem = init.problem;
    this.retryAfterMs = init.retryAfterMs;
    this.bodyTruncated = init.bodyTruncated === true;
  }
}
export const isHttpError = errorGuard<HttpError>('HTTP_ERROR');

/**
 * A response the caller would have received as data said it was JSON and was not: the caller gets
 * this error rather than a string where it expected an object. Not retried; counts against the
 * breaker, since the fault is the callee's. `body` holds the first 1,000 characters as text.
 */
export class InvalidResponseBodyError extends FerryError {
  readonly status: number;
  readonly body: string;
  constructor(request: string, status: number, body: string) {
    super(
      'INVALID_RESPONSE_BODY',
      `${request} answered ${status} with a body that is not the JSON it claims to be`,
    );
    this.status = status;
    this.body = body.slice(0, 1000);
  }
}
export const isInvalidResponseBodyError = errorGuard<InvalidResponseBodyError>('INVALID_RESPONSE_BODY');

/**
 * A request body given as a value could not be sent as JSON (a BigInt, a cycle, nesting too deep
 * for `JSON.stringify`, or nothing JSON can say), or is an object the client does not send (a
 * stream, a Blob, FormData, a Map, a Response, an Error…, itself or as its `toJSON()` returned it,
 * named in the message with what to send instead): nothing was sent. `cause` is the
 * serializer's error, or a sentence saying why.
 */
export class RequestBodyNotSerializableError extends FerryError {
  constructor(request: string, cause: unknown) {
    super(
      'REQUEST_BODY_NOT_SERIALIZABLE',
      `${request}: the request body cannot be sent as JSON (${cause instanceof Error ? cause.message : String(cause)})`,
      { cause },
    );
  }
}
export const isRequestBodyNotSerializableError = errorGuard<RequestBodyNotSerializableError>(
  'REQUEST_BODY_NOT_SERIALIZABLE',
);

/**
 * The exchange failed below HTTP: the connection was refused, reset or closed before the whole
 * answer arrived, the host was not found… `errorCode` is the underlying code (`ECONNREFUSED`,
 * `ECONNRESET`, `UND_ERR_SOCKET`, …) and `cause` the original error.
 */
export class ConnectionError extends FerryError {
  /** The underlying error's code, when it has one. */
  readonly errorCode: string | undefined;
  /**
   * An earlier attempt of the same call may have reached the target (it was answered, timed out or
   * its connection broke): even when this attempt was refused (`ECONNREFUSED`), the call may have
   * been carried out.
   */
  readonly earlierAttemptSent: boolean;
  constructor(request: string, cause: unknown, errorCode: string | undefined, earlierAttemptSent = false) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super('CONNECTION_ERROR', `${request} failed: ${errorCode ? `${errorCode} ` : ''}${reason}`, { cause });
    this.errorCode = errorCode;
    this.earlierAttemptSent = earlierAttemptSent;
  }
}
export const isConnectionError = errorGuard<ConnectionError>('CONNECTION_ERROR');

/**
 * The request could not be sent as given (a header value with a line break, a `content-length` that
 * is not the body's, an `Expect` header…); nothing was sent. `reason` is a sentence saying what is
 * wrong, or the error that refused it (kept as `cause`).
 */
export class InvalidRequestError extends FerryError {
  constructor(what: string, reason: unknown) {
    const why =
      reason instanceof Error ? `: ${reason.message}` : typeof reason === 'string' ? `: ${reason}` : '';
    super(
      'INVALID_REQUEST',
      `${what} cannot be sent${why}`,
      typeof reason === 'string' ? {} : { cause: reason },
    );
  }
}
export const isInvalidRequestError = errorGuard<InvalidRequestError>('INVALID_REQUEST');
