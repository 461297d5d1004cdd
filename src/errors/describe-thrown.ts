import { maskedAndCut } from '../url/redact-url.js';

/** Text of anything, without ever throwing: `String()` throws for a null-prototype object or a hostile `toString`. */
function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    // Falls through to the next description.
  }
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json;
  } catch {
    // Falls through.
  }
  try {
    return Object.prototype.toString.call(value);
  } catch {
    return '[value that cannot be described]';
  }
}

/**
 * Describes anything a handler threw, for logs and dead letters; never throws (a null-prototype
 * object, a Proxy, an Error whose `message` getter throws are described too). An `Error` gives its
 * message and stack; a string itself; any other value a short text saying what was thrown. Each is
 * cut to {@link MAX_DESCRIBED_CHARS}, and the credentials of URLs in them are masked
 * ({@link maskedAndCut}).
 */
export function describeThrown(thrown: unknown): { message: string; stack?: string } {
  const { message, stack } = describedAsThrown(thrown);
  // Logged and kept in dead letters: a URL the error quotes (fetch's "…includes credentials:
  // http://user:pass@host", a driver's connection string) keeps no password there.
  return stack === undefined
    ? { message: maskedAndCut(message, MAX_DESCRIBED_CHARS) }
    : {
        message: maskedAndCut(message, MAX_DESCRIBED_CHARS),
        stack: maskedAndCut(stack, MAX_DESCRIBED_CHARS),
      };
}

/** Most UTF-16 units of a described message or stack: a log line, not a megabyte a handler put in one. */
export const MAX_DESCRIBED_CHARS = 16_384;

function describedAsThrown(thrown: unknown): { message: string; stack?: string } {
  let isError = false;
  try {
    isError = thrown instanceof Error;
  } catch {
    // A Proxy whose prototype cannot be read: described as a value below.
  }
  if (isError) {
    const error = thrown as Error;
    let message: string;
    try {
      // An empty message says nothing: the error's name (its class) at least does.
      message = safeString(error.message) || safeString(error.name) || 'Error';
    } catch {
      message = 'an Error whose message cannot be read';
    }
    try {
      const stack: unknown = error.stack;
      if (typeof stack === 'string') return { message, stack };
    } catch {
      // No stack then.
    }
    return { message };
  }
  if (typeof thrown === 'string') return { message: thrown };
  let text: string;
  try {
    text =
      typeof thrown === 'object' && thrown !== null && !isStringable(thrown)
        ? safeJson(thrown)
        : safeString(thrown);
  } catch {
    text = '[value that cannot be described]';
  }
  return { message: `non-Error value thrown: ${text}` };
}

/** True when `String(value)` says more than `[object Object]`. */
function isStringable(value: object): boolean {
  const describe = (value as { toString?: unknown }).toString;
  return typeof describe === 'function' && describe !== Object.prototype.toString;
}

function safeJson(value: object): string {
  try {
    const json = JSON.stringify(value);
    // Masked before it is cut: a cut between a password and its @ would leave the password.
    if (json !== undefined) return maskedAndCut(json, 1000);
  } catch {
    // Falls through.
  }
  return safeString(value);
}
