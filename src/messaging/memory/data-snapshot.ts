import { encodeData } from '../wire.js';
import {
  compileShapePlan,
  MEMBER_BYTES,
  MISS,
  type PlanHelpers,
  type ShapePlan,
  STRING_BYTES_PER_UNIT,
} from './shape-plan.js';

/**
 * A published `data` taken at publish time, in the form a transport that sends bytes would store:
 * every delivery gets its own copy ({@link copyOfSnapshot}), equal to what decoding the JSON would
 * give, so that embedded and distributed deployments see the same messages. A plain JSON-safe value
 * is kept as a private copy, with the function that copies it for a delivery; anything else as its
 * JSON text.
 */
export class DataSnapshot {
  /** The private copy, or the JSON text when `#encoded`. */
  readonly #value: unknown;
  readonly #copy: (value: never) => unknown;
  readonly #encoded: boolean;
  /** At least the bytes of {@link json} in UTF-8, counted while copying (see {@link bytes}). */
  readonly bytesAtMost: number;

  constructor(value: unknown, copy: (value: never) => unknown, encoded: boolean, bytesAtMost: number) {
    this.#value = value;
    this.#copy = copy;
    this.#encoded = encoded;
    this.bytesAtMost = bytesAtMost;
  }

  /** The bytes of {@link json} in UTF-8: counted only when {@link bytesAtMost} is over a limit. */
  bytes(): number {
    return Buffer.byteLength(this.json());
  }

  /** A fresh copy for one delivery: what `JSON.parse` of {@link json} gives. */
  copy(): unknown {
    return this.#copy(this.#value as never);
  }

