/** Longest description of a value an error message quotes; longer ones end in "...". */
const MAX_DESCRIPTION = 80;

/**
 * A value as an error message names it, whatever it is and never throwing: strings quoted (as JSON
 * writes them), bigints with their `n`, numbers, booleans, null and undefined as written, arrays
 * with their items, other objects as "an object" and functions as "a function" (their text may be
 * long or hold secrets, and an object without a prototype cannot be made a string). Cut at 80
 * characters.
 *
 * @example
 * describeValue('x')       // '"x"'
 * describeValue([200, 'x']) // '[200, "x"]'
 * describeValue(Object.create(null)) // 'an object'
 */
export function describeValue(value: unknown): string {
  let text: string;
  try {
    text = describe(value, 0);
  } catch {
    // An item getter or a proxy that throws; a revoked proxy throws even on Array.isArray.
    text = isArray(value) ? 'an array' : 'an object';
  }
  return text.length > MAX_DESCRIPTION ? `${text.slice(0, MAX_DESCRIPTION - 3)}...` : text;
}

function describe(value: unknown, depth: number): string {
  if (typeof value === 'string') {
    // Quoted whole only when short: a megabyte string is not copied to be cut.
    return JSON.stringify(value.length > MAX_DESCRIPTION ? value.slice(0, MAX_DESCRIPTION) : value);
  }
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  if (Array.isArray(value)) {
    if (depth > 0) return 'an array';
    // Only the items that fit are described.
    const items: string[] = [];
    let length = 0;
    for (let i = 0; i < value.length && length <= MAX_DESCRIPTION; i++) {
      const item = i in value ? describe(value[i], depth + 1) : 'empty';
      items.push(item);
      length += item.length + 2;
    }
    return `[${items.join(', ')}${items.length < value.length ? ', ...' : ''}]`;
  }
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function isArray(value: unknown): boolean {
  try {
    return Array.isArray(value);
  } catch {
    return false;
  }
}
