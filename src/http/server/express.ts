import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorRequestHandler, Request, RequestHandler } from 'express';
import { runWithContext } from '../../context/context.js';
import { errorText } from '../../errors/error-text.js';
import { isFerryError } from '../../errors/ferry-error.js';
import { checkOptions } from '../../errors/options-object.js';
import { loggerOption } from '../../logging/logger-option.js';
import { HTTP_HEADER, PROBLEM_CONTENT_TYPE } from '../headers.js';
import { BodyHash, hashBodyAsRead, holdRestOfBody } from './body-fingerprint.js';
import { markFinalAnswer } from './final-answer.js';
import { createHealth, type HealthReport, type HealthRouteOptions, healthPathOf } from './health.js';
import {
  IdempotencyGuard,
  type IdempotencyOptions,
  jsonBodySha256,
  replayStoredResponse,
  sha256Hex,
} from './idempotency.js';
import {
  badPathEncodingProblem,
  bodyTooLargeProblem,
  HttpProblemError,
  isDecodablePath,
  malformedJsonProblem,
  type ProblemOptions,
  problemFromError,
  renderProblem,
  SERVER_OPTION_NAMES,
  stderrProblemLogger,
  unsupportedMediaTypeProblem,
} from './problem.js';
import {
  DeadlineExceededError,
  openRequestScope,
  type RequestContext,
  type RequestContextOptions,
  requestContextOptionsOf,
} from './request-context.js';
import { captureResponse } from './response-capture.js';

export { ferryClientErrors } from './client-errors.js';

interface ExchangeState {
  readonly context: RequestContext;
  /** SHA-256 of the raw body as it streamed in; only for requests carrying an idempotency key. */
  readonly bodyHash: BodyHash | undefined;
}

const exchanges = new WeakMap<IncomingMessage, ExchangeState>();

/** The Ferry context of a request that went through {@link ferryContext} (also `currentContext()`). */
export function ferryContextOf(req: IncomingMessage): RequestContext | undefined {
  return exchanges.get(req)?.context;
}

/** Options of {@link ferryContext}. */
export interface FerryContextOptions extends RequestContextOptions, ProblemOptions {}

/**
 * Opens the request context (correlation id, trace, deadline, signal) and runs the rest of the
 * chain inside it. Use it first, before body parsers. A request whose deadline already passed is
 * answered 504 at once.
 *
 * What Node refuses before Express runs (headers too large, malformed requests) is answered by
 * {@link ferryClientErrors}, installed on the server.
 *
 * @example
 * const server = http.createServer(app);
 * ferryClientErrors(server);
 * app.use(ferryContext());
 * app.use(express.json());
 * app.use(ferryIdempotency({ store }));
 * // routes…
 * app.use(ferryNotFound());
 * app.use(ferryErrors());
 */
export function ferryContext(options: FerryContextOptions = {}): RequestHandler {
  checkOptions('ferryContext', options, SERVER_OPTION_NAMES.context);
  options = withGuardedLogger('ferryContext', options);
  const contextOptions: RequestContextOptions = requestContextOptionsOf(options);
  return (req, res, next) => {
    const scope = openRequestScope(req, res, contextOptions);
    // A body already read by an earlier parser cannot be hashed any more; the idempotency
    // middleware then falls back to the parsed body.
    const hashable = req.headers[HTTP_HEADER.idempotencyKey] !== undefined && !req.readableDidRead;
    const state: ExchangeState = {
      context: scope.context,
      bodyHash: hashable ? new BodyHash() : undefined,
    };
    exchanges.set(req, state);
    for (const [name, value] of Object.entries(scope.responseHeaders)) res.setHeader(name, value);
    if (scope.expired) {
      sendProblem(req, res, new DeadlineExceededError(scope.context.deadline ?? Date.now()), options);
      return;
    }
    enterOnEvents(req, state);
    runWithContext(scope.context, () => next());
  };
}

/**
 * Body parsers continue from the request's 'data' and 'end' events, which Node emits in the async
 * context of the connection, not of the request. body-parser restores the context itself; readers
 * that do not (a hand-written one, some multipart parsers) would hand the handler no context
 * whenever the body arrived after the headers. So every event of this request is emitted inside
 * its context; and the body bytes are hashed on the way when an idempotency key needs them.
 */
