import { encodeData } from '../wire.js';

/**
 * A published `data` taken at publish time, in the form a transport that sends bytes would store:
 * every delivery gets its own copy, equal to what decoding the JSON would give, so that embedded and
 * distributed deployments see the same messages.
 */
export interface DataSnapshot {
  /** A fresh copy for one delivery: what `JSON.parse` of {@link json} gives. */
  copy(): unknown;
  /** The JSON text a transport sending bytes would carry. */
  json(): string;
}

/** Deeper (or cyclic) data takes the JSON path, which also rejects cycles as RabbitMQ does. */
const MAX_PLAIN_DEPTH = 64;
/** Longer arrays take the JSON path, which bounds sparse arrays with a huge `length`. */
const MAX_PLAIN_LENGTH = 100_000;
const NOT_PLAIN: unique symbol = Symbol('not plain');
/** What JSON leaves out of an object and writes as `null` in an array. */
const OMITTED: unique symbol = Symbol('omitted');

/**
 * Copies `value` as a JSON round trip would, for the data a JSON round trip provably leaves as it is
 * but for the rules applied here: strings, booleans, `null`, numbers (non-finite ones become `null`,
 * `-0` becomes `0`), and arrays and objects with the plain prototype (or none), no `toJSON`, no own
 * `__proto__` key, holding such values (`undefined`, functions and symbols are left out of objects and
 * become `null` in arrays, as `JSON.stringify` does; symbol keys are left out). Anything else (a Date,
 * a Map, a class instance, a BigInt, a cycle…) answers `NOT_PLAIN` and goes through the real encoder.
 */
function plainCopy(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      // `+ 0` turns -0 into 0, as JSON does.
      return Number.isFinite(value) ? (value as number) + 0 : null;
    case 'undefined':
    case 'function':
    case 'symbol':
      return OMITTED;
    case 'object':
      return value === null ? null : plainObjectCopy(value, depth);
    default:
      return NOT_PLAIN;
  }
}

function plainObjectCopy(value: object, depth: number): unknown {
  if (depth >= MAX_PLAIN_DEPTH) return NOT_PLAIN;
  const proto = Object.getPrototypeOf(value);
  if (Array.isArray(value)) {
    if (proto !== Array.prototype || value.length > MAX_PLAIN_LENGTH) return NOT_PLAIN;
    if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return NOT_PLAIN;
    const out: unknown[] = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const item = plainCopy(value[i], depth + 1);
      if (item === NOT_PLAIN) return NOT_PLAIN;
      out[i] = item === OMITTED ? null : item;
    }
    return out;
  }
  if (proto !== Object.prototype && proto !== null) return NOT_PLAIN;
  const object = value as Record<string, unknown>;
  if (typeof object.toJSON === 'function') return NOT_PLAIN;
  if (Object.getOwnPropertySymbols(object).length > 0) return keyedCopy(object, depth);
  // A spread copies an object whose values are all kept as they are in one fast step (V8 clones
  // the object's shape); the loop then fixes what JSON would change.
  const out: Record<string, unknown> = { ...object };
  for (const key in out) {
    // Inherited enumerable keys (a polluted prototype) are not the object's: JSON skips them.
    if (!Object.hasOwn(out, key)) continue;
    // Assigning `__proto__` would set a later copy's prototype instead of a property.
    if (key === '__proto__') return NOT_PLAIN;
    const item = out[key];
    switch (typeof item) {
      case 'string':
      case 'boolean':
        continue;
      case 'number':
        if (!Number.isFinite(item)) out[key] = null;
        else if (item === 0) out[key] = 0;
        continue;
      case 'object': {
        if (item === null) continue;
        const copy = plainObjectCopy(item, depth + 1);
        if (copy === NOT_PLAIN) return NOT_PLAIN;
        out[key] = copy;
        continue;
      }
      case 'undefined':
      case 'function':
      case 'symbol':
        // A member JSON leaves out: deleting it from the spread copy would slow the copy down.
        return keyedCopy(object, depth);
      default:
        return NOT_PLAIN;
    }
  }
  return out;
}

/** The object case of {@link plainCopy}, key by key: for objects with members JSON leaves out. */
function keyedCopy(object: Record<string, unknown>, depth: number): unknown {
  const out: Record<string, unknown> = {};
  for (const key in object) {
    if (!Object.hasOwn(object, key)) continue;
    if (key === '__proto__') return NOT_PLAIN;
    const item = plainCopy(object[key], depth + 1);
    if (item === NOT_PLAIN) return NOT_PLAIN;
    if (item !== OMITTED) out[key] = item;
  }
  return out;
}

/**
 * Copies data that {@link plainCopy} already produced: only strings, booleans, finite numbers,
 * `null`, arrays and plain objects without `__proto__` keys or symbol keys, so no check is needed
 * on the way and a spread copies each object.
 */
function clonePlain(value: object): object {
  if (Array.isArray(value)) {
    const out = value.slice();
    for (let i = 0; i < out.length; i++) {
      const item: unknown = out[i];
      if (typeof item === 'object' && item !== null) out[i] = clonePlain(item);
    }
    return out;
  }
  const out: Record<string, unknown> = { ...value };
  for (const key in out) {
    const item = out[key];
    if (typeof item === 'object' && item !== null) out[key] = clonePlain(item);
  }
  return out;
}

class PlainSnapshot implements DataSnapshot {
  readonly #value: unknown;
  constructor(value: unknown) {
    this.#value = value;
  }
  copy(): unknown {
    const value = this.#value;
    return typeof value === 'object' && value !== null ? clonePlain(value) : value;
  }
  json(): string {
    return JSON.stringify(this.#value);
  }
}

class JsonSnapshot implements DataSnapshot {
  readonly #json: string;
  constructor(json: string) {
    this.#json = json;
  }
  copy(): unknown {
    return JSON.parse(this.#json);
  }
  json(): string {
    return this.#json;
  }
}

/**
 * Takes a snapshot of `data` at publish, or throws `MessageNotSerializableError` for data no
 * transport could send. Plain JSON-safe data is copied directly, which costs a fraction of encoding
 * and decoding it; the rest is encoded once, with the encoder every transport uses, and decoded per
 * delivery.
 */
export function snapshotData(type: string, data: unknown): DataSnapshot {
  let plain: unknown;
  try {
    plain = plainCopy(data, 0);
  } catch {
    // A getter that throws: the encoder meets the same error and reports it.
    plain = NOT_PLAIN;
  }
  if (plain === NOT_PLAIN) return new JsonSnapshot(encodeData(type, data));
  return new PlainSnapshot(plain === OMITTED ? null : plain);
}