  /** The JSON text a transport sending bytes would carry. */
  json(): string {
    return this.#encoded ? (this.#value as string) : JSON.stringify(this.#value);
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
 * `inherited`: whether `Object.prototype` lends enumerable keys (asked once per snapshot).
 */
function plainCopy(value: unknown, depth: number, inherited: boolean): unknown {
  const type = typeof value;
  if (type === 'string') {
    report.bound += STRING_BYTES_PER_UNIT * (value as string).length + MEMBER_BYTES;
    return value;
  }
  report.bound += MEMBER_BYTES;
  if (type === 'boolean') return value;
  // `+ 0` turns -0 into 0, as JSON does.
  if (type === 'number') return Number.isFinite(value) ? (value as number) + 0 : null;
  if (type === 'object') return value === null ? null : containerCopy(value as object, depth, inherited);
  if (type === 'undefined' || type === 'function' || type === 'symbol') return OMITTED;
  return NOT_PLAIN;
}

function containerCopy(value: object, depth: number, inherited: boolean): unknown {
  if (depth >= MAX_PLAIN_DEPTH) return NOT_PLAIN;
  const proto = Object.getPrototypeOf(value);
  if (Array.isArray(value)) {
    if (proto !== Array.prototype || value.length > MAX_PLAIN_LENGTH) return NOT_PLAIN;
    if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return NOT_PLAIN;
    return arrayCopy(value, depth, inherited);
  }
  if (proto !== Object.prototype && proto !== null) return NOT_PLAIN;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return NOT_PLAIN;
  return objectCopy(value as Record<string, unknown>, depth, inherited);
}

function arrayCopy(value: readonly unknown[], depth: number, inherited: boolean): unknown {
  // The length is read once, as JSON reads it: an element getter that grows or shrinks the array
  // changes neither how many elements are copied nor that missing ones become null.
  const length = value.length;
  const out: unknown[] = new Array(length);
  for (let i = 0; i < length; i++) {
    const item = plainCopy(value[i], depth + 1, inherited);
    if (item === NOT_PLAIN) return NOT_PLAIN;
    out[i] = item === OMITTED ? null : item;
  }
  return out;
}

/**
 * Built key by key with `for…in`, which leaves out symbol keys as JSON does: a spread would copy
 * them, and looking for them (getOwnPropertySymbols) costs more than this whole loop. The common
 * types are tested inline, as `if`s: this runs for every member of every published message.
 */
function objectCopy(object: Record<string, unknown>, depth: number, inherited: boolean): unknown {
  const out: Record<string, unknown> = {};
  for (const key in object) {
    // Inherited enumerable keys (a polluted prototype) are not the object's: JSON skips them.
    if (inherited && !Object.hasOwn(object, key)) continue;
    // Assigning `__proto__` would set the copy's prototype instead of a property.
    if (key === '__proto__') return NOT_PLAIN;
    const item = object[key];
    const type = typeof item;
    report.bound += STRING_BYTES_PER_UNIT * key.length + MEMBER_BYTES;
    if (type === 'string') {
      out[key] = item;
      report.bound += STRING_BYTES_PER_UNIT * (item as string).length;
    } else if (type === 'boolean') out[key] = item;
    else if (type === 'number') out[key] = Number.isFinite(item) ? (item as number) + 0 : null;
    else if (type === 'object') {
      if (item === null) out[key] = null;
      else {
        const copy = containerCopy(item as object, depth + 1, inherited);
        if (copy === NOT_PLAIN) return NOT_PLAIN;
        out[key] = copy;
      }
    } else if (type !== 'undefined' && type !== 'function' && type !== 'symbol') return NOT_PLAIN;
    // `undefined`, functions and symbols are left out, as JSON leaves them out.
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
function clonePlain(value: object, inherited: boolean): object {
  if (Array.isArray(value)) {
    const out = value.slice();
    for (let i = 0; i < out.length; i++) {
      const item: unknown = out[i];
      if (typeof item === 'object' && item !== null) out[i] = clonePlain(item, inherited);
    }
    return out;
  }
  const out: Record<string, unknown> = { ...value };
  for (const key in out) {
    const item = out[key];
    // Inherited keys (a polluted prototype) are not copied.
    if (typeof item === 'object' && item !== null && (!inherited || Object.hasOwn(out, key))) {
      out[key] = clonePlain(item, inherited);
    }
  }
  return out;
}

/** A fresh copy of the snapshot for one delivery: what `JSON.parse` of {@link jsonOfSnapshot} gives. */
export function copyOfSnapshot(snapshot: DataSnapshot): unknown {
  return snapshot.copy();
}

/** The JSON text a transport sending bytes would carry. */
export function jsonOfSnapshot(snapshot: DataSnapshot): string {
  return snapshot.json();
}

const same = (value: unknown): unknown => value;
const parse = (json: string): unknown => JSON.parse(json);
const cloneGeneric = (value: object): object => clonePlain(value, prototypeHasEnumerableKeys());

/** Finishes a plan's copy of `object` key by key, from the member the JSON encoding leaves out. */
function finishGeneric(
  object: Record<string, unknown>,
  keys: readonly string[],
  from: number,
  copies: readonly unknown[],
  depth: number,
): unknown {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < from; i++) out[keys[i]!] = copies[i];
  for (let i = from; i < keys.length; i++) {
    const key = keys[i]!;
    // The member at `from` was read already: its copy is what the plan found left out.
    const copy = i === from ? OMITTED : plainCopy(object[key], depth + 1, false);
    if (copy === NOT_PLAIN) return NOT_PLAIN;
    if (copy !== OMITTED) out[key] = copy;
  }
  return out;
}

/**
 * `strayed`: set by a plan's copier when part of the data strayed from the plan. `bound`: what the
 * copiers count, at least the bytes of the data's JSON (6 per UTF-16 unit of strings and keys, 32
 * per member), so that the exact size is computed only for data that may be over a limit.
 */
const report = { strayed: false, bound: 0 };
const helpers: PlanHelpers = {
  copy: (value, depth) => plainCopy(value, depth, false),
  finish: finishGeneric,
  notPlain: NOT_PLAIN,
  omitted: OMITTED,
  maxLength: MAX_PLAIN_LENGTH,
  report,
};

/** What is known of the shapes published with one message type. */
interface TypePlans {
  plan: ShapePlan | undefined;
  /** Snapshots in a row made without a plan, or whose data strayed from it. */
  unplanned: number;
  compilations: number;
}

/** Message types whose shapes are planned, at most {@link MAX_PLANNED_TYPES}. */
const typePlans = new Map<string, TypePlans>();
const MAX_PLANNED_TYPES = 1000;
/** A shape is compiled after this many unplanned snapshots of its type... */
const PLAN_AFTER = 16;
/** ...at most this many times per type, so that a type whose shape keeps changing stays generic. */
const MAX_COMPILATIONS = 4;

/** The type of the last snapshot and its plans: publishers tend to publish one type in a row. */
let lastType: string | undefined;
let lastPlans: TypePlans | undefined;

function plansOf(type: string): TypePlans | undefined {
  if (type === lastType) return lastPlans;
  let plans = typePlans.get(type);
  if (plans === undefined && typePlans.size < MAX_PLANNED_TYPES) {
    plans = { plan: undefined, unplanned: 0, compilations: 0 };
    typePlans.set(type, plans);
  }
  lastType = type;
  lastPlans = plans;
  return plans;
}

/** Counts an unplanned snapshot of `copy`, and plans its shape when its type keeps coming. */
function unplanned(plans: TypePlans, copy: object): void {
  if (++plans.unplanned < PLAN_AFTER || plans.compilations >= MAX_COMPILATIONS) return;
  plans.unplanned = 0;
  plans.compilations++;
  plans.plan = compileShapePlan(copy, helpers) ?? plans.plan;
}

/**
 * Takes a snapshot of `data` at publish, or throws `MessageNotSerializableError` for data no
 * transport could send. Plain JSON-safe data is copied directly, which costs a fraction of encoding
 * and decoding it; the rest is encoded once, with the encoder every transport uses, and decoded per
 * delivery. Data of the shape its type usually has is copied, and then copied per delivery, by code
 * compiled for that shape (see shape-plan.ts); the copies are the same.
 */
export function snapshotData(type: string, data: unknown): DataSnapshot {
  const inherited = prototypeHasEnumerableKeys();
  // A polluted prototype takes the generic path, which skips inherited keys.
  const plans = inherited ? undefined : plansOf(type);
  const plan = plans?.plan;
  // Saved and restored: a getter of the data may publish, and so take a snapshot, meanwhile.
  const outer = report.strayed;
  const outerBound = report.bound;
  report.strayed = false;
  report.bound = 0;
  let copy: unknown = MISS;
  let planned = false;
  let bound = 0;
  try {
    if (plan !== undefined) {
      copy = plan.copy(data);
      planned = copy !== MISS && !report.strayed;
    }
    if (copy === MISS) copy = plainCopy(data, 0, inherited);
  } catch {
    // A getter that throws: the encoder meets the same error and reports it.
    copy = NOT_PLAIN;
  } finally {
    report.strayed = outer;
    bound = report.bound;
    report.bound = outerBound;
  }
  if (copy === NOT_PLAIN) {
    const json = encodeData(type, data);
    return new DataSnapshot(json, parse, true, 3 * json.length);
  }
  if (typeof copy !== 'object' || copy === null)
    return new DataSnapshot(copy === OMITTED ? null : copy, same, false, bound);
  if (planned) {
    // Only a run of strays replans: an odd message of another shape now and then does not.
    plans!.unplanned = 0;
    return new DataSnapshot(copy, plan!.clone, false, bound);
  }
  if (plans !== undefined) unplanned(plans, copy);
  return new DataSnapshot(copy, cloneGeneric, false, bound);
}
