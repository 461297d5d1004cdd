import { createHash, type Hash } from 'node:crypto';
import { pipeline, Transform } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { runWithContext } from '../../context/context.js';
import { isFerryError } from '../../errors/ferry-error.js';
import { HTTP_HEADER, PROBLEM_CONTENT_TYPE } from '../headers.js';
import { createHealth, DEFAULT_HEALTH_PATH, type HealthReport, type HealthRouteOptions } from './health.js';
import { IdempotencyGuard, type IdempotencyOptions, storedBody } from './idempotency.js';
import {
  bodyTooLargeProblem,
  HttpProblemError,
  malformedJsonProblem,
  type ProblemOptions,
  problemFromError,
  RequestValidationError,
  renderProblem,
  stderrProblemLogger,
  unsupportedMediaTypeProblem,
} from './problem.js';
import {
  DeadlineExceededError,
  openRequestScope,
  type RequestContext,
  type RequestContextOptions,
} from './request-context.js';

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
   * the same key share one stored answer. It runs in `preHandler`. @default off
   */
  readonly idempotency?: IdempotencyOptions & {
    readonly scope?: (request: FastifyRequest) => string | undefined;
  };
  /** Register `GET <path>/live` and `GET <path>/ready`. @default off */
  readonly health?: HealthRouteOptions;
  /** Answer unknown routes with a 404 problem (`setNotFoundHandler`). @default true */
  readonly notFound?: boolean;
}

interface IdempotencyState {
  readonly hash: Hash;
  key?: string;
  settled: boolean;
}

/**
 * Adds Ferry's server side to a Fastify instance: request context (correlation id, trace, deadline,
 * signal) around every request, RFC 9457 problems for every error, and optionally idempotency keys
 * and health endpoints. Hooks go on the instance passed, so call it on the root instance (or wrap
 * it with fastify-plugin) before registering routes and hooks of your own.
 *
 * @example
 * const app = Fastify();
 * ferryFastify(app, { idempotency: { store: new MemoryIdempotencyStore() }, health: { checks: { db } } });
 * app.post('/orders', async (request) => placeOrder(request.body, { signal: request.ferry.signal }));
 */
