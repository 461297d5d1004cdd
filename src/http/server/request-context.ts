import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { FerryContext } from '../../context/context.js';
import { asciiOf, writeAscii, writeRandomHex } from '../../context/random.js';
import { errorGuard, FerryError } from '../../errors/ferry-error.js';
import { uuidv7 } from '../../messaging/message-id.js';
import { HTTP_HEADER } from '../headers.js';

/** Options of the request context the server middleware opens around each request. */
export interface RequestContextOptions {
  /**
   * Longest deadline honoured from `x-deadline-ms`; longer ones are shortened to it, so that a
   * careless caller cannot pin a request (and its timers) for days.
   * @default 3_600_000 (one hour)
   */
  readonly maxDeadlineMs?: number;
}

export const DEFAULT_REQUEST_CONTEXT_OPTIONS = Object.freeze({ maxDeadlineMs: 3_600_000 });

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
// W3C trace context

/** The fields of a `traceparent` header (W3C Trace Context, version 00). */
export interface Traceparent {
  readonly version: string;
  /** 32 lowercase hex digits, not all zeros. */
  readonly traceId: string;
  /** 16 lowercase hex digits, not all zeros: the span that sent the request. */
  readonly parentId: string;
  /** 2 hex digits; bit 0 is "sampled". */
  readonly flags: string;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);

/** Parses a version-00 `traceparent`; `undefined` when it is missing or malformed. */
export function parseTraceparent(value: unknown): Traceparent | undefined {
  if (typeof value !== 'string') return undefined;
  const match = TRACEPARENT.exec(value);
  if (!match) return undefined;
  const [, traceId, parentId, flags] = match as unknown as [string, string, string, string];
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_PARENT_ID) return undefined;
  return { version: '00', traceId, parentId, flags };
}

/**
 * Starts a new trace: random trace id and span id. It is marked sampled so that downstream services
 * with parent-based sampling keep the spans of a trace that started here.
 */
export function newTraceparent(): string {
  // Assembled in one flat string: it goes straight into a request's header block.
  writeAscii('00-', 0);
  writeRandomHex(16, 3);
  writeAscii('-', 35);
  writeRandomHex(8, 36);
  writeAscii('-01', 52);
  return asciiOf(55);
}

/**
 * The `traceparent` of a child span: same trace id and flags, new span id. Use it for each outgoing
 * call. A missing or malformed parent starts a new trace instead.
 *
 * @example
 * headers.traceparent = childTraceparent(currentContext()?.traceparent ?? '');
 */
export function childTraceparent(traceparent: string): string {
  const parent = parseTraceparent(traceparent);
  if (!parent) return newTraceparent();
  writeAscii('00-', 0);
  writeAscii(parent.traceId, 3);
  writeAscii('-', 35);
  writeRandomHex(8, 36);
  writeAscii('-', 52);
  writeAscii(parent.flags, 53);
  return asciiOf(55);
}

// ---------------------------------------------------------------------------------------------
// Deadline

const DEADLINE_MS = /^\d{1,15}$/;

/** Milliseconds left from `x-deadline-ms`, capped at `max`; `undefined` when missing or malformed. */
export function parseDeadlineMs(value: unknown, max: number): number | undefined {
  if (typeof value !== 'string' || !DEADLINE_MS.test(value)) return undefined;
  return Math.min(Number(value), max);
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

/**
 * Reads correlation id, trace context and deadline from request headers, generating what is missing
 * or malformed. Pure: no timers, no signal.
 */
export function parseRequestHeaders(
  headers: IncomingHttpHeaders,
  options: RequestContextOptions = {},
  now: number = Date.now(),
): ParsedRequestHeaders {
  const maxDeadlineMs = options.maxDeadlineMs ?? DEFAULT_REQUEST_CONTEXT_OPTIONS.maxDeadlineMs;
  const incomingId = header(headers, HTTP_HEADER.correlationId);
  const correlationId = isValidCorrelationId(incomingId) ? incomingId : uuidv7();
  const traceparent = childTraceparent(header(headers, HTTP_HEADER.traceparent) ?? '');
  const remaining = parseDeadlineMs(header(headers, HTTP_HEADER.deadline), maxDeadlineMs);
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
 * closes, so nothing outlives the exchange.
 */
export function openRequestScope(
  req: IncomingMessage,
  res: ServerResponse,
  options: RequestContextOptions = {},
): RequestScope {
  const now = Date.now();
  const parsed = parseRequestHeaders(req.headers, options, now);
  const controller = new AbortController();
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
