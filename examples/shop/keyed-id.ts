/**
 * What an `Idempotency-Key` names on the routes that create something (`POST /users`,
 * `POST /products`, `POST /orders`): the id of the thing it created. A request sent again with its
 * key, after an answer lost or while the first is still running, finds what the first created
 * instead of creating a second one, whatever happened in between (a crash after the commit included).
 */
import type { FastifyRequest } from 'fastify';
import {
  HttpProblemError,
  headerLines,
  isValidIdempotencyKey,
  nameUuid,
  unquotedIdempotencyKey,
} from 'ferry';

/**
 * The id the request's `Idempotency-Key` names in `namespace`, or `undefined` when it has none.
 * Surrounding double quotes are not counted (`"k"` is `k`, as Ferry's middleware reads keys).
 * @throws HttpProblemError 400 `IDEMPOTENCY_KEY_INVALID` for a key no client could send, or one sent
 *   on more than one line
 */
export function keyedId(request: FastifyRequest, namespace: string): string | undefined {
  const key = sentKey(request);
  return key === undefined ? undefined : nameUuid(namespace, unquotedIdempotencyKey(key));
}

/**
 * The request's `Idempotency-Key` as sent, or `undefined` when it has none.
 * @throws HttpProblemError 400 `IDEMPOTENCY_KEY_INVALID` for a key no client could send, or one sent
 *   on more than one line: Node joins the lines into one value (`K, K`), a key that names nothing
 *   the first request created, so the request would create it again.
 */
export function sentKey(request: FastifyRequest): string | undefined {
  const key = request.headers['idempotency-key'];
  if (key === undefined) return undefined;
  if (headerLines(request.raw.rawHeaders, 'idempotency-key') > 1) {
    throw invalidKey('The Idempotency-Key header was sent more than once: send one key, on one line.');
  }
  if (!isValidIdempotencyKey(key)) throw invalidKey();
  return key;
}

/** 400 `IDEMPOTENCY_KEY_INVALID`: a key no client could send, saying what a key may hold. */
export function invalidKey(
  detail = 'The Idempotency-Key header must hold 1 to 255 printable ASCII characters, spaces only inside (surrounding double quotes are not counted).',
): HttpProblemError {
  return new HttpProblemError(400, undefined, { detail, extensions: { code: 'IDEMPOTENCY_KEY_INVALID' } });
}

/** 422 for a key sent again with another body: it created something else. */
export function keyReused(what: string): HttpProblemError {
  return new HttpProblemError(422, 'Idempotency key reused', {
    detail: `This Idempotency-Key created another ${what}.`,
    extensions: { code: 'IDEMPOTENCY_KEY_MISMATCH' },
  });
}
