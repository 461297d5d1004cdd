import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { HttpProblemError } from './problem.js';
import { ClientDisconnectedError } from './request-context.js';

/**
 * SHA-256 of a request body, fed with its bytes as they go by. It takes no more bytes once
 * {@link BodyHash.digest} was called: a handler reading a body held for the fingerprint reads the
 * same bytes again, and they must not count twice (nor throw, as a finalized `Hash` would).
 */
export class BodyHash {
  readonly #hash: Hash = createHash('sha256');
  #digest: string | undefined;

  update(chunk: string | Uint8Array): void {
    if (this.#digest === undefined) this.#hash.update(chunk);
  }

  /** Hex digest of the bytes seen so far. */
  digest(): string {
    this.#digest ??= this.#hash.digest('hex');
    return this.#digest;
  }
}

/**
 * Feeds `hash` with every chunk the request emits as `'data'`, whoever reads it: a body parser, a
 * handler reading the stream itself, or {@link holdRestOfBody}. Emitting is the one path every read
 * takes (`read()` emits what it returns), and wrapping it adds no listener, so the stream stays
 * paused until someone reads it.
 */
export function hashBodyAsRead(req: IncomingMessage, hash: BodyHash): void {
  const emit = req.emit;
  req.emit = function emitHashed(this: IncomingMessage, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'data') {
      const chunk = args[0];
      if (typeof chunk === 'string' || chunk instanceof Uint8Array) hash.update(chunk);
    }
    return emit.call(this, event, ...args);
  } as IncomingMessage['emit'];
}

/** Refusal of a body larger than {@link holdRestOfBody} keeps in memory. */
export function heldBodyTooLargeProblem(maxBytes: number): HttpProblemError {
  return new HttpProblemError(413, undefined, {
    detail: `A request with an Idempotency-Key whose body no parser reads is read in full before its handler runs, to fingerprint it; this body is larger than the ${maxBytes} bytes allowed.`,
    extensions: { code: 'IDEMPOTENCY_BODY_TOO_LARGE' },
    // The rest of the body is not read: the connection cannot carry another request.
    headers: { connection: 'close' },
  });
}

/**
 * Makes `hash` (fed by {@link hashBodyAsRead}) cover the whole body before the handler runs, when no
 * parser read the body to its end (a pass-through content-type parser, a multipart route, a handler
 * that reads the request itself). What is left of the body is received without being consumed:
 * the bytes already buffered are read out (and so hashed) and the rest is taken as the HTTP parser
 * pushes it; at the end of the body everything is handed back to the stream in order, so that the
 * handler reads every byte from the start as if nothing had happened.
 *
 * At most `maxBytes` are held in memory; a larger body rejects with a 413
 * ({@link heldBodyTooLargeProblem}). A client that leaves first rejects with
 * {@link ClientDisconnectedError}. Resolves at once when the body was already read to its end.
 */
export function holdRestOfBody(req: IncomingMessage, hash: BodyHash, maxBytes: number): Promise<void> {
  if (req.readableEnded) return Promise.resolve();
  if (req.destroyed) return Promise.reject(new ClientDisconnectedError());
  if (req.readableFlowing === true || req.listenerCount('data') > 0) {
    // Someone reads it already (its bytes pass the tap): wait for the end rather than steal them.
    return untilEnd(req);
  }
  if (endPushed(req) && req.readableLength === 0) return Promise.resolve();
  // Read what is buffered; this also has the stream read from the socket again if its buffer was full.
  const front: Buffer[] = [];
  let size = 0;
  for (let chunk = req.read() as Buffer | string | null; chunk !== null; chunk = req.read()) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    front.push(bytes);
    size += bytes.length;
  }
  if (endPushed(req)) {
    // The whole body was buffered: put it back before the stream's end event (due next tick) fires.
    if (front.length > 0) req.unshift(Buffer.concat(front));
    return size > maxBytes ? Promise.reject(heldBodyTooLargeProblem(maxBytes)) : Promise.resolve();
  }
  if (size > maxBytes) return Promise.reject(heldBodyTooLargeProblem(maxBytes));

  return new Promise<void>((resolve, reject) => {
    const held = front;
    const ownPush = Object.hasOwn(req, 'push') ? req.push : undefined;
    const push = req.push;
    const restore = () => {
      req.off('close', onClose);
      if (ownPush === undefined) Reflect.deleteProperty(req, 'push');
      else req.push = ownPush;
    };
    const onClose = () => {
      restore();
      reject(new ClientDisconnectedError());
    };
    req.once('close', onClose);
    // The HTTP parser pushes each chunk of the body as it arrives, then `null` at its end.
    req.push = function holdChunk(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk === null) {
        restore();
        if (held.length > 0) push.call(this, Buffer.concat(held));
        const more = push.call(this, null);
        resolve();
        return more;
      }
      const bytes =
        typeof chunk === 'string'
          ? Buffer.from(chunk, encoding)
          : Buffer.isBuffer(chunk)
            ? chunk
            : Buffer.from(chunk as Uint8Array);
      size += bytes.length;
      if (size > maxBytes) {
        restore();
        reject(heldBodyTooLargeProblem(maxBytes));
        return push.call(this, chunk, encoding);
      }
      held.push(bytes);
      hash.update(bytes);
      // Keeps the socket flowing: memory is bounded by maxBytes, not by the stream's buffer.
      return true;
    };
  });
}

/** True once the whole body has been pushed into the stream (its end included). */
function endPushed(req: IncomingMessage): boolean {
  const state = (req as { _readableState?: { ended?: unknown } })._readableState;
  return typeof state?.ended === 'boolean' ? state.ended : req.complete;
}

function untilEnd(req: IncomingMessage): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onEnd = () => {
      req.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      req.off('end', onEnd);
      reject(new ClientDisconnectedError());
    };
    req.once('end', onEnd);
    req.once('close', onClose);
  });
}
