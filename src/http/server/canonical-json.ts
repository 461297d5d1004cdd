/**
 * One spelling of a JSON value: object members sorted by name (UTF-16 code units), arrays in their
 * order, no whitespace, strings and numbers as `JSON.stringify` writes them. Two bodies that parse
 * to the same data (another key order, other spacing, `\u0041` for `A`, `1.0` for `1`) have the
 * same canonical JSON; two that differ in any value, or in the order of an array, do not.
 *
 * `undefined` when `value` is not plain JSON data, as `JSON.parse` makes it: a class instance (a
 * Date, a Buffer, a stream), `undefined`, a function, a non-finite number, a bigint, or an object
 * met twice (a cycle, or shared). Iterative: a body nested a million levels deep is read without
 * exhausting the stack.
 */
export function canonicalJson(value: unknown): string | undefined {
  const out: string[] = [];
  const seen = new Set<object>();
  // What is left to write, last first: a value, or text written as it is.
  const todo: ({ readonly value: unknown } | string)[] = [{ value }];
  for (let item = todo.pop(); item !== undefined; item = todo.pop()) {
    if (typeof item === 'string') {
      out.push(item);
      continue;
    }
    const next = item.value;
    if (next === null || typeof next === 'string' || typeof next === 'boolean') {
      out.push(JSON.stringify(next));
      continue;
    }
    if (typeof next === 'number') {
      if (!Number.isFinite(next)) return undefined;
      out.push(JSON.stringify(next));
      continue;
    }
    if (typeof next !== 'object' || seen.has(next)) return undefined;
    seen.add(next);
    if (Array.isArray(next)) {
      out.push('[');
      todo.push(']');
      for (let i = next.length - 1; i >= 0; i--) {
        if (!Object.hasOwn(next, i)) return undefined;
        todo.push({ value: next[i] });
        if (i > 0) todo.push(',');
      }
      continue;
    }
    const proto: unknown = Object.getPrototypeOf(next);
    if (proto !== Object.prototype && proto !== null) return undefined;
    const record = next as Record<string, unknown>;
    const names = Object.keys(record).sort();
    out.push('{');
    todo.push('}');
    for (let i = names.length - 1; i >= 0; i--) {
      const name = names[i] as string;
      todo.push({ value: record[name] });
      todo.push(`${JSON.stringify(name)}:`);
      if (i > 0) todo.push(',');
    }
  }
  return out.join('');
}
