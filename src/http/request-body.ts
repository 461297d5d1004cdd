import { describeThrown } from '../errors/describe-thrown.js';
import { InvalidRequestError, RequestBodyNotSerializableError } from './errors.js';

const OCTET_STREAM = 'application/octet-stream';
const JSON_TYPE = 'application/json';

/**
 * What a call's body is sent as, setting its `content-type` unless the caller did: a string as it
 * is (no content type added), bytes (a Buffer, any typed array, a DataView, an ArrayBuffer) as
 * a copy of themselves taken now (`application/octet-stream`), anything else as JSON (`application/json`; a value with
 * `toJSON`, such as a Date or a class of yours, as what that returns).
 *
 * Refuses before anything is sent, rather than sending what `JSON.stringify` makes of it (`{}`, or
 * a stream's internal state): a body it cannot write, and at the top level an object that is no JSON
 * value (itself, or what its `toJSON()` returns): streams, which a retry could not send again, Blob,
 * FormData, URLSearchParams, Map, Set and other iterables, a Promise, a fetch Response or Request,
 * an Error. Nested values are not inspected: they are left to `JSON.stringify` (a Map inside an
 * object is sent as `{}`).
 *
 * @param headers every name in lower case; `content-type` is set here when missing
 * @throws RequestBodyNotSerializableError
 */
export function encodeRequestBody(
  body: unknown,
  headers: Record<string, string>,
  request: string,
): string | Uint8Array | undefined {
  if (body === undefined || typeof body === 'string') return body;
  if (typeof body === 'object' && body !== null) {
    let bytes: Uint8Array | undefined;
    try {
      bytes = bytesOf(body);
    } catch (error) {
      // A buffer transferred away (structuredClone, postMessage): a raw TypeError reached the caller.
      throw new InvalidRequestError(
        request,
        `the body's bytes cannot be read (${describeThrown(error).message})`,
      );
    }
    if (bytes !== undefined) {
      headers['content-type'] ??= OCTET_STREAM;
      return bytes;
    }
    if (typeof (body as { toJSON?: unknown }).toJSON === 'function') {
      // What toJSON() gives is checked as the body itself would be, as JSON.stringify hands it over.
      const text = serializeBody(body, request, (value) => {
        const refusal = typeof value === 'object' && value !== null ? refusalOf(value) : undefined;
        return refusal === undefined
          ? undefined
          : `toJSON() of the body (${kindOf(body)}) returned what JSON cannot say: ${refusal}`;
      });
      headers['content-type'] ??= JSON_TYPE;
      return text;
    }
    const refusal = refusalOf(body);
    if (refusal !== undefined) throw new RequestBodyNotSerializableError(request, refusal);
  }
  const text = serializeBody(body, request);
  headers['content-type'] ??= JSON_TYPE;
  return text;
}

/**
 * A copy of the bytes of a binary body, `undefined` for any other object. Copied as the call is
 * made: the caller may reuse its buffer at once, and every attempt must send what the call was given.
 */
function bytesOf(body: object): Uint8Array | undefined {
  // Buffer.from copies a view's bytes (but would share an ArrayBuffer's memory: hence the view).
  if (ArrayBuffer.isView(body)) {
    return Buffer.from(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
  }
  if (body instanceof ArrayBuffer || body instanceof SharedArrayBuffer) {
    return Buffer.from(new Uint8Array(body));
  }
  return undefined;
}

/** Why an object without `toJSON` cannot be the body, or `undefined` when JSON says what it is. */
function refusalOf(body: object): string | undefined {
  const candidate = body as { pipe?: unknown; on?: unknown; getReader?: unknown; then?: unknown };
  if (
    (typeof candidate.pipe === 'function' && typeof candidate.on === 'function') ||
    typeof candidate.getReader === 'function'
  ) {
    return `a stream (${kindOf(body)}) cannot be sent: a retry could not send it again; read it into a Buffer first`;
  }
  if (typeof Blob === 'function' && body instanceof Blob) {
    return `a ${kindOf(body)} cannot be sent: send its bytes (await blob.arrayBuffer())`;
  }
  if (typeof candidate.then === 'function') return `a ${kindOf(body)} cannot be sent: await it first`;
  // Their fields are not own enumerable properties: JSON.stringify would send {} (an Error, {} or
  // just its own extra fields, such as a code, without its message).
  const tag = Object.prototype.toString.call(body).slice(8, -1);
  if (tag === 'Response' || tag === 'Request') {
    const name = tag.toLowerCase();
    return `a ${tag} is not a JSON value (JSON.stringify would send {}): send its content instead, e.g. await ${name}.json(), ${name}.text() or ${name}.arrayBuffer()`;
  }
  if (tag === 'Error' || body instanceof Error) {
    return `an error (${kindOf(body)}) is not a JSON value (JSON.stringify would send {}, without its message): send the fields you mean, e.g. { name: error.name, message: error.message }`;
  }
  // A String object is iterable and JSON writes its text: it goes as "abc", as new Number(5) goes as 5.
  if (
    !Array.isArray(body) &&
    !(body instanceof String) &&
    (Symbol.iterator in body || Symbol.asyncIterator in body)
  ) {
    return `a ${kindOf(body)} is not a JSON value (JSON.stringify would send {}): convert it first, e.g. Object.fromEntries(map) or [...set]`;
  }
  return undefined;
}

/** The name of an object's kind: its tag (Map, Blob, Generator…), else its class (Readable, an Error's…). */
function kindOf(body: object): string {
  const tag = Object.prototype.toString.call(body).slice(8, -1);
  if (tag !== 'Object' && tag !== 'Error') return tag;
  const name = (body.constructor as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' && name !== '' ? name : tag;
}

/**
 * The JSON text of a request body. `refuse`, when given, is shown the top-level value as
 * JSON.stringify writes it (what the body's toJSON() returned) and says why it cannot be sent.
 * @throws RequestBodyNotSerializableError
 */
function serializeBody(
  body: unknown,
  request: string,
  refuse?: (value: unknown) => string | undefined,
): string {
  let text: string | undefined;
  let refusal: string | undefined;
  try {
    if (refuse === undefined) {
      text = JSON.stringify(body);
    } else {
      let top = true;
      // The replacer sees the top-level value first, after toJSON(): toJSON() runs once, as ever.
      text = JSON.stringify(body, (_key, value: unknown) => {
        if (!top) return value;
        top = false;
        refusal = refuse(value);
        if (refusal !== undefined) throw new RequestBodyNotSerializableError(request, refusal);
        return value;
      });
    }
  } catch (error) {
    if (refusal !== undefined) throw error;
    throw new RequestBodyNotSerializableError(request, error);
  }
  if (text === undefined)
    throw new RequestBodyNotSerializableError(request, `${typeof body} has no JSON form`);
  return text;
}

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
