import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import { FerryError } from '../errors/ferry-error.js';

/** A whole response, read into memory. */
export interface CollectedResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** The response body is larger than the client accepts; the connection was aborted. */
export class ResponseTooLargeError extends FerryError {
  readonly limit: number;
  constructor(limit: number) {
    super('RESPONSE_TOO_LARGE', `the response body exceeds ${limit} bytes`);
    this.limit = limit;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * An undici dispatch handler that gathers the body into one buffer. The client reads whole JSON
 * bodies anyway; skipping `request()`'s readable stream and its handler saves work on every call.
 */
class CollectingHandler implements Dispatcher.DispatchHandler {
  #statusCode = 0;
  #headers: IncomingHttpHeaders = {};
  #chunks: Buffer[] = [];
  #size = 0;
  readonly #limit: number;
  readonly #resolve: (response: CollectedResponse) => void;
  readonly #reject: (error: Error) => void;
  readonly #signal: AbortSignal | undefined;
  #controller: Dispatcher.DispatchController | undefined;
  #onAbort: (() => void) | undefined;

  constructor(
    limit: number,
    signal: AbortSignal | undefined,
    resolve: (response: CollectedResponse) => void,
    reject: (error: Error) => void,
  ) {
    this.#limit = limit;
    this.#signal = signal;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    const signal = this.#signal;
    if (signal === undefined) return;
    if (signal.aborted) {
      controller.abort(signal.reason as Error);
      return;
    }
    this.#onAbort = () => this.#controller?.abort(signal.reason as Error);
    signal.addEventListener('abort', this.#onAbort, { once: true });
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
    this.#size += chunk.length;
    if (this.#size > this.#limit) {
      controller.abort(new ResponseTooLargeError(this.#limit));
      return;
    }
    this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
    this.#detach();
    const chunks = this.#chunks;
    const body =
      chunks.length === 0 ? EMPTY : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#size);
    this.#resolve({ statusCode: this.#statusCode, headers: this.#headers, body });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.#detach();
    this.#reject(error);
  }

  #detach(): void {
    if (this.#onAbort !== undefined) this.#signal?.removeEventListener('abort', this.#onAbort);
  }
}

/** Sends a request through `dispatcher` and resolves the whole response (rejects past `limit` bytes). */
export function collectResponse(
  dispatcher: Dispatcher,
  options: Dispatcher.DispatchOptions,
  limit: number,
  signal: AbortSignal | undefined,
): Promise<CollectedResponse> {
  return new Promise((resolve, reject) => {
    dispatcher.dispatch(options, new CollectingHandler(limit, signal, resolve, reject));
  });
}
