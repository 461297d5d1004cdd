import { setMaxListeners } from 'node:events';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { FerryContext } from '../../context/context.js';
import { errorGuard, FerryError, InvalidOptionsError } from '../../errors/ferry-error.js';
import { uuidv7 } from '../../ids/uuidv7.js';
import { MAX_TIMER_MS } from '../../time/max-timer.js';
import { HTTP_HEADER } from '../headers.js';
import { childTraceparent } from './traceparent.js';

// Re-exported: the trace context was first defined here, and callers import it from here.
export { childTraceparent, newTraceparent, parseTraceparent, type Traceparent } from './traceparent.js';

/** How an incoming `x-deadline-ms` is honoured, once it is known whether the caller is trusted. */
export interface DeadlineOptions {
  /**
   * Longest deadline honoured from `x-deadline-ms`; longer ones are shortened to it, so that a
   * careless caller cannot pin a request (and its timers) for days.
   * @default 3_600_000 (one hour)
   */
  readonly maxDeadlineMs?: number;
  /**
   * Shortest deadline honoured from `x-deadline-ms`; shorter ones (`0` included) are raised to it.
   * The deadline becomes the ambient one that `ServiceClient` honours, so without a floor any caller
   * can make this service's own outgoing calls time out by sending a tiny one.
   * @default 0 (the caller's deadline as sent)
   */
  readonly minDeadlineMs?: number;
}

/** Options of the request context the server middleware opens around each request. */
export interface RequestContextOptions extends DeadlineOptions {
  /**
   * Whether to honour the caller's `x-deadline-ms`: `false` ignores it from everyone (a service
   * exposed to clients you do not control), a function decides per request (e.g. only callers inside
   * the cluster, or with a client certificate). An ignored deadline is as if none was sent.
   * @default true
   */
  readonly trustDeadline?: boolean | ((req: IncomingMessage) => boolean);
}

export const DEFAULT_REQUEST_CONTEXT_OPTIONS = Object.freeze({
  maxDeadlineMs: 3_600_000,
  minDeadlineMs: 0,
  trustDeadline: true,
});

/**
 * The request context options among `options` (which may hold other middleware options), checked:
 * what the adapters pass to {@link openRequestScope}. Throws an {@link InvalidOptionsError} for a
 * bound that is not an integer from 0 to 2^31-1, or a minimum above the maximum.
 */
export function requestContextOptionsOf(options: RequestContextOptions): RequestContextOptions {
  const { maxDeadlineMs, minDeadlineMs, trustDeadline } = options;
  for (const [name, value] of [
    ['maxDeadlineMs', maxDeadlineMs],
    ['minDeadlineMs', minDeadlineMs],
  ] as const) {
    // At most a Node timer's longest: a longer one fired at once, aborting every request at its start.
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0 || value > MAX_TIMER_MS)) {
      throw new InvalidOptionsError(`${name} must be an integer from 0 to ${MAX_TIMER_MS}, got ${value}`);
    }
  }
  const max = maxDeadlineMs ?? DEFAULT_REQUEST_CONTEXT_OPTIONS.maxDeadlineMs;
  const min = minDeadlineMs ?? DEFAULT_REQUEST_CONTEXT_OPTIONS.minDeadlineMs;
  if (min > max) {
    throw new InvalidOptionsError(`minDeadlineMs (${min}) must not be above maxDeadlineMs (${max})`);
  }
  if (
    trustDeadline !== undefined &&
    typeof trustDeadline !== 'boolean' &&
    typeof trustDeadline !== 'function'
  ) {
    throw new InvalidOptionsError('trustDeadline must be a boolean or a function of the request');
  }
  return {
    ...(maxDeadlineMs === undefined ? {} : { maxDeadlineMs }),
    ...(minDeadlineMs === undefined ? {} : { minDeadlineMs }),
    ...(trustDeadline === undefined ? {} : { trustDeadline }),
  };
}

/** The context of a request being served: always carries a trace and a signal. */
export interface RequestContext extends FerryContext {
  readonly traceparent: string;
  readonly signal: AbortSignal;
}

/** The caller's deadline passed: the work was cancelled (or never started). Mapped to 504. */
export class DeadlineExceededError extends FerryError {
  /** The deadline that passed, epoch ms. */
  readonly deadline: number;
  constructor(deadline: number) {
    super('DEADLINE_EXCEEDED', `the caller's deadline passed ${Math.max(0, Date.now() - deadline)} ms ago`);
    this.deadline = deadline;
  }
}
export const isDeadlineExceededError = errorGuard<DeadlineExceededError>('DEADLINE_EXCEEDED');

/** The client closed the connection before the response was sent; used as the signal's abort reason. */
export class ClientDisconnectedError extends FerryError {
  constructor() {
    super('CLIENT_DISCONNECTED', 'the client closed the connection before the response was sent');
  }
}
export const isClientDisconnectedError = errorGuard<ClientDisconnectedError>('CLIENT_DISCONNECTED');

// ---------------------------------------------------------------------------------------------
// Correlation id

const CORRELATION_ID = /^[\x21-\x7e]{1,200}$/;

/** True for 1 to 200 visible ASCII characters: what is safe to echo in a header and a log line. */
export function isValidCorrelationId(value: unknown): value is string {
  return typeof value === 'string' && CORRELATION_ID.test(value);
}

// ---------------------------------------------------------------------------------------------
// Deadline