export function ferryFastify(app: FastifyInstance, options: FerryFastifyOptions = {}): void {
  const problemOptions: ProblemOptions = {
    logger: options.logger ?? stderrProblemLogger,
    ...(options.mapError === undefined ? {} : { mapError: options.mapError }),
  };
  const contextOptions: RequestContextOptions =
    options.maxDeadlineMs === undefined ? {} : { maxDeadlineMs: options.maxDeadlineMs };

  if (!app.hasRequestDecorator('ferry')) app.decorateRequest('ferry', null as unknown as RequestContext);

  app.addHook('onRequest', (request, reply, done) => {
    const scope = openRequestScope(request.raw, reply.raw, contextOptions);
    request.ferry = scope.context;
    reply.headers(scope.responseHeaders);
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
    app.setNotFoundHandler((request, reply) => {
      sendProblem(
        reply,
        request,
        new HttpProblemError(404, undefined, { detail: 'No such resource.' }),
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

  if (options.health !== undefined) {
    const health = createHealth(options.health);
    const path = options.health.path ?? DEFAULT_HEALTH_PATH;
    const answer = (reply: FastifyReply, report: HealthReport) =>
      reply
        .code(report.status === 'ok' ? 200 : 503)
        .header('cache-control', 'no-store')
        .send(report);
    app.get(`${path}/live`, async (_request, reply) => answer(reply, await health.live()));
    app.get(`${path}/ready`, async (_request, reply) => answer(reply, await health.ready()));
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
  const release = (request: FastifyRequest, key: string, work: () => Promise<void>) =>
    work().catch((error: unknown) =>
      logger.error('idempotency store failed', {
        correlationId: request.ferry?.correlationId,
        key,
        error: error instanceof Error ? error.message : String(error),
      }),
    );

  // The fingerprint needs the raw body, which Fastify does not keep: hash it as it streams past.
  app.addHook('preParsing', (request, _reply, payload, done) => {
    if (!guard.applies(request.method, request.headers)) {
      done(null, payload);
      return;
    }
    const state: IdempotencyState = { hash: createHash('sha256'), settled: false };
    states.set(request, state);
    const tap = Object.assign(
      new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          state.hash.update(chunk);
          tap.receivedEncodedLength += chunk.length;
          callback(null, chunk);
        },
      }),
      { receivedEncodedLength: 0 },
    );
    pipeline(payload, tap, () => {});
    done(null, tap);
  });

  app.addHook('preHandler', async (request, reply) => {
    const state = states.get(request);
    if (state === undefined) return;
    const decision = await guard.begin({
      method: request.method,
      url: request.url,
      headers: request.headers,
      bodySha256: state.hash.digest('hex'),
      scope: scope?.(request),
    });
    switch (decision.action) {
      case 'pass':
        return;
      case 'reject':
        throw decision.error;
      case 'replay':
        state.settled = true;
        return reply
          .code(decision.response.status)
          .headers(decision.response.headers)
          .header(HTTP_HEADER.idempotentReplay, 'true')
          .send(storedBody(decision.response));
      case 'run': {
        const key = decision.key;
        state.key = key;
        // No response at all (the client left, the handler never answered): free the key.
        reply.raw.once('close', () => {
          if (state.settled) return;
          state.settled = true;
          void release(request, key, () => guard.abandon(key));
        });
        return;
      }
    }
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const state = states.get(request);
    if (state?.key === undefined || state.settled) return payload;
    state.settled = true;
    const key = state.key;
    // Awaited, so that a client retrying right after this response sees it stored.
    await release(request, key, () =>
      typeof payload === 'string' ||
      payload instanceof Uint8Array ||
      payload === null ||
      payload === undefined
        ? guard.finish(key, reply.statusCode, reply.getHeaders(), payload ?? undefined)
        : // A streamed body cannot be kept for replay.
          guard.abandon(key),
    );
    return payload;
  });
}

function fromFastifyError(thrown: unknown): unknown {
  if (typeof thrown !== 'object' || thrown === null) return thrown;
  const error = thrown as Partial<FastifyError> & { expose?: unknown };
  if (Array.isArray(error.validation)) {
    const where = error.validationContext;
    return new RequestValidationError(
      error.validation.map((v) => {
        const missing = v.keyword === 'required' ? v.params.missingProperty : undefined;
        const segments = [
          ...(where === undefined ? [] : [where]),
          ...v.instancePath.split('/').filter(Boolean),
          ...(typeof missing === 'string' ? [missing] : []),
        ];
        return { path: segments.join('.'), message: v.message ?? v.keyword };
      }),
    );
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return bodyTooLargeProblem();
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return unsupportedMediaTypeProblem();
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return malformedJsonProblem();
  }
  if (isFerryError(thrown)) return thrown;
  // Fastify's own errors (and http-errors marked `expose`) carry a status meant for the client;
  // a `statusCode` on any other error may come from a call this service made, and is not ours to echo.
  const status = error.statusCode;
  const exposed = (typeof error.code === 'string' && error.code.startsWith('FST_')) || error.expose === true;
  if (exposed && typeof status === 'number' && status >= 400 && status <= 599) {
    const detail = status < 500 && error.expose === true ? error.message : undefined;
    return new HttpProblemError(status, undefined, detail === undefined ? {} : { detail });
  }
  return thrown;
}

function sendProblem(
  reply: FastifyReply,
  request: FastifyRequest,
  error: unknown,
  options: ProblemOptions,
): void {
  const response = problemFromError(
    error,
    {
      method: request.method,
      path: request.url.split('?', 1)[0] ?? '/',
      context: request.ferry ?? undefined,
    },
    options,
  );
  reply
    .code(response.status)
    .headers(response.headers)
    .header('content-type', PROBLEM_CONTENT_TYPE)
    // A Buffer, so that Fastify does not append a charset parameter problem+json does not define.
    .send(Buffer.from(renderProblem(response.problem)));
}
