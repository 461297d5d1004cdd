import {
  type OutgoingHttpHeaders,
  type ServerResponse,
  validateHeaderName,
  validateHeaderValue,
} from 'node:http';
import { isFinalAnswer } from './final-answer.js';
import type { ResponseHeaders } from './idempotency.js';

/** A response as {@link captureResponse} saw it written. */
export interface CapturedResponse {
  readonly status: number;
  /** Every header sent, names in lower case. */
  readonly headers: ResponseHeaders;
  /** Every byte of the body as written (after any content coding); `undefined` when over the bound. */
  readonly body: Buffer | undefined;
  /**
   * The answer is final though its status is 5xx (a problem whose outcome is unknown: the request
   * may have been carried out): an `Idempotency-Key` keeps it rather than being released.
   */
  readonly final?: boolean;
}

/** What {@link captureResponse} does with an answer once the handler ended it. */
export interface ResponseGate {
  /** Called once, when the response is ended; the answer's end goes out once this resolves. */
  settle(response: CapturedResponse): Promise<void>;
  /**
   * Called instead of sending the answer when `settle` rejected and none of it had left yet: the
   * answer's status and every header set since the capture began are gone, and this answers on
   * the raw response instead (a problem). When part of the answer had left, the connection is
   * destroyed: the client sees it end before the answer did, never a complete answer.
   */
  refuse(error: unknown): void;
}

/**
 * Records what is written to `res` — status and headers (set one by one or given to `writeHead`),
 * then the body from `write` and `end` — and, when the response is ended, holds its end until
 * `gate.settle` resolved: the client cannot have the whole answer before it was settled (stored).
 * It sees every way an answer is sent: a framework's own send, a piped stream, a handler writing
 * the raw response itself. Nobody ends a response the client left in the middle of a stream: then
 * `settle` is never called.
 *
 * What is held: `writeHead`'s head until the first byte of the body is written (an answer sent
 * whole, as frameworks send one, leaves nothing before it is settled, so that it can still be
 * replaced by a problem); then the call to `end` with its last bytes. Meanwhile the response
 * reports what Node would (`headersSent` after `writeHead`, `writableEnded` after `end`, and
 * `ERR_HTTP_HEADERS_SENT` from changing a header), and calls made after `end` run after it.
 *
 * At most `maxBodyBytes` of the body are kept: beyond, what was collected is dropped and `settle`
 * gets `body: undefined`.
 */