const DEADLINE_MS = /^\d{1,15}$/;

/**
 * Milliseconds left from `x-deadline-ms`, capped at `max` and raised to `min`; `undefined` when
 * missing or malformed.
 */
export function parseDeadlineMs(value: unknown, max: number, min = 0): number | undefined {
  if (typeof value !== 'string' || !DEADLINE_MS.test(value)) return undefined;
  return Math.max(min, Math.min(Number(value), max));
}

// ---------------------------------------------------------------------------------------------
// Putting it together

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** What the headers of a request say, before anything is bound to the connection. */
export interface ParsedRequestHeaders {
  readonly correlationId: string;
  /** The span of this server: a child of the caller's span, or the root of a new trace. */
  readonly traceparent: string;
  /** Epoch ms, from `x-deadline-ms`. */
  readonly deadline?: number;
}

/** Options of {@link parseRequestHeaders}: the deadline bounds, and whether this caller is trusted. */
export interface RequestHeaderOptions extends DeadlineOptions {
  /** Honour `x-deadline-ms`; `false` reads the headers as if it was not sent. @default true */
  readonly trustDeadline?: boolean;
}

/**
 * Reads correlation id, trace context and deadline from request headers, generating what is missing
 * or malformed. Pure: no timers, no signal.
 */
export function parseRequestHeaders(
  headers: IncomingHttpHeaders,
  options: RequestHeaderOptions = {},
  now: number = Date.now(),
): ParsedRequestHeaders {
  const incomingId = header(headers, HTTP_HEADER.correlationId);
  const correlationId = isValidCorrelationId(incomingId) ? incomingId : uuidv7();
  const traceparent = childTraceparent(header(headers, HTTP_HEADER.traceparent) ?? '');
  const remaining =
    options.trustDeadline === false
      ? undefined
      : parseDeadlineMs(
          header(headers, HTTP_HEADER.deadline),
          options.maxDeadlineMs ?? DEFAULT_REQUEST_CONTEXT_OPTIONS.maxDeadlineMs,
          options.minDeadlineMs ?? DEFAULT_REQUEST_CONTEXT_OPTIONS.minDeadlineMs,
        );
  return remaining === undefined
    ? { correlationId, traceparent }
    : { correlationId, traceparent, deadline: now + remaining };
}

/** A request context bound to one exchange. */
export interface RequestScope {
  readonly context: RequestContext;
  /** Headers to set on the response: the correlation id and this server's `traceparent`. */
  readonly responseHeaders: Readonly<Record<string, string>>;
  /** True when the caller's deadline had already passed on arrival: answer 504 without running anything. */
  readonly expired: boolean;
}

/**
 * Opens the context of one request: parses its headers and creates a signal that aborts when the
 * deadline passes ({@link DeadlineExceededError}) or the client goes away before the response is
 * complete ({@link ClientDisconnectedError}). The deadline timer is cleared when the response
 * closes, so nothing outlives the exchange. The signal takes any number of listeners: a handler
 * passes it to every call it makes, often more than Node's default warning threshold of 10.
 */
export function openRequestScope(
  req: IncomingMessage,
  res: ServerResponse,
  options: RequestContextOptions = {},
): RequestScope {
  const now = Date.now();
  const trust = options.trustDeadline ?? DEFAULT_REQUEST_CONTEXT_OPTIONS.trustDeadline;
  const parsed = parseRequestHeaders(
    req.headers,
    {
      ...(options.maxDeadlineMs === undefined ? {} : { maxDeadlineMs: options.maxDeadlineMs }),
      ...(options.minDeadlineMs === undefined ? {} : { minDeadlineMs: options.minDeadlineMs }),
      trustDeadline: typeof trust === 'function' ? trust(req) : trust,
    },
    now,
  );
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  let timer: NodeJS.Timeout | undefined;
  const expired = parsed.deadline !== undefined && parsed.deadline <= now;
  if (parsed.deadline !== undefined) {
    const deadline = parsed.deadline;
    if (expired) controller.abort(new DeadlineExceededError(deadline));
    else {
      timer = setTimeout(() => controller.abort(new DeadlineExceededError(deadline)), deadline - now);
      timer.unref();
    }
  }
  // 'close' on the response fires both after a complete response and when the connection drops
  // first; only the latter is a disconnect. (IncomingMessage's own 'close' only says the body was read.)
  res.once('close', () => {
    if (timer !== undefined) clearTimeout(timer);
    if (!res.writableFinished && !controller.signal.aborted) controller.abort(new ClientDisconnectedError());
  });
  const context: RequestContext = {
    correlationId: parsed.correlationId,
    traceparent: parsed.traceparent,
    signal: controller.signal,
    ...(parsed.deadline === undefined ? {} : { deadline: parsed.deadline }),
  };
  return {
    context,
    expired,
    responseHeaders: {
      [HTTP_HEADER.correlationId]: parsed.correlationId,
      [HTTP_HEADER.traceparent]: parsed.traceparent,
    },
  };
}

/** True when `error` or the request's own signal says the caller's deadline passed. */
export function deadlinePassed(error: unknown, context: FerryContext | undefined): boolean {
  if (isDeadlineExceededError(error)) return true;
  if (context === undefined) return false;
  if (context.signal?.aborted && isDeadlineExceededError(context.signal.reason)) return true;
  return context.deadline !== undefined && context.deadline <= Date.now();
}
