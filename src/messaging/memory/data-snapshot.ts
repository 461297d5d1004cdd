import { encodeData } from '../wire.js';

/**
 * A published `data` taken at publish time, in the form a transport that sends bytes would store:
 * every delivery gets its own copy ({@link copyOfSnapshot}), equal to what decoding the JSON would
 * give, so that embedded and distributed deployments see the same messages. A plain JSON-safe value
 * is kept as a private copy; anything else as its JSON text.
 */
export type DataSnapshot = { readonly __brand: 'DataSnapshot' };

/** The JSON text of data that needed the real encoder. */
class EncodedData {
  readonly json: string;
  constructor(json: string) {
    this.json = json;
  }
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
  // Built key by key with `for…in`, which leaves out symbol keys as JSON does: a spread would copy
  // them, and looking for them (getOwnPropertySymbols) costs more than this whole loop.
  const out: Record<string, unknown> = {};
  const inherited = proto !== null && prototypeHasEnumerableKeys();
  for (const key in object) {
    // Inherited enumerable keys (a polluted prototype) are not the object's: JSON skips them.
    if (inherited && !Object.hasOwn(object, key)) continue;
    // Assigning `__proto__` would set the copy's prototype instead of a property.
    if (key === '__proto__') return NOT_PLAIN;
    const item = object[key];
    switch (typeof item) {
      case 'string':
      case 'boolean':
        out[key] = item;
        continue;
      case 'number':
        // `+ 0` turns -0 into 0, as JSON does.
        out[key] = Number.isFinite(item) ? item + 0 : null;
        continue;
      case 'object': {
        if (item === null) {
          out[key] = null;
          continue;
        }
        const copy = plainObjectCopy(item, depth + 1);
        if (copy === NOT_PLAIN) return NOT_PLAIN;
        out[key] = copy;
        continue;
      }
      case 'undefined':
      case 'function':
      case 'symbol':
        // Left out, as JSON leaves it out.
        continue;
      default:
        return NOT_PLAIN;
    }
  }
  return out;
}

const EMPTY = Object.freeze({});

/** Whether `Object.prototype` has enumerable keys (someone polluted it), which `for…in` would list. */
function prototypeHasEnumerableKeys(): boolean {
  for (const _ in EMPTY) return true;
  return false;
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
    // Inherited keys (a polluted prototype) are not copied.
    if (typeof item === 'object' && item !== null && Object.hasOwn(out, key)) out[key] = clonePlain(item);
  }
  return out;
}

/** A fresh copy of the snapshot for one delivery: what `JSON.parse` of {@link jsonOfSnapshot} gives. */
export function copyOfSnapshot(snapshot: DataSnapshot): unknown {
  const value: unknown = snapshot;
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof EncodedData) return JSON.parse(value.json);
  return clonePlain(value);
}

/** The JSON text a transport sending bytes would carry. */
export function jsonOfSnapshot(snapshot: DataSnapshot): string {
  const value: unknown = snapshot;
  return value instanceof EncodedData ? value.json : JSON.stringify(value);
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
  if (plain === NOT_PLAIN) return new EncodedData(encodeData(type, data)) as unknown as DataSnapshot;
  return (plain === OMITTED ? null : plain) as DataSnapshot;
}
