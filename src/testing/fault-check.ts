import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { controlCharacter, HTTP_TOKEN } from '../http/client-options.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import type { Fault } from './fault-server.js';

const FAULT_KEYS = ['status', 'body', 'headers', 'delayMs', 'retryAfter', 'reset', 'hang', 'problem'];

/**
 * Checks a {@link Fault} as it is scripted, so that a test learns of a mistake where it made it:
 * a misspelt key (`stauts`) answered 200 and the test ran against a healthy server; a status Node
 * refuses, a header or `Retry-After` with a line break, or a body JSON cannot write threw inside
 * the server when a request used it, killing the test process while its client hung.
 * @throws InvalidOptionsError
 */
export function checkFault(where: string, fault: unknown): asserts fault is Fault {
  if (fault === undefined) {
    throw new InvalidOptionsError(`${where} must be a fault object (use {} for the default answer)`);
  }
  checkOptions(where, fault, FAULT_KEYS);
  const f = fault as Record<string, unknown>;
  if (f.status !== undefined) checkStatus(`${where} status`, f.status);
  for (const flag of ['reset', 'hang'] as const) {
    if (f[flag] !== undefined && f[flag] !== true) {
      throw new InvalidOptionsError(
        `${where} ${flag} must be true (or left out), not ${describeValue(f[flag])}`,
      );
    }
  }
  if (f.reset === true && f.hang === true) {
    throw new InvalidOptionsError(`${where} cannot both reset and hang: script one of them`);
  }
  if (
    f.delayMs !== undefined &&
    !(typeof f.delayMs === 'number' && f.delayMs >= 0 && f.delayMs <= MAX_TIMER_MS)
  ) {
    throw new InvalidOptionsError(
      `${where} delayMs must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, not ${describeValue(f.delayMs)}`,
    );
  }
  if (f.retryAfter !== undefined) checkRetryAfter(where, f.retryAfter);
  if (f.headers !== undefined) checkHeaders(where, f.headers);
  if (f.body !== undefined) checkWritable(`${where} body`, f.body, true);
  if (f.problem !== undefined) {
    if (typeof f.problem !== 'object' || f.problem === null || Array.isArray(f.problem)) {
      throw new InvalidOptionsError(`${where} problem must be an object, not ${describeValue(f.problem)}`);
    }
    const status = (f.problem as { status?: unknown }).status;
    if (status !== undefined) checkStatus(`${where} problem.status`, status);
    checkWritable(`${where} problem`, f.problem, false);
  }
}

/** Checks each of a call's faults ({@link checkFault}), naming it by its place. @throws InvalidOptionsError */
export function checkFaults(where: string, faults: readonly unknown[]): void {
  for (let i = 0; i < faults.length; i++)
    checkFault(faults.length === 1 ? where : `${where} fault ${i}`, faults[i]);
}

/** A final status a server can answer with: an integer from 200 to 599. */
function checkStatus(where: string, status: unknown): void {
  if (!(Number.isInteger(status) && (status as number) >= 200 && (status as number) <= 599)) {
    throw new InvalidOptionsError(
      `${where} must be an integer from 200 to 599, not ${describeValue(status)}`,
    );
  }
}

function checkRetryAfter(where: string, value: unknown): void {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return;
  if (typeof value === 'string' && value.length > 0 && !/[^\t\x20-\x7e]/.test(value)) return;
  throw new InvalidOptionsError(
    `${where} retryAfter must be a whole number of seconds, 0 or more, or a date string without line breaks, not ${describeValue(value)}`,
  );
}

function checkHeaders(where: string, headers: unknown): void {
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw new InvalidOptionsError(`${where} headers must be an object of names and string values`);
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!HTTP_TOKEN.test(name)) {
      throw new InvalidOptionsError(`${where} headers: ${describeValue(name)} is not a header name`);
    }
    if (typeof value !== 'string') {
      throw new InvalidOptionsError(
        `${where} headers: ${name} must be a string, not ${describeValue(value)}`,
      );
    }
    const control = controlCharacter(name, value);
    if (control !== undefined) throw new InvalidOptionsError(`${where} headers: ${control}`);
  }
}

/** A body the server can write: a string, bytes, or what JSON writes as a document. */
function checkWritable(where: string, value: unknown, bytesToo: boolean): void {
  if (typeof value === 'string' || (bytesToo && value instanceof Uint8Array)) return;
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    throw new InvalidOptionsError(`${where} cannot be written as JSON: ${(error as Error).message}`);
  }
  if (json === undefined) {
    throw new InvalidOptionsError(`${where} cannot be written as JSON: ${describeValue(value)}`);
  }
}
