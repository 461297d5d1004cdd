import { AssertionError, deepStrictEqual } from 'node:assert';
import { inspect } from 'node:util';

/**
 * What a thrown error must match: an error class (`instanceof`), a predicate such as an
 * `isXxxError` guard, or a pattern tested against the error's message.
 */
export type ErrorMatcher =
  | (abstract new (
      ...args: never[]
    ) => unknown)
  | ((error: unknown) => boolean)
  | RegExp;

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

/** Whether `error` matches `matcher`. */
export function matches(error: unknown, matcher: ErrorMatcher): boolean {
  if (matcher instanceof RegExp) {
    matcher.lastIndex = 0; // a /g or /y pattern remembers where its last match ended
    return matcher.test(error instanceof Error ? error.message : String(error));
  }
  if (isErrorClass(matcher)) return error instanceof matcher;
  return matcher(error) === true;
}

// Classes and predicates are both functions; an error class is one whose prototype is an Error.
function isErrorClass(matcher: ErrorMatcher): matcher is abstract new (...args: never[]) => unknown {
  return typeof matcher === 'function' && (matcher === Error || matcher.prototype instanceof Error);
}

/** `matcher` in words, for assertion messages. */
export function describeMatcher(matcher: ErrorMatcher): string {
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
