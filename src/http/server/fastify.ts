import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { runWithContext } from '../../context/context.js';
import { checkOptions } from '../../errors/options-object.js';
import { HTTP_HEADER, PROBLEM_CONTENT_TYPE } from '../headers.js';
import { BodyHash, hashBodyAsRead, holdRestOfBody } from './body-fingerprint.js';
import { ferryClientErrors } from './client-errors.js';
import { fromFastifyError, problemOptionsOf, problemResponseOf, sendProblem } from './fastify-errors.js';
import { createHealth, type HealthReport, type HealthRouteOptions, healthPathOf } from './health.js';
import {
  IdempotencyGuard,
  type IdempotencyOptions,
  jsonBodySha256,
  replayStoredResponse,
} from './idempotency.js';
import {
  HttpProblemError,
  type ProblemOptions,
  renderProblem,
  SERVER_OPTION_NAMES,
  stderrProblemLogger,
} from './problem.js';
import {
  DeadlineExceededError,
  openRequestScope,
  type RequestContext,
  type RequestContextOptions,
  requestContextOptionsOf,
} from './request-context.js';
import { captureResponse } from './response-capture.js';
import { RouteMethods } from './route-methods.js';

export { ferryClientErrors } from './client-errors.js';
export {
  type FerryFastifyServerOptions,
  type FerryFastifyServerSettings,
  ferryFastifyOptions,
} from './fastify-errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The Ferry context of this request (also `currentContext()` inside handlers and hooks). */
    ferry: RequestContext;
  }
}

/** Options of {@link ferryFastify}. */
export interface FerryFastifyOptions extends RequestContextOptions, ProblemOptions {
  /**
   * Honour `Idempotency-Key` on POST and PATCH with this store. `scope` names whose keys a request's
   * are (e.g. the account your `onRequest` authentication found): without it, two callers sending
   * the same key share one stored answer. It runs in `preHandler`. An answer is stored before it
   * goes out; a 500 problem (`IDEMPOTENCY_STORE_FAILED`) replaces one the store failed to keep, or,
   * when part of a streamed answer had left, the connection closes before its end. @default off
   */
  readonly idempotency?: IdempotencyOptions & {
    readonly scope?: (request: FastifyRequest) => string | undefined;
  };
  /** Register `GET <path>/live` and `GET <path>/ready`. @default off */
  readonly health?: HealthRouteOptions;
  /**
   * Answer unknown routes with a problem (`setNotFoundHandler`): 405 with `Allow` when routes
   * registered after this call serve the path under other methods, else 404. @default true
   */
  readonly notFound?: boolean;
  /**
   * Answer what Node's HTTP parser refuses (431, 400, 408) with problems, through
   * {@link ferryClientErrors} on `app.server`, ahead of Fastify's plain-JSON `clientErrorHandler`.
   * @default true
   */
  readonly clientErrors?: boolean;
}

interface IdempotencyState {
  readonly hash: BodyHash;
  /** Of the body as the JSON parser made it, before validation could change it (see preValidation). */
  jsonSha256?: string | undefined;
  /** The claimed key, once the handler may run. */
  key?: string;
  claim?: string | undefined;
  /** Fastify is sending the answer (onSend ran): the response, once it ends, settles the key. */
  sending: boolean;
  /** The key was stored or released (or never claimed): nothing more to do. */
  settled: boolean;
}

type RouteHandler = (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) => unknown;

/**
 * Adds Ferry's server side to a Fastify instance: request context (correlation id, trace, deadline,
 * signal) around every request, RFC 9457 problems for every error, and optionally idempotency keys
 * and health endpoints. Hooks go on the instance passed, so call it on the root instance (or wrap
 * it with fastify-plugin) before registering routes and hooks of your own.
 *
 * A few answers Fastify gives before any hook runs (a path that is not valid percent-encoding, a
 * request arriving while the instance closes) can only be changed by options given to `Fastify()`:
 * spread {@link ferryFastifyOptions} there so that they are problems too.
 *
 * @example
 * const app = Fastify();
 * ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, health: { checks: { db } } });
 * app.post('/orders', async (request) => placeOrder(request.body, { signal: request.ferry.signal }));
 */
