import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ResponseHeaders } from './idempotency.js';

/** A response as {@link captureResponse} saw it written. */
export interface CapturedResponse {
  readonly status: number;
  /** Every header sent, names in lower case. */
  readonly headers: ResponseHeaders;
  /** Every byte of the body as written (after any content coding); `undefined` when over the bound. */
  readonly body: Buffer | undefined;
}

/**
 * Records what is written to `res` — status and headers (set one by one or given to `writeHead`),
 * then the body from `write` and `end` — and hands it to `onEnd` when the response is ended, before
 * the last bytes leave. It sees every way an answer is sent: a framework's own send, a piped
 * stream, a handler writing the raw response itself. Nobody ends a response the client left in the
 * middle of a stream: then `onEnd` is never called.
 *
 * At most `maxBodyBytes` of the body are kept: beyond, what was collected is dropped and `onEnd`
 * gets `body: undefined`. `onEnd` runs once, synchronously inside `end`, so that a store that
 * records synchronously (the memory store) has the answer before the client can send a retry.
 */
export function captureResponse(
  res: ServerResponse,
  maxBodyBytes: number,
  onEnd: (response: CapturedResponse) => void,
): void {
  let chunks: Buffer[] | undefined = [];
  let size = 0;
  let given: OutgoingHttpHeaders | undefined;
  let ended = false;
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
  const writeHead = res.writeHead;
  const write = res.write;
  const end = res.end;
  res.writeHead = function writeHeadCaptured(this: ServerResponse, ...args: unknown[]): ServerResponse {
    // Node sends headers given here without keeping them where getHeaders() looks when none were set before.
    const headers = typeof args[1] === 'string' ? args[2] : args[1];
    if (headers !== undefined && headers !== null) given = { ...given, ...headersOf(headers) };
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as ServerResponse['writeHead'];
  res.write = function writeCaptured(this: ServerResponse, chunk: unknown, ...rest: unknown[]): boolean {
    collect(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as ServerResponse['write'];
  res.end = function endCaptured(this: ServerResponse, ...args: unknown[]): ServerResponse {
    if (!ended) {
      ended = true;
      if (typeof args[0] !== 'function') collect(args[0], args[1]);
      onEnd({
        status: this.statusCode,
        headers: given === undefined ? this.getHeaders() : { ...this.getHeaders(), ...given },
        body: chunks === undefined ? undefined : Buffer.concat(chunks),
      });
    }
    return (end as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as ServerResponse['end'];
}

/** `writeHead`'s headers (an object, or a flat `[name, value, …]` list) with lower-case names. */
function headersOf(headers: unknown): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      out[String(headers[i]).toLowerCase()] = headers[i + 1] as OutgoingHttpHeaders[string];
    }
  } else if (typeof headers === 'object' && headers !== null) {
    for (const [name, value] of Object.entries(headers)) {
      if (value !== undefined) out[name.toLowerCase()] = value as OutgoingHttpHeaders[string];
    }
  }
  return out;
}
