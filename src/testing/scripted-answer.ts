import { STATUS_CODES } from 'node:http';
import { isAnyArrayBuffer } from 'node:util/types';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions, definedOptions } from '../errors/options-object.js';
import { controlCharacter, HTTP_TOKEN } from '../http/client-options.js';
import { PROBLEM_CONTENT_TYPE } from '../http/headers.js';
import { isWellFormed } from '../messaging/well-formed.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';

/** A problem+json body to answer with; `status` and `title` default from the fault (when left out or `undefined`). */
export interface FaultProblem {
  readonly type?: string | undefined;
  readonly title?: string | undefined;
  readonly status?: number | undefined;
  readonly detail?: string | undefined;
  readonly [extension: string]: unknown;
}

/**
 * How the server answers one request. Without `reset`, `hang` or `problem` it answers `status`
 * (200; 503 when `retryAfter` is set) with `body`, or with `{ ok, path, method }` for a 2xx
 * without a body (204, 205 and 304 excepted). Read once, as it is scripted: changing it afterwards
 * changes nothing.
 */
export interface Fault {
  /** An integer from 200 to 599. */
  readonly status?: number;
  /**
   * A string is sent as is (text/plain unless `headers` say otherwise), bytes (a `Uint8Array` or
   * another view, an `ArrayBuffer`) as octet-stream, anything else as its JSON; `null` or left out,
   * the default answer's body. None with a 204, 205 or 304, nor with `problem`.
   */
  readonly body?: unknown;
  /**
   * Sent as given (a list as repeated lines, such as `set-cookie`), over the server's own; not
   * `content-length`, `transfer-encoding` or `trailer`, which the server's framing decides.
   */
  readonly headers?: Readonly<Record<string, string | number | readonly string[]>>;
  /** Wait this long before answering (or resetting): 0 to 2147483647 ms. */
  readonly delayMs?: number;
  /** Sets `Retry-After`: whole seconds, or an HTTP date string. */
  readonly retryAfter?: number | string;
  /** Destroy the connection (TCP RST) instead of answering; only `delayMs` goes with it. */
  readonly reset?: true;
  /** Never answer; the connection stays open until `close()`. Nothing goes with it. */
  readonly hang?: true;
  /** Answer with this `application/problem+json` document (status 500 unless given). */
  readonly problem?: FaultProblem;
}

/** A fault as the server carries it out, everything it sends settled when it was scripted. */
export type ScriptedAnswer =
  | { readonly kind: 'hang' }
  | { readonly kind: 'reset'; readonly delayMs: number }
  | {
      readonly kind: 'answer';
      readonly delayMs: number;
      readonly status: number;
      readonly headers: Readonly<Record<string, string | string[]>>;
      /** Undefined: `{ ok, path, method }` for a 2xx (204 and 205 excepted), else nothing. */
      readonly body: Buffer | undefined;
    };

const FAULT_KEYS = ['status', 'body', 'headers', 'delayMs', 'retryAfter', 'reset', 'hang', 'problem'];
/** Headers the server's framing decides: scripted, they made answers no client could read, or threw. */
const FRAMING_HEADERS = new Set(['content-length', 'transfer-encoding', 'trailer']);

/**
 * Checks a {@link Fault} and settles what it sends, as it is scripted, so that a test learns of a
 * mistake where it made it: a misspelt key (`stauts`) answered 200 and the test ran against a
 * healthy server; a status Node refuses, a header or `Retry-After` with a line break, or a body
 * JSON cannot write threw inside the server when a request used it, killing the test process
 * while its client hung. @throws InvalidOptionsError
 */
