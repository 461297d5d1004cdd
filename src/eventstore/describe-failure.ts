/**
 * Text for whatever a handler (or a user function) threw: an `Error`'s stack (`withStack`) or message, else the value as
 * a string. Handlers may throw anything (`undefined`, `Object.create(null)`, an object whose
 * `toString` throws, a revoked proxy): describing it must never throw in turn.
 */
export function describeFailure(value: unknown, withStack: boolean): string {
  try {
    if (value instanceof Error) {
      const text = withStack && typeof value.stack === 'string' && value.stack ? value.stack : value.message;
      if (typeof text === 'string' && text) return text;
      return String(value.name || 'Error');
    }
    if (typeof value === 'string') return value;
    return String(value);
  } catch {
    // Not convertible to a primitive (no prototype, a throwing toString, a revoked proxy…).
  }
  try {
    return `a thrown ${Object.prototype.toString.call(value).slice(8, -1)} that cannot be shown as text`;
  } catch {
    return 'a thrown value that cannot be shown as text';
  }
}
