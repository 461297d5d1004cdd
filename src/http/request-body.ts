import { InvalidRequestError } from './errors.js';

/**
 * Refuses headers about the body that undici would refuse once the call is under way, where the
 * refusal looked like a broken connection (retried, and counted by the breaker against a healthy
 * target): a `content-length` other than the body's length (undici sets it from the body), and
 * `Expect` (undici sends the body at once and supports no `100-continue`).
 *
 * @param headers every name in lower case
 * @throws InvalidRequestError
 */
export function checkBodyHeaders(
  headers: Readonly<Record<string, string>>,
  payload: string | Uint8Array | undefined,
  request: string,
): void {
  if (headers.expect !== undefined) {
    throw new InvalidRequestError(
      request,
      'the Expect header is not supported (the body is sent at once, without waiting for 100 Continue)',
    );
  }
  const declared = headers['content-length'];
  if (declared === undefined) return;
  const length =
    payload === undefined ? 0 : typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  if (String(declared) !== String(length)) {
    throw new InvalidRequestError(
      request,
      `content-length ${JSON.stringify(declared)} is not the body's length, ${length} bytes (leave it out: the client sets it)`,
    );
  }
}
