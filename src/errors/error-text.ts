/**
 * `error`'s message (an Error's, else its string form), or `unreadable` when reading it throws (a
 * Proxy, a hostile getter, a null-prototype object): for a log line that must not fail itself.
 */
export function errorText(error: unknown, unreadable: string): string {
  try {
    return error instanceof Error ? error.message : String(error);
  } catch {
    return unreadable;
  }
}
