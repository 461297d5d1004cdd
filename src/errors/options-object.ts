import { describeValue } from './describe-value.js';
import { InvalidOptionsError } from './ferry-error.js';

/**
 * Options given as `null`, an array or a primitive: said plainly (`INVALID_OPTIONS`, naming the
 * call), not a TypeError from deep inside. `undefined` passes: the call's defaults apply.
 */
export function assertOptionsObject(call: string, options: unknown): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null || Array.isArray(options) || isBoxed(options)) {
    const given = isBoxed(options as object)
      ? `a boxed ${typeof (options as { valueOf(): unknown }).valueOf()} (new ${(options as object).constructor.name}(…))`
      : describeValue(options);
    throw new InvalidOptionsError(`${call} options must be an object (or left out), not ${given}`);
  }
}

/**
 * `new String('abc')` and its kin: objects whose keys are a string's characters or nothing, never
 * options (one was taken as options with every default).
 */
function isBoxed(value: object): boolean {
  return (
    value instanceof String ||
    value instanceof Number ||
    value instanceof Boolean ||
    value instanceof Symbol ||
    value instanceof BigInt
  );
}

/**
 * Checks options `call` reads as they are: an object or left out ({@link assertOptionsObject}), no
 * key it does not read ({@link refuseUnknownKeys}). Copies nothing: for calls on a hot path.
 * @throws InvalidOptionsError
 */
export function checkOptions(call: string, options: unknown, known: readonly string[]): void {
  assertOptionsObject(call, options);
  if (options !== undefined) refuseUnknownKeys(call, options as object, known);
}

/**
 * Options of `call` as it reads them: an object (or left out: `{}`), no key it does not read
 * ({@link checkOptions}), members set to `undefined` left out ({@link definedOptions}).
 * @throws InvalidOptionsError
 */
export function knownOptions<T extends object>(
  call: string,
  options: T | undefined,
  known: readonly string[],
): Partial<T> {
  checkOptions(call, options, known);
  return options === undefined ? {} : definedOptions(options);
}

/** An optional list of functions (middleware, hooks): `undefined` passes. @throws InvalidOptionsError */
export function assertFunctionList(name: string, list: unknown): void {
  if (list === undefined) return;
  if (!Array.isArray(list)) {
    throw new InvalidOptionsError(`${name} must be an array of functions, not ${describeValue(list)}`);
  }
  // A loop, not every(): every() skips the holes of a sparse array.
  for (let i = 0; i < list.length; i++) {
    if (typeof list[i] !== 'function') {
      throw new InvalidOptionsError(`${name}[${i}] must be a function, not ${describeValue(list[i])}`);
    }
  }
}

/**
 * Refuses a key of `options` that `call` does not read (`INVALID_OPTIONS`, naming it and the keys it
 * takes): a misspelt or misplaced option (`busyTimeout`, `sqlite: { … }`) would otherwise be dropped
 * without a word, and its default used.
 */
export function refuseUnknownKeys(call: string, options: object, known: readonly string[]): void {
  // Inherited enumerable keys too (options made with Object.create(defaults)): they are read as well.
  for (const key in options) {
    if (!known.includes(key)) {
      throw new InvalidOptionsError(
        `${call} has no option ${describeValue(key)}: it takes ${known.join(', ')}`,
      );
    }
  }
}

/**
 * `options` without its members set to `undefined`, so that spreading it over defaults keeps the
 * default: `{ schema: process.env.SCHEMA }` with the variable unset means the default schema, as
 * leaving the option out does.
 */
export function definedOptions<T extends object>(options: T): Partial<T> {
  const out: Partial<T> = {};
  // Inherited enumerable keys too, as reading `options.key` would see them.
  for (const key in options) {
    if (options[key] !== undefined) out[key] = options[key];
  }
  return out;
}