export function ferryFastify(app: FastifyInstance, options: FerryFastifyOptions = {}): void {
  checkOptions('ferryFastify', options, SERVER_OPTION_NAMES.fastify);
  // Objects, or left out: `health: true` was taken for `{}`, `idempotency: 5` failed later.
  if (options.idempotency !== undefined) {
    checkOptions('ferryFastify idempotency', options.idempotency, SERVER_OPTION_NAMES.idempotency);
  }
  if (options.health !== undefined) {
    checkOptions('ferryFastify health', options.health, SERVER_OPTION_NAMES.health);
  }
  // Health options checked before the instance is touched: a refused one leaves no hooks behind.
  const health =
    options.health === undefined
      ? undefined
      : { probes: createHealth(options.health), path: healthPathOf(options.health) };
  const problemOptions = problemOptionsOf(options);
  const contextOptions: RequestContextOptions = requestContextOptionsOf(options);

  if (!app.hasRequestDecorator('ferry')) app.decorateRequest('ferry', null as unknown as RequestContext);

  if ((options.clientErrors ?? true) && app.server !== undefined) ferryClientErrors(app.server);

  // Fastify refuses requests arriving while it closes before any hook runs, unless
  // `return503OnClosing` is off (as ferryFastifyOptions sets it): then they are refused here, as a problem.
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });

  app.addHook('onRequest', (request, reply, done) => {
    const scope = openRequestScope(request.raw, reply.raw, contextOptions);
    request.ferry = scope.context;
    reply.headers(scope.responseHeaders);
    if (closing) {
      reply.header('connection', 'close');
      sendProblem(reply, request, shuttingDownProblem(), problemOptions);
      return;
    }
    if (scope.expired) {
      const deadline = scope.context.deadline ?? Date.now();
      sendProblem(reply, request, new DeadlineExceededError(deadline), problemOptions);
      return;
    }
    runWithContext(scope.context, done);
  });

  // Body parsing resumes from stream events, whose async context is the connection's. Fastify 5
  // carries the request's context across its own parsers; entering it again here keeps hooks and
  // handler inside it whatever a custom parser or an earlier hook did.
  app.addHook('preValidation', (request, _reply, done) => {
    runWithContext(request.ferry, done);
  });

  app.setErrorHandler((error, request, reply) => {
    sendProblem(reply, request, fromFastifyError(error), problemOptions);
  });

  if (options.notFound ?? true) {
    const routes = new RouteMethods({
      caseSensitive: app.initialConfig.caseSensitive,
      ignoreTrailingSlash: app.initialConfig.ignoreTrailingSlash,
    });
    app.addHook('onRoute', (route) => routes.add(route.url, route.method));
    app.setNotFoundHandler((request, reply) => {
      const allowed = routes.allowed(request.raw.url ?? '/');
      sendProblem(
        reply,
        request,
        allowed.length > 0 && !allowed.includes(request.method)
          ? new HttpProblemError(405, undefined, {
              detail: `This resource answers ${allowed.join(', ')}.`,
              headers: { allow: allowed.join(', ') },
            })
          : new HttpProblemError(404, undefined, { detail: 'No such resource.' }),
        problemOptions,
      );
    });
  }

  if (options.idempotency !== undefined)
    installIdempotency(
      app,
      new IdempotencyGuard(options.idempotency),
      options.idempotency.scope,
      problemOptions,
    );

  if (health !== undefined) {
    const { probes, path } = health;
    const answer = (reply: FastifyReply, report: HealthReport) =>
      reply
        .code(report.status === 'ok' ? 200 : 503)
        .header('cache-control', 'no-store')
        .send(report);
    app.get(`${path}/live`, async (_request, reply) => answer(reply, await probes.live()));
    app.get(`${path}/ready`, async (_request, reply) => answer(reply, await probes.ready()));
  }
}

