import type { StandardSchemaV1 } from '../validation/standard-schema.js';
import { toValidationIssues } from '../validation/validation-issue.js';
import { MessageValidationError } from './errors.js';
import { encodeData } from './wire.js';

/** Schemas by message type, e.g. `{ 'order.created': z.object({ orderId: z.string() }) }`. */
export type Contracts = Record<string, StandardSchemaV1>;

/** Contracts of a bus created without any: every type allowed, data untyped. */
// biome-ignore lint/complexity/noBannedTypes: the empty object is exactly "no contracts"
export type NoContracts = {};

type Split<S extends string> = S extends `${infer H}.${infer T}` ? [H, ...Split<T>] : [S];

type MatchWords<P extends readonly string[], T extends readonly string[]> = P extends [
  infer PH,
  ...infer PT extends string[],
]
  ? PH extends '#'
    ? MatchWords<PT, T> extends true
      ? true
      : T extends [string, ...infer TT extends string[]]
        ? MatchWords<P, TT>
        : false
    : T extends [infer TH, ...infer TT extends string[]]
      ? PH extends '*'
        ? MatchWords<PT, TT>
        : PH extends TH
          ? MatchWords<PT, TT>
          : false
      : false
  : T extends []
    ? true
    : false;

/** The contract types a topic pattern matches, computed at compile time with AMQP semantics. */
export type MatchingTypes<C, P extends string> = {
  [K in keyof C & string]: MatchWords<Split<P>, Split<K>> extends true ? K : never;
}[keyof C & string];

/** Message types a bus accepts: its contract keys, or any string without contracts. */
export type TypeOf<C> = [keyof C] extends [never] ? string : keyof C & string;

/** What `publish` takes as data for type `K`. */
export type DataIn<C, K extends string> = K extends keyof C
  ? C[K] extends StandardSchemaV1
    ? StandardSchemaV1.InferInput<C[K]>
    : unknown
  : unknown;

/** What a handler receives as data for type `K`. */
export type DataOut<C, K extends string> = K extends keyof C
  ? C[K] extends StandardSchemaV1
    ? StandardSchemaV1.InferOutput<C[K]>
    : unknown
  : unknown;

/**
 * Validates `data` against `schema`, returning the (possibly transformed) output or throwing
 * {@link MessageValidationError}. Stays synchronous when the schema is, which keeps publish fast.
 */
export function validate(schema: StandardSchemaV1, type: string, data: unknown): unknown | Promise<unknown> {
  const result = schema['~standard'].validate(data);
  if (result instanceof Promise) return result.then((r) => unwrap(r, type));
  return unwrap(result, type);
}

function unwrap(result: StandardSchemaV1.Result<unknown>, type: string, stage?: string): unknown {
  if (result.issues) throw new MessageValidationError(type, toValidationIssues(result.issues), stage);
  return result.value;
}

/**
 * Checks at publish that what subscribers will get passes `schema` too: they get the JSON form of
 * `data` (a Date as its ISO string, undefined members left out, NaN as null…), on every transport.
 * A contract such as `z.date()` accepts the publisher's Date and refuses the string every consumer
 * receives, so each such message would be dead-lettered; this refuses the publish instead. Costs
 * nothing more than a walk for data JSON carries as it is.
 */
export function validateDeliveredForm(
  schema: StandardSchemaV1,
  type: string,
  data: unknown,
): undefined | Promise<unknown> {
  if (isJsonFaithful(data, 0)) return undefined;
  const delivered: unknown = JSON.parse(encodeData(type, data));
  const stage = 'as subscribers receive it (its JSON form)';
  const result = schema['~standard'].validate(delivered);
  if (result instanceof Promise) return result.then((r) => unwrap(r, type, stage));
  unwrap(result, type, stage);
  return undefined;
}

/** Whether a JSON round trip gives `value` back as it is (deep equality). */
function isJsonFaithful(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value) && !Object.is(value, -0);
    case 'object':
      break;
    default:
      return false;
  }
  if (value === null) return true;
  if (depth > 100) return false;
  const proto = Object.getPrototypeOf(value);
  if (Array.isArray(value)) {
    if (proto !== Array.prototype) return false;
    for (let i = 0; i < value.length; i++) if (!isJsonFaithful(value[i], depth + 1)) return false;
    return true;
  }
  if (proto !== Object.prototype && proto !== null) return false;
  const object = value as Record<string, unknown>;
  if (typeof object.toJSON === 'function') return false;
  for (const key in object) {
    if (Object.hasOwn(object, key) && !isJsonFaithful(object[key], depth + 1)) return false;
  }
  return true;
}