export function captureResponse(res: ServerResponse, maxBodyBytes: number, gate: ResponseGate): void {
  let chunks: Buffer[] | undefined = [];
  let size = 0;
  let given: OutgoingHttpHeaders | undefined;
  /** `writeHead`'s arguments, not yet given to Node. */
  let head: unknown[] | undefined;
  /** Part of the answer was given to Node: it can no longer be replaced. */
  let started = false;
  /** `open` until `end`; `settling` until the gate decided; then `done`, and everything passes through. */
  let phase: 'open' | 'settling' | 'done' = 'open';
  /** Inside a call to Node's own methods, which call `writeHead` and `setHeader` themselves. */
  let forwarding = false;
  /** Calls made while settling, run in order once the answer has gone out. */
  const after: (() => void)[] = [];
  /** Headers set before the handler ran (the correlation id…): a refusal keeps them. */
  const kept = new Set(res.getHeaderNames());

  const { writeHead, write, end, flushHeaders } = res;
  const headersSent = inheritedGetter(res, 'headersSent');
  const writableEnded = inheritedGetter(res, 'writableEnded');
  const forward = <T>(call: () => T): T => {
    forwarding = true;
    try {
      return call();
    } finally {
      forwarding = false;
    }
  };
  /** Node's state, not the capture's: in a call Node makes itself, or once settled. */
  const passing = () => forwarding || phase === 'done';
  const headHeld = () => head !== undefined || phase === 'settling';
  const giveHead = () => {
    if (head === undefined) return;
    const args = head;
    head = undefined;
    forward(() => (writeHead as (...a: unknown[]) => ServerResponse).apply(res, args));
  };
  const collect = (chunk: unknown, encoding: unknown) => {
    if (chunks === undefined) return;
    let bytes: Buffer;
    if (typeof chunk === 'string')
      bytes = Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    else if (chunk instanceof Uint8Array) bytes = Buffer.from(chunk);
    else return;
    size += bytes.length;
    if (size > maxBodyBytes) chunks = undefined;
    else chunks.push(bytes);
  };

  Object.defineProperty(res, 'headersSent', {
    configurable: true,
    get(this: ServerResponse) {
      return (!passing() && headHeld()) || headersSent.call(this) === true;
    },
  });
  Object.defineProperty(res, 'writableEnded', {
    configurable: true,
    get(this: ServerResponse) {
      return (!passing() && phase === 'settling') || writableEnded.call(this) === true;
    },
  });

  res.writeHead = function writeHeadCaptured(this: ServerResponse, ...args: unknown[]): ServerResponse {
    const call = () => (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
    if (passing() || started) return call();
    if (headHeld()) throw headersSentError('write');
    // Refused now, as Node would: an invalid status (Node throws it before changing anything), or header.
    if (!isStatusCode(args[0])) return call();
    const headers = headersOf(typeof args[1] === 'string' ? args[2] : args[1]);
    for (const [name, value] of Object.entries(headers)) {
      validateHeaderName(name);
      validateHeaderValue(name, value as string);
    }
    given = { ...given, ...headers };
    this.statusCode = Number(args[0]) | 0;
    if (typeof args[1] === 'string') this.statusMessage = args[1];
    head = args;
    return this;
  } as ServerResponse['writeHead'];

  // After `writeHead`, and after `end`, Node refuses header changes; a held head must too.
  const changes = { setHeader: 'set', setHeaders: 'set', appendHeader: 'append', removeHeader: 'remove' };
  for (const [name, verb] of Object.entries(changes)) {
    const original: unknown = (res as unknown as Record<string, unknown>)[name];
    if (typeof original !== 'function') continue;
    (res as unknown as Record<string, unknown>)[name] = function headerChange(
      this: ServerResponse,
      ...args: unknown[]
    ): unknown {
      if (!passing() && headHeld()) throw headersSentError(verb);
      return original.apply(this, args);
    };
  }

  res.write = function writeCaptured(this: ServerResponse, chunk: unknown, ...rest: unknown[]): boolean {
    const call = () => forward(() => (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest));
    if (phase === 'done') return call();
    if (phase === 'settling') {
      after.push(call);
      return true;
    }
    collect(chunk, rest[0]);
    started = true;
    giveHead();
    return call();
  } as ServerResponse['write'];

  res.flushHeaders = function flushHeadersCaptured(this: ServerResponse): void {
    const call = () => forward(() => flushHeaders.call(this));
    if (phase === 'settling') {
      after.push(call);
      return;
    }
    if (phase === 'open') {
      started = true;
      giveHead();
    }
    call();
  };

  res.end = function endCaptured(this: ServerResponse, ...args: unknown[]): ServerResponse {
    const call = () => forward(() => (end as (...a: unknown[]) => ServerResponse).apply(this, args));
    if (phase === 'done') return call();
    if (phase === 'settling') {
      after.push(call);
      return this;
    }
    phase = 'settling';
    if (typeof args[0] !== 'function') collect(args[0], args[1]);
    const response: CapturedResponse = {
      status: this.statusCode,
      headers: given === undefined ? this.getHeaders() : { ...this.getHeaders(), ...given },
      body: chunks === undefined ? undefined : Buffer.concat(chunks),
      final: isFinalAnswer(res),
    };
    chunks = undefined;
    let settled: Promise<void>;
    try {
      settled = gate.settle(response);
    } catch (error) {
      settled = Promise.reject(error);
    }
    settled.then(
      () => {
        phase = 'done';
        try {
          giveHead();
          call();
        } catch {
          // Node refused what the handler wrote (a header it let through, say): no answer can follow.
          res.destroy();
          return;
        }
        for (const next of after.splice(0)) {
          try {
            next();
          } catch {
            // What Node refuses after the end (a write of no bytes, say) had nobody to tell by now.
          }
        }
      },
      (error: unknown) => {
        phase = 'done';
        after.length = 0;
        if (started) {
          res.destroy();
          return;
        }
        head = undefined;
        for (const name of res.getHeaderNames()) if (!kept.has(name)) res.removeHeader(name);
        res.statusCode = 200;
        res.statusMessage = '';
        try {
          gate.refuse(error);
        } catch {
          res.destroy();
        }
      },
    );
    return this;
  } as ServerResponse['end'];
}

function isStatusCode(value: unknown): boolean {
  const code = Number(value) | 0;
  return code >= 100 && code <= 999;
}

function headersSentError(verb: string): Error {
  return Object.assign(new Error(`Cannot ${verb} headers after they are sent to the client`), {
    code: 'ERR_HTTP_HEADERS_SENT',
  });
}

/** The getter a property has on the prototypes of `object` (Node's, for `headersSent`…). */
function inheritedGetter(object: object, name: string): (this: unknown) => unknown {
  for (let proto = Object.getPrototypeOf(object); proto !== null; proto = Object.getPrototypeOf(proto)) {
    const getter = Object.getOwnPropertyDescriptor(proto, name)?.get;
    if (getter !== undefined) return getter;
  }
  return () => false;
}

/** `writeHead`'s headers (an object, or a flat `[name, value, …]` list) with lower-case names. */
function headersOf(headers: unknown): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if (headers[i]) out[String(headers[i]).toLowerCase()] = headers[i + 1] as OutgoingHttpHeaders[string];
    }
  } else if (typeof headers === 'object' && headers !== null) {
    for (const [name, value] of Object.entries(headers)) {
      if (name !== '') out[name.toLowerCase()] = value as OutgoingHttpHeaders[string];
    }
  }
  return out;
}