function enterOnEvents(req: IncomingMessage, state: ExchangeState): void {
  const emit = req.emit;
  const { bodyHash } = state;
  req.emit = function emitInContext(
    this: IncomingMessage,
    event: string | symbol,
    ...args: unknown[]
  ): boolean {
    if (bodyHash !== undefined && event === 'data') {
      const chunk = args[0];
      if (typeof chunk === 'string' || chunk instanceof Uint8Array) bodyHash.update(chunk);
    }
    return runWithContext(state.context, () => emit.call(this, event, ...args));
  } as IncomingMessage['emit'];
}

/** Options of {@link ferryErrors}. */
export interface FerryErrorsOptions extends ProblemOptions {}

/**
 * The error handler: renders every error as an RFC 9457 problem. Body-parser errors map to 413
 * (too large), 400 (malformed JSON, a body cut short or of the wrong length) and 415 (unsupported
 * encoding or charset); a path parameter that is not valid percent-encoding to 400;
 * `HttpProblemError` to its status; a passed deadline to 504; anything else to 500 without
 * internals. Use it last. An error after the answer was ended is only logged: it cannot change the
 * answer, and Express's final handler would destroy the connection (cutting off an answer still
 * held while `ferryIdempotency` stores it).
 */
export function ferryErrors(options: FerryErrorsOptions = {}): ErrorRequestHandler {
  checkOptions('ferryErrors', options, SERVER_OPTION_NAMES.problem);
  options = withGuardedLogger('ferryErrors', options);
  return (error, req, res, _next) => {
    /** What came too late for a problem document: for the operator only. */
    const logLate = (message: string) =>
      (options.logger ?? stderrProblemLogger).error(message, {
        correlationId: ferryContextOf(req)?.correlationId,
        method: req.method,
        path: req.path,
        error: errorText(error, 'an error whose message cannot be read'),
      });
    if (res.writableEnded) {
      logLate('error after the response was sent');
      return;
    }
    if (res.headersSent) {
      // Too late for a problem document: logged, and the connection closed (as Express would, after
      // printing the stack to stderr), so that the client does not take a cut answer for whole.
      logLate('error after the response had begun; connection closed');
      req.socket.destroy();
      return;
    }
    sendProblem(req, res, fromExpressError(error), options);
  };
}

/** Answers any request that reached it with a 404 problem; use it after the routes. */
export function ferryNotFound(options: ProblemOptions = {}): RequestHandler {
  checkOptions('ferryNotFound', options, SERVER_OPTION_NAMES.problem);
  options = withGuardedLogger('ferryNotFound', options);
  return (req, res) => {
    // A path that is not valid percent-encoding is the client's mistake (400), as Fastify answers
    // it; Express finds it only when a route decodes a parameter from it, and fell through to 404.
    const problem = isDecodablePath(req.path)
      ? new HttpProblemError(404, undefined, { detail: 'No such resource.' })
      : badPathEncodingProblem();
    sendProblem(req, res, problem, options);
  };
}

/** Options of {@link ferryIdempotency}. */
export interface FerryIdempotencyOptions extends IdempotencyOptions, ProblemOptions {
  /**
   * Whose keys a request's are (e.g. the account your authentication middleware found, which must
   * run before this one): without it, two callers sending the same key share one stored answer.
   */
  readonly scope?: (req: Request) => string | undefined;
}

