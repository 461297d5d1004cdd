import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import { FerryError } from '../errors/ferry-error.js';

/** A whole response, read into memory. */
export interface CollectedResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  /** The body; for an answer that is not a 2xx, its first `maxBytes` bytes at most. */
  readonly body: Buffer;
  /** Set when `body` is only the start of a larger body that is not a 2xx answer's. */
  readonly bodyTruncated?: true;
}

/** A 2xx response body is larger than the client accepts; the connection was aborted. */
export class ResponseTooLargeError extends FerryError {
  readonly limit: number;
  constructor(limit: number) {
    super('RESPONSE_TOO_LARGE', `the response body exceeds ${limit} bytes`);
    this.limit = limit;
  }
}

/** How one exchange is bounded. */
export interface CollectLimits {
  /**
   * Largest body read. Past it the request is aborted: a 2xx answer rejects with
   * {@link ResponseTooLargeError} (the data asked for is not there), any other resolves with the
   * bytes read up to the limit and `bodyTruncated` (its status says what happened).
   */
  readonly maxBytes: number;
  /**
   * Time allowed from dispatch to the last body byte, waits in the dispatcher's queue included.
   * When it runs out the promise rejects with `timeoutError()` at once and the request is aborted
   * (its connection closed), or, still queued, aborted before anything is sent.
   */
  readonly timeoutMs: number;
  readonly timeoutError: () => Error;
  /** The caller's signal: rejects with its reason at once and aborts the request likewise. */
  readonly signal?: AbortSignal | undefined;
}

const EMPTY = Buffer.alloc(0);

/** Error handed to undici when we abort for a reason that is not an Error (a caller's primitive reason). */
class ExchangeAbortedError extends Error {
  constructor() {
    super('request aborted');
    this.name = 'ExchangeAbortedError';
  }
}

/**
 * An undici dispatch handler that gathers the body into one buffer and owns the exchange's time
 * limit. The client reads whole JSON bodies anyway; skipping `request()`'s readable stream and its
 * handler saves work on every call. The limit is a plain `setTimeout` rather than undici's
 * `headersTimeout`/`bodyTimeout`: those run on a coarse shared clock (about half a second), the body
 * one is an idle time between chunks, and neither covers the wait in the pool's queue.
 */
class CollectingHandler implements Dispatcher.DispatchHandler {
  #statusCode = 0;
  #headers: IncomingHttpHeaders = {};
  #chunks: Buffer[] = [];
  #size = 0;
  #settled = false;
  readonly #limits: CollectLimits;
  readonly #resolve: (response: CollectedResponse) => void;
  readonly #reject: (error: unknown) => void;
  #controller: Dispatcher.DispatchController | undefined;
  /** Set when the exchange was given up before undici started it: abort it as soon as it does. */
  #abortReason: Error | undefined;
  readonly #timer: ReturnType<typeof setTimeout>;
  readonly #onAbort: (() => void) | undefined;

  constructor(
    limits: CollectLimits,
    resolve: (response: CollectedResponse) => void,
    reject: (error: unknown) => void,
  ) {
    this.#limits = limits;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#timer = setTimeout(this.#onTimeout, limits.timeoutMs);
    const signal = limits.signal;
    if (signal !== undefined) {
      this.#onAbort = () => this.giveUp(signal.reason);
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  readonly #onTimeout = (): void => {
    this.giveUp(this.#limits.timeoutError());
  };

  /** Rejects now with `reason` and aborts the request, whether undici has started it or not. */
  giveUp(reason: unknown): void {
    if (this.#settled) return;
    this.#settle();
    this.#reject(reason);
    const error = reason instanceof Error ? reason : new ExchangeAbortedError();
    if (this.#controller !== undefined) this.#controller.abort(error);
    else this.#abortReason = error;
  }

  #settle(): void {
    this.#settled = true;
    clearTimeout(this.#timer);
    if (this.#onAbort !== undefined) this.#limits.signal?.removeEventListener('abort', this.#onAbort);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#abortReason !== undefined) controller.abort(this.#abortReason);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    this.#statusCode = statusCode;
    this.#headers = headers;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    const { maxBytes } = this.#limits;
    if (this.#size + chunk.length > maxBytes) {
      this.#controller ??= controller;
      const status = this.#statusCode;
      if (status >= 200 && status < 300) {
        this.giveUp(new ResponseTooLargeError(maxBytes));
        return;
      }
      // An error answer is told by its status: keep what fits, and read no more of it.
      this.#chunks.push(chunk.subarray(0, maxBytes - this.#size));
      this.#size = maxBytes;
      this.#answer(true);
      controller.abort(new ExchangeAbortedError());
      return;
    }
    this.#size += chunk.length;
    this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
    if (this.#settled) return;
    this.#answer(false);
  }

  #answer(truncated: boolean): void {
    this.#settle();
    const chunks = this.#chunks;
    const body =
      chunks.length === 0 ? EMPTY : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#size);
    this.#resolve(
      truncated
        ? { statusCode: this.#statusCode, headers: this.#headers, body, bodyTruncated: true }
        : { statusCode: this.#statusCode, headers: this.#headers, body },
    );
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.#settled) return;
    this.#settle();
    this.#reject(error);
  }
}

/**
 * Sends a request through `dispatcher` and resolves the whole response, within `limits`: rejects
 * past `maxBytes` (a 2xx answer; another is cut there), at `timeoutMs` after this call, or when the
 * signal aborts — each at once, with the request aborted.
 */
export function collectResponse(
  dispatcher: Dispatcher,
  options: Dispatcher.DispatchOptions,
  limits: CollectLimits,
): Promise<CollectedResponse> {
  if (limits.signal?.aborted) return Promise.reject(limits.signal.reason);
  return new Promise((resolve, reject) => {
    const handler = new CollectingHandler(limits, resolve, reject);
    try {
      dispatcher.dispatch(options, handler);
    } catch (error) {
      // undici reports bad arguments through the handler; a dispatcher of the caller's may throw.
      handler.giveUp(error);
    }
  });
}
