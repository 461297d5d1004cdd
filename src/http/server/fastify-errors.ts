import type { FastifyError, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import { isFerryError } from '../../errors/ferry-error.js';
import { checkOptions } from '../../errors/options-object.js';
import { loggerOption } from '../../logging/logger-option.js';
import { PROBLEM_CONTENT_TYPE } from '../headers.js';
import type { FerryFastifyOptions } from './fastify.js';
import { markFinalAnswer } from './final-answer.js';
import {
  badPathEncodingProblem,
  bodyTooLargeProblem,
  HttpProblemError,
  malformedJsonProblem,
  type ProblemOptions,
  problemFromError,
  RequestValidationError,
  renderProblem,
  SERVER_OPTION_NAMES,
  stderrProblemLogger,
  unsupportedMediaTypeProblem,
} from './problem.js';
import { openRequestScope, type RequestContextOptions, requestContextOptionsOf } from './request-context.js';

/** The options of `ferryFastify` that {@link ferryFastifyOptions} reads. */
export interface FerryFastifyServerOptions extends RequestContextOptions, ProblemOptions {}

/** The Fastify server options {@link ferryFastifyOptions} sets. */
export type FerryFastifyServerSettings = Required<
  Pick<FastifyServerOptions, 'frameworkErrors' | 'return503OnClosing'>
>;

/**
 * Fastify server options that make the answers Fastify gives before any plugin runs RFC 9457
 * problems too, as `ferryFastify` makes every other one. Fastify reads them only at construction, so
 * they cannot come with the plugin: spread them into `Fastify({...})`, with the same logger and
 * context options as the plugin.
 *
 * - `frameworkErrors`: a path that is not valid percent-encoding (400), a path parameter over
 *   `maxParamLength` (414) and a failing async route constraint (500), instead of plain JSON.
 * - `return503OnClosing: false`: requests arriving while the instance closes are refused by the
 *   plugin with a 503 problem (`connection: close`) instead of Fastify's plain-JSON 503; the load
 *   shedding is the same.
 *
 * @example
 * const ferry = { logger };
 * const app = Fastify({ ...ferryFastifyOptions(ferry), bodyLimit: 1_048_576 });
 * ferryFastify(app, ferry);
 */
export function ferryFastifyOptions(
  options: FerryFastifyServerOptions | FerryFastifyOptions = {},
): FerryFastifyServerSettings {
  // Every name ferryFastify takes: the same options object usually goes to both.
  checkOptions('ferryFastifyOptions', options, SERVER_OPTION_NAMES.fastify);
  const problemOptions = problemOptionsOf(options, 'ferryFastifyOptions');
  const contextOptions = requestContextOptionsOf(options);
  const frameworkErrors = (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
    // No hook ran: open the context here, so that the answer echoes the correlation id and trace.
    const scope = openRequestScope(request.raw, reply.raw, contextOptions);
    request.ferry = scope.context;
    reply.headers(scope.responseHeaders);
    sendProblem(reply, request, fromFastifyError(error), problemOptions);
  };
  return {
    frameworkErrors,
    return503OnClosing: false,
  };
}

/** The problem options among the plugin's options, with the default logger. */
export function problemOptionsOf(options: ProblemOptions, where = 'ferryFastify'): ProblemOptions {
  return {
    logger: loggerOption(where, options.logger, ['error']) ?? stderrProblemLogger,
    ...(options.mapError === undefined ? {} : { mapError: options.mapError }),
  };
}

/**
 * What Fastify threw, as the error {@link problemFromError} maps; what cannot be read (a getter that
 * throws) as it is, for problemFromError's 500.
 */
export function fromFastifyError(thrown: unknown): unknown {
  try {
    return fastifyProblemOf(thrown);
  } catch {
    return thrown;
  }
}

function fastifyProblemOf(thrown: unknown): unknown {
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
    case 'FST_ERR_BAD_URL':
      return badPathEncodingProblem();
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new HttpProblemError(414, undefined, {
        detail: 'A segment of the request path is longer than this server accepts.',
      });
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

/** The problem answer `error` maps to, for `request`. */
export function problemResponseOf(request: FastifyRequest, error: unknown, options: ProblemOptions) {
  return problemFromError(
    error,
    {
      method: request.method,
      path: request.url.split('?', 1)[0] ?? '/',
      context: request.ferry ?? undefined,
    },
    options,
  );
}

/** Answers with the problem `error` maps to. */
export function sendProblem(
  reply: FastifyReply,
  request: FastifyRequest,
  error: unknown,
  options: ProblemOptions,
): void {
  const response = problemResponseOf(request, error, options);
  if (response.final === true) markFinalAnswer(reply.raw);
  reply
    .code(response.status)
    .headers(response.headers)
    .header('content-type', PROBLEM_CONTENT_TYPE)
    // A Buffer, so that Fastify does not append a charset parameter problem+json does not define.
    .send(Buffer.from(renderProblem(response.problem)));
}