function installIdempotency(
  app: FastifyInstance,
  guard: IdempotencyGuard,
  scope: ((request: FastifyRequest) => string | undefined) | undefined,
  problemOptions: ProblemOptions,
): void {
  const states = new WeakMap<FastifyRequest, IdempotencyState>();
  const logger = problemOptions.logger ?? stderrProblemLogger;
  const reportStoreFailure = (request: FastifyRequest, key: string, error: unknown) =>
    logger.error('idempotency store failed', {
      correlationId: request.ferry?.correlationId,
      key,
      error: error instanceof Error ? error.message : String(error),
    });
  // Ends a claim once: with the handler's answer, or releasing the key. Never rejects.
  const settle = (
    request: FastifyRequest,
    state: IdempotencyState,
    work: (key: string, claim: string | undefined) => Promise<void>,
  ): Promise<void> => {
    const key = state.key;
    if (key === undefined || state.settled) return Promise.resolve();
    state.settled = true;
    return work(key, state.claim).catch((error: unknown) => reportStoreFailure(request, key, error));
  };

  // The fingerprint needs the raw body, which Fastify does not keep: hash it as it is read, whoever
  // reads it (Fastify's parser, or the handler itself behind a pass-through content-type parser).
  app.addHook('preParsing', (request, _reply, payload, done) => {
    if (guard.applies(request.method, request.headers)) {
      const hash = new BodyHash();
      hashBodyAsRead(request.raw, hash);
      states.set(request, { hash, sending: false, settled: false });
    }
    done(null, payload);
  });

  // The parsed body, before a route schema's validation coerces it, fills in defaults or drops members.
  app.addHook('preValidation', (request, _reply, done) => {
    const state = states.get(request);
    if (state !== undefined) state.jsonSha256 = jsonBodySha256(request.headers['content-type'], request.body);
    done();
  });

  app.addHook('preHandler', (request, reply, done) => {
    const state = states.get(request);
    if (state === undefined) {
      done();
      return;
    }
    // A body no parser read to its end is received first (bounded), so that the digest covers it.
    holdRestOfBody(request.raw, state.hash, guard.maxHeldBodyBytes)
      .then(() =>
        guard.begin({
          method: request.method,
          url: request.url,
          headers: request.headers,
          rawHeaders: request.raw.rawHeaders,
          bodySha256: state.hash.digest(),
          jsonSha256: state.jsonSha256,
          scope: scope?.(request),
        }),
      )
      .then((decision) => {
        switch (decision.action) {
          case 'pass':
            done();
            return;
          case 'reject':
            done(decision.error);
            return;
          case 'replay': {
            // The stored bytes are the answer as it left, after the application's onSend hooks:
            // written to the raw response, so that no hook runs on them a second time (an envelope
            // would wrap twice, a signature sign twice) and nothing is added (a content-type).
            reply.hijack();
            // Headers this request already has (correlation id, trace) live on the reply, not on raw.
            for (const [name, value] of Object.entries(reply.getHeaders())) {
              if (value !== undefined) reply.raw.setHeader(name, value);
            }
            replayStoredResponse(reply.raw, decision.response);
            return;
          }
          case 'run':
            // Held until the handler's answer ends, whatever the client does meanwhile: a retry
            // arriving before gets 409, one arriving after gets the answer. The answer is taken
            // from the raw response, where every way of sending it ends up: Fastify's send of any
            // payload (a stream too), an error's problem, a hijacked reply written by hand; and it
            // is stored before its end leaves, so that a client that has it finds it stored. Held
            // there, not in an async onSend hook, Fastify's send stays synchronous (`reply.sent`
            // is true once it ended the response): an async handler that calls `reply.send`
            // without returning the reply would otherwise have Fastify send a second time.
            state.key = decision.key;
            state.claim = decision.claim;
            captureResponse(reply.raw, guard.maxStoredBodyBytes, {
              settle: (response) => {
                const key = state.key;
                if (key === undefined || state.settled) return Promise.resolve();
                state.settled = true;
                return guard.settleBeforeSending(key, response, state.claim, (error) =>
                  reportStoreFailure(request, key, error),
                );
              },
              refuse: (error) => sendRawProblem(request, reply, error, problemOptions),
            });
            done();
            return;
        }
      }, done);
  });

  // Synchronous, so that it leaves Fastify's send as it is (see 'run' above).
  app.addHook('onSend', (request, _reply, payload, done) => {
    const state = states.get(request);
    if (state !== undefined) state.sending = true;
    done(null, payload);
  });

  // What the response does not show: an async handler that finished without Fastify sending anything.
  // Returns what Fastify should take as the handler's result.
  const afterHandler = (
    request: FastifyRequest,
    reply: FastifyReply,
    state: IdempotencyState,
    payload: unknown,
  ): unknown => {
    if (state.settled || payload !== undefined || reply.sent || reply.raw.headersSent) return payload;
    if (state.sending) {
      // The handler called `reply.send` without returning the reply, and a later async onSend hook
      // still holds the answer: Fastify would send again. Waiting for it is what `return reply` does.
      return new Promise<undefined>((resolve) => {
        reply.then(
          () => resolve(undefined),
          () => resolve(undefined),
        );
      });
    }
    // Resolved with nothing: Fastify sends an empty answer, unless the client has left. The
    // handler finished all the same: store the answer it would have had.
    const socket = request.raw.socket;
    if (socket !== null && !socket.destroyed) return payload;
    void settle(request, state, (key, claim) =>
      guard.finish(key, reply.statusCode, reply.getHeaders(), undefined, claim),
    );
    return payload;
  };

  // Tells afterHandler when an async handler resolved (routes registered after ferryFastify); a
  // request without a key pays one WeakMap lookup for it.
  app.addHook('onRoute', (route) => {
    const handler = route.handler as RouteHandler;
    const watched: RouteHandler = function idempotentHandler(request, reply) {
      const result = handler.call(this, request, reply);
      if (isPromiseLike(result)) {
        const state = states.get(request);
        if (state?.key !== undefined) {
          return result.then((payload) => afterHandler(request, reply, state, payload));
        }
      }
      return result;
    };
    route.handler = watched as typeof route.handler;
  });
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
  );
}

/**
 * Answers with a problem on the raw response, past Fastify's send (whose hooks already ran on the
 * answer this replaces): with the request's correlation id and trace, as every answer has them.
 */
function sendRawProblem(
  request: FastifyRequest,
  reply: FastifyReply,
  error: unknown,
  options: ProblemOptions,
): void {
  const raw = reply.raw;
  for (const name of [HTTP_HEADER.correlationId, HTTP_HEADER.traceparent]) {
    const value = reply.getHeader(name);
    if (value !== undefined) raw.setHeader(name, value);
  }
  const response = problemResponseOf(request, error, options);
  const body = renderProblem(response.problem);
  raw.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) raw.setHeader(name, value);
  raw.setHeader('content-type', PROBLEM_CONTENT_TYPE);
  raw.setHeader('content-length', Buffer.byteLength(body));
  raw.end(body);
}

/** Refuses a request that arrived while the instance closes: another instance should take it. */
function shuttingDownProblem(): HttpProblemError {
  return new HttpProblemError(503, undefined, { detail: 'This instance is shutting down; try again.' });
}