/**
 * Honours `Idempotency-Key` on POST and PATCH: a retry with the same key and request replays the
 * first response (with `idempotent-replayed: true`) without running the handler; the same key with
 * another request is refused with 422, and while the first still runs with 409. The key is held
 * until the handler ends its response, even when the client has left by then: that response is
 * stored (a 5xx releases the key instead) before it goes out, its end held until then, so that a
 * retry sent once the client has it replays it. When the store fails to keep it, the client gets a
 * 500 problem (`IDEMPOTENCY_STORE_FAILED`) instead, or, when part of a streamed answer had left,
 * a connection closed before the answer's end; the key then stays held for the store's lease. A
 * response never ended (a hung handler, one failing after it began sending, a stream its client
 * left) or larger than `maxStoredBodyBytes` (sent, not stored) holds the key for the store's lease.
 *
 * Use it after the body parser. A JSON body counts as its data (members in any order, any spacing:
 * see `jsonBodySha256`); any other body as its raw bytes when {@link ferryContext} ran before the
 * parser, and as the parsed body re-serialized otherwise. A body no parser read (the
 * handler reads the request stream itself) is received in full before the handler runs, at most
 * `maxHeldBodyBytes` of it, hashed, and handed to the handler unchanged.
 */
export function ferryIdempotency(options: FerryIdempotencyOptions): RequestHandler {
  checkOptions('ferryIdempotency', options, [
    ...SERVER_OPTION_NAMES.idempotency,
    ...SERVER_OPTION_NAMES.problem,
  ]);
  const guard = new IdempotencyGuard(options);
  options = withGuardedLogger('ferryIdempotency', options);
  const logger = options.logger ?? stderrProblemLogger;
  return (req, res, next) => {
    if (!guard.applies(req.method, req.headers)) {
      next();
      return;
    }
    bodySha256(req, guard.maxHeldBodyBytes)
      .then((sha256) =>
        guard.begin({
          method: req.method,
          url: req.originalUrl,
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          bodySha256: sha256,
          jsonSha256: jsonBodySha256(req.headers['content-type'], req.body),
          scope: options.scope?.(req),
        }),
      )
      .then((decision) => {
        switch (decision.action) {
          case 'pass':
            next();
            return;
          case 'reject':
            sendProblem(req, res, decision.error, options);
            return;
          case 'replay':
            replayStoredResponse(res, decision.response);
            return;
          case 'run': {
            const { key, claim } = decision;
            // The handler ends its response whether or not the client is still there: a client that
            // left does not end the claim, the handler does. The answer is stored before its end
            // leaves, so that a client that has it finds it stored.
            captureResponse(res, guard.maxStoredBodyBytes, {
              settle: (response) =>
                guard.settleBeforeSending(key, response, claim, (error) =>
                  logger.error('idempotency store failed', {
                    correlationId: ferryContextOf(req)?.correlationId,
                    key,
                    error: errorText(error, 'an error whose message cannot be read'),
                  }),
                ),
              refuse: (error) => sendProblem(req, res, error, options),
            });
            next();
            return;
          }
        }
      }, next);
  };
}

/** SHA-256 of the request body: of its raw bytes whenever they can still be seen. */
function bodySha256(req: Request, maxHeldBytes: number): Promise<string> {
  let raw = exchanges.get(req)?.bodyHash;
  if (raw === undefined && !req.readableDidRead) {
    // Nothing read the body yet (no parser for its type, no ferryContext before): hash it from here.
    raw = new BodyHash();
    hashBodyAsRead(req, raw);
  }
  if (raw !== undefined) {
    const hash = raw;
    // Resolves at once when a parser read the body to its end.
    return holdRestOfBody(req, hash, maxHeldBytes).then(() => hash.digest());
  }
  // Parsed before ferryContext ran: the raw bytes are gone; hash what the parser made of them.
  const body: unknown = req.body;
  if (body === undefined || body === null) {
    // Read by something that kept nothing: no fingerprint can tell this body from another.
    return Promise.reject(
      new Error(
        'ferryIdempotency: the request body was read before it could be fingerprinted; use ferryContext() before the middleware that reads it',
      ),
    );
  }
  if (typeof body === 'string' || body instanceof Uint8Array) return Promise.resolve(sha256Hex(body));
  return Promise.resolve(sha256Hex(JSON.stringify(body)));
}

/** Options of {@link ferryHealth}. */
export interface FerryHealthOptions extends HealthRouteOptions {}

/**
 * Answers `GET <path>/live` (always 200 while the process runs) and `GET <path>/ready` (200, or
 * 503 when a check fails or a breaker is open) with a JSON report; other requests pass through.
 *
 * @example
 * app.use(ferryHealth({ checks: { db: () => pool.query('select 1') }, breakers: () => users.breakers() }));
 */