export function scriptAnswer(where: string, fault: unknown): ScriptedAnswer {
  if (fault === undefined || fault === null) {
    throw new InvalidOptionsError(`${where} must be a fault object (use {} for the default answer)`);
  }
  checkOptions(where, fault, FAULT_KEYS);
  // Each member read once: a getter read again after the checks sent what they never saw.
  const f: Record<string, unknown> = {};
  for (const key of FAULT_KEYS) f[key] = (fault as Record<string, unknown>)[key];
  const given = FAULT_KEYS.filter((key) => f[key] !== undefined);
  for (const flag of ['reset', 'hang'] as const) {
    if (f[flag] !== undefined && f[flag] !== true) {
      throw new InvalidOptionsError(
        `${where} ${flag} must be true (or left out), not ${describeValue(f[flag])}`,
      );
    }
  }
  if (f.hang === true) {
    if (given.length > 1) throw partlyIgnored(where, 'hang', given, ['hang']);
    return { kind: 'hang' };
  }
  const delayMs = f.delayMs ?? 0;
  if (!(typeof delayMs === 'number' && delayMs >= 0 && delayMs <= MAX_TIMER_MS)) {
    throw new InvalidOptionsError(
      `${where} delayMs must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, not ${describeValue(delayMs)}`,
    );
  }
  if (f.reset === true) {
    if (given.some((key) => key !== 'reset' && key !== 'delayMs')) {
      throw partlyIgnored(where, 'reset', given, ['reset', 'delayMs']);
    }
    return { kind: 'reset', delayMs };
  }
  if (f.status !== undefined) checkStatus(`${where} status`, f.status);
  const headers: Record<string, string | string[]> = {};
  let body: Buffer | undefined;
  let status: number;
  if (f.problem !== undefined) {
    if (f.body !== undefined) {
      throw new InvalidOptionsError(
        `${where} cannot have both a problem and a body: the problem is the body`,
      );
    }
    const members = problemMembers(where, f.problem);
    if (f.status !== undefined && members.status !== undefined && f.status !== members.status) {
      // The document's was replaced by the fault's without a word.
      throw new InvalidOptionsError(
        `${where} gives two statuses (${String(f.status)} and problem.status ${String(members.status)}): give one`,
      );
    }
    status = (f.status as number | undefined) ?? (members.status as number | undefined) ?? 500;
    if (!carriesContent(status)) {
      throw new InvalidOptionsError(
        `${where} cannot have a problem with status ${status}: such an answer has no body`,
      );
    }
    headers['content-type'] = PROBLEM_CONTENT_TYPE;
    const document = { type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', ...members, status };
    body = Buffer.from(json(`${where} problem`, document));
  } else {
    status = (f.status as number | undefined) ?? (f.retryAfter === undefined ? 200 : 503);
    if (f.body !== undefined && f.body !== null) {
      if (!carriesContent(status)) {
        throw new InvalidOptionsError(
          `${where} cannot have a body with status ${status}: such an answer has none`,
        );
      }
      const content = encodeBody(`${where} body`, f.body);
      headers['content-type'] = content.type;
      body = content.bytes;
    }
  }
  if (f.retryAfter !== undefined) headers['retry-after'] = retryAfterValue(where, f.retryAfter);
  if (f.headers !== undefined) {
    const scripted = scriptedHeaders(where, f.headers);
    if (f.retryAfter !== undefined && scripted['retry-after'] !== undefined) {
      throw new InvalidOptionsError(`${where} gives Retry-After twice (retryAfter and a header): give one`);
    }
    Object.assign(headers, scripted);
  }
  return { kind: 'answer', delayMs, status, headers, body };
}

/** Whether an answer with `status` has a body: not a 204, 205 or 304 (RFC 9110). */
export function carriesContent(status: number): boolean {
  return status !== 204 && status !== 205 && status !== 304;
}

function partlyIgnored(
  where: string,
  flag: string,
  given: readonly string[],
  allowed: readonly string[],
): Error {
  const others = given.filter((key) => !allowed.includes(key));
  return new InvalidOptionsError(
    `${where} ${flag === 'hang' ? 'hangs: it sends nothing' : 'resets the connection: it answers nothing'}, so ${others.join(', ')} would be ignored: script one or the other`,
  );
}

/** A final status a server can answer with: an integer from 200 to 599. */
function checkStatus(where: string, status: unknown): void {
  if (!(Number.isInteger(status) && (status as number) >= 200 && (status as number) <= 599)) {
    throw new InvalidOptionsError(
      `${where} must be an integer from 200 to 599, not ${describeValue(status)}`,
    );
  }
}

/**
 * The members of a problem document as given, those set to `undefined` left out (they took the
 * place of a default and sent none). A plain object, without a `toJSON` (it replaced the document).
 */
function problemMembers(where: string, problem: unknown): Record<string, unknown> {
  const proto = typeof problem === 'object' && problem !== null ? Object.getPrototypeOf(problem) : undefined;
  if ((proto !== Object.prototype && proto !== null) || Object.hasOwn(problem as object, 'toJSON')) {
    throw new InvalidOptionsError(
      `${where} problem must be a plain object of members, not ${describeValue(problem)}`,
    );
  }
  const members = definedOptions(problem as Record<string, unknown>);
  if (members.status !== undefined) checkStatus(`${where} problem.status`, members.status);
  return members;
}

function retryAfterValue(where: string, value: unknown): string {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return String(value);
  if (
    typeof value === 'string' &&
    value.trim() !== '' &&
    controlCharacter('retryAfter', value) === undefined
  ) {
    return value;
  }
  throw new InvalidOptionsError(
    `${where} retryAfter must be a whole number of seconds, 0 or more, or a date string without line breaks, not ${describeValue(value)}`,
  );
}

function scriptedHeaders(where: string, headers: unknown): Record<string, string | string[]> {
  const proto = typeof headers === 'object' && headers !== null ? Object.getPrototypeOf(headers) : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new InvalidOptionsError(
      `${where} headers must be a plain object of header names and values, not ${describeValue(headers)}`,
    );
  }
  const out: Record<string, string | string[]> = {};
  const given = new Map<string, string>();
  for (const name of Object.keys(headers as object)) {
    const value = (headers as Record<string, unknown>)[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    const twin = given.get(lower);
    if (twin !== undefined) {
      // One replaced the other without a word.
      throw new InvalidOptionsError(
        `${where} headers name one header twice (${twin} and ${name}): give it once, with a list for several lines`,
      );
    }
    given.set(lower, name);
    if (!HTTP_TOKEN.test(name) || lower === '__proto__') {
      throw new InvalidOptionsError(
        `${where} headers: ${describeValue(name)} is not a header name it can send`,
      );
    }
    if (FRAMING_HEADERS.has(lower)) {
      throw new InvalidOptionsError(
        `${where} headers must not hold ${name}: the server's framing decides it (it sets content-length from the body)`,
      );
    }
    const values = Array.isArray(value) ? value : [value];
    const strings = values.map((v) => (typeof v === 'number' && Number.isFinite(v) ? String(v) : v));
    for (const v of strings) {
      if (typeof v !== 'string') {
        throw new InvalidOptionsError(
          `${where} headers: ${name} must be a string, a number or a list of strings, not ${describeValue(v)}`,
        );
      }
      const control = controlCharacter(name, v);
      if (control !== undefined) throw new InvalidOptionsError(`${where} headers: ${control}`);
    }
    out[lower] = Array.isArray(value) ? (strings as string[]) : (strings[0] as string);
  }
  return out;
}

/** The bytes of a scripted body and their content type, copied now. */
function encodeBody(where: string, body: unknown): { type: string; bytes: Buffer } {
  if (typeof body === 'string') {
    // UTF-8 has no bytes for it: it went out as U+FFFD.
    if (!isWellFormed(body))
      throw new InvalidOptionsError(`${where} holds a lone surrogate, which UTF-8 cannot carry`);
    return { type: 'text/plain; charset=utf-8', bytes: Buffer.from(body) };
  }
  // A SharedArrayBuffer, or an ArrayBuffer of another realm, too (instanceof missed both: sent as {}).
  if (ArrayBuffer.isView(body) || isAnyArrayBuffer(body)) {
    try {
      const bytes = ArrayBuffer.isView(body)
        ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength)
        : new Uint8Array(body);
      return { type: 'application/octet-stream', bytes: Buffer.from(bytes) };
    } catch {
      throw new InvalidOptionsError(
        `${where} has no bytes: they were transferred away (a detached ArrayBuffer)`,
      );
    }
  }
  return { type: 'application/json; charset=utf-8', bytes: Buffer.from(json(where, body)) };
}

function json(where: string, value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new InvalidOptionsError(`${where} cannot be written as JSON: ${(error as Error).message}`);
  }
  if (text === undefined) {
    throw new InvalidOptionsError(`${where} cannot be written as JSON: ${describeValue(value)}`);
  }
  return text;
}
