import { AssertionError, deepStrictEqual } from 'node:assert';
import { inspect } from 'node:util';
import { InvalidOptionsError } from '../errors/ferry-error.js';

/**
 * What a thrown error must match: an error class (`instanceof`), a predicate such as an
 * `isXxxError` guard, a pattern tested against the error's message, or a string: the error's
 * `code` (`'SAGA_INVALID_TRANSITION'`).
 */
export type ErrorMatcher =
  | (abstract new (
      ...args: never[]
    ) => unknown)
  | ((error: unknown) => boolean)
  | RegExp
  | string;

// The operator names the step that failed. It is not 'deepStrictEqual' on purpose: with that operator
// some Node versions append the diff to a custom message, which already holds it.
export function assertDeepEqual(actual: unknown, expected: unknown, summary: string, operator: string): void {
  try {
    deepStrictEqual(actual, expected);
  } catch (error) {
    // Keep node's diff, prefixed with what was being compared.
    const diff = error instanceof Error ? error.message : String(error);
    throw new AssertionError({ message: `${summary}\n${diff}`, actual, expected, operator });
  }
}

/** Whether `error` matches `matcher`, which the spec checked with {@link assertMatcher} before running. */
export function matches(error: unknown, matcher: ErrorMatcher): boolean {
  if (typeof matcher === 'string') return (error as { code?: unknown } | null)?.code === matcher;
  if (matcher instanceof RegExp) {
    matcher.lastIndex = 0; // a /g or /y pattern remembers where its last match ended
    return matcher.test(error instanceof Error ? error.message : String(error));
  }
  if (isErrorClass(matcher)) return error instanceof matcher;
  return matcher(error) === true;
}

// Classes and predicates are both functions; an error class is one whose prototype is an Error.
/** A matcher of none of the four kinds is a mistake in the test, said as such. */
export function assertMatcher(matcher: unknown): asserts matcher is ErrorMatcher {
  if (
    typeof matcher === 'string'
      ? matcher === ''
      : typeof matcher !== 'function' && !(matcher instanceof RegExp)
  ) {
    throw new InvalidOptionsError(
      `thenThrows takes an error class, a predicate (an isXxxError guard), a RegExp for the message or an error code string, not ${inspect(matcher)}`,
    );
  }
}

function isErrorClass(matcher: ErrorMatcher): matcher is abstract new (...args: never[]) => unknown {
  return typeof matcher === 'function' && (matcher === Error || matcher.prototype instanceof Error);
}

/** `matcher` in words, for assertion messages. */
export function describeMatcher(matcher: ErrorMatcher): string {
  if (typeof matcher === 'string') return `the code ${JSON.stringify(matcher)}`;
  if (matcher instanceof RegExp) return `the message pattern ${String(matcher)}`;
  if (isErrorClass(matcher)) return `the class ${matcher.name}`;
  return `the predicate ${matcher.name || '(anonymous)'}`;
}

export function showError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : show(error);
}

export function show(value: unknown): string {
  return inspect(value, { depth: 6, breakLength: Number.POSITIVE_INFINITY });
}