export function ferryHealth(options: FerryHealthOptions = {}): RequestHandler {
  checkOptions('ferryHealth', options, SERVER_OPTION_NAMES.health);
  const health = createHealth(options);
  const path = healthPathOf(options);
  const answer = (res: ServerResponse, report: HealthReport) => {
    const body = JSON.stringify(report);
    res.statusCode = report.status === 'ok' ? 200 : 503;
    res.setHeader('content-type', 'application/json; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.end(body);
  };
  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      next();
      return;
    }
    if (req.path === `${path}/live`) health.live().then((report) => answer(res, report), next);
    else if (req.path === `${path}/ready`) health.ready().then((report) => answer(res, report), next);
    else next();
  };
}

/** What `error` answers as; itself when reading it throws (a Proxy, hostile getters): a 500 then. */
function fromExpressError(error: unknown): unknown {
  try {
    return expressProblemOf(error);
  } catch {
    return error;
  }
}

function expressProblemOf(error: unknown): unknown {
  if (typeof error !== 'object' || error === null || isFerryError(error)) return error;
  const { type, status, statusCode, expose, message } = error as {
    type?: unknown;
    status?: unknown;
    statusCode?: unknown;
    expose?: unknown;
    message?: unknown;
  };
  // body-parser's error types.
  switch (type) {
    case 'entity.too.large':
      return bodyTooLargeProblem();
    case 'entity.parse.failed':
      return malformedJsonProblem();
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return unsupportedMediaTypeProblem();
    case 'request.aborted':
    case 'request.size.invalid':
      return new HttpProblemError(400, undefined, {
        detail: 'The request body does not have the length it announced.',
      });
  }
  // body-parser passes zlib's own error (`Z_DATA_ERROR`: "incorrect header check"; brotli's
  // `ERR__ERROR_FORMAT_…`: "Decompression failed") as a 400.
  if ((status === 400 || statusCode === 400) && isDecompressionError(error)) {
    return new HttpProblemError(400, undefined, {
      detail: 'The request body cannot be decoded as its Content-Encoding says.',
    });
  }
  // The router decodes path parameters and throws this URIError, with a status but not `expose`.
  if (error instanceof URIError && (status === 400 || statusCode === 400)) return badPathEncodingProblem();
  // http-errors marks what is meant for the client with `expose`; a status on any other error may
  // come from a call this service made, and is not ours to echo.
  const code = typeof status === 'number' ? status : statusCode;
  if (expose === true && typeof code === 'number' && code >= 400 && code <= 499) {
    return new HttpProblemError(code, undefined, typeof message === 'string' ? { detail: message } : {});
  }
  return error;
}

/**
 * An error of a zlib decompression stream: a numeric `errno` and a zlib (`Z_DATA_ERROR`, `Z_BUF_ERROR`)
 * or brotli (`ERR__ERROR_FORMAT_PADDING_2`, `ERR_BROTLI_…`) code. An error whose getters throw is not one.
 */
function isDecompressionError(error: object): boolean {
  try {
    const { code, errno } = error as { code?: unknown; errno?: unknown };
    return typeof errno === 'number' && typeof code === 'string' && /^(Z_|ERR__|ERR_BROTLI)/.test(code);
  } catch {
    return false;
  }
}

function sendProblem(
  req: IncomingMessage,
  res: ServerResponse,
  error: unknown,
  options: ProblemOptions,
): void {
  const url = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';
  const response = problemFromError(
    error,
    { method: req.method ?? 'GET', path: url.split('?', 1)[0] ?? '/', context: ferryContextOf(req) },
    options,
  );
  const body = renderProblem(response.problem);
  if (response.final === true) markFinalAnswer(res);
  res.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  res.setHeader('content-type', PROBLEM_CONTENT_TYPE);
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

/** `options` with its logger checked and kept from throwing (see `loggerOption`). */
function withGuardedLogger<O extends ProblemOptions>(where: string, options: O): O {
  const logger = loggerOption(where, options.logger, ['error']);
  return logger === undefined ? options : { ...options, logger };
}
