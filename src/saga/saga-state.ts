import { isDeepStrictEqual } from 'node:util';
import { nameUuid } from '../ids/name-uuid.js';

/** A pending timeout of an instance: the id of its scheduled outbox message (to cancel it) and its type. */
export interface StoredTimeout {
  readonly id: string;
  readonly type: string;
}

/** A step done, and the message that undoes it. */
export interface UndoStep {
  readonly step: string;
  readonly type: string;
  readonly data: unknown;
}

/** What a saga instance keeps in `SagaRow.state`, as JSON text. */
export interface StoredSagaState {
  readonly status: string;
  readonly data: unknown;
  readonly timeouts: Readonly<Record<string, StoredTimeout>>;
  readonly undo: readonly UndoStep[];
}

/** Reads `SagaRow.state`; throws on a row that is not a saga state (written by something else). */
export function parseSagaState(saga: string, id: string, text: string): StoredSagaState {
  const value = JSON.parse(text) as Partial<StoredSagaState> | null;
  if (value === null || typeof value !== 'object' || typeof value.status !== 'string') {
    throw new Error(`saga "${saga}" instance "${id}": the stored state is not a saga state`);
  }
  return { status: value.status, data: value.data, timeouts: value.timeouts ?? {}, undo: value.undo ?? [] };
}

/**
 * Where `value` would not come back deeply equal (`isDeepStrictEqual`) from a JSON round trip, as a
 * path such as `data.placedAt`; `undefined` when it would. Names the usual culprits (a Date, a Map, a
 * class instance, NaN, -0, a function, a bigint, an `undefined` member, which JSON drops), then
 * compares the round trip itself, so that nothing else slips through (symbol keys, extra properties
 * of an array, an object without prototype).
 */
export function jsonProblem(value: unknown, path: string): string | undefined {
  const named = namedJsonProblem(value, path, 0);
  if (named !== undefined) return named;
  return isDeepStrictEqual(JSON.parse(JSON.stringify(value)), value)
    ? undefined
    : `${path} (does not read back equal from JSON)`;
}

function namedJsonProblem(value: unknown, path: string, depth: number): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      if (Object.is(value, -0)) return `${path} (-0, which JSON reads back as 0)`;
      return Number.isFinite(value) ? undefined : `${path} (${value})`;
    case 'object':
      break;
    default:
      return `${path} (a ${typeof value})`;
  }
  if (value === null) return undefined;
  if (depth > 100) return `${path} (nested too deep)`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = namedJsonProblem(value[i], `${path}[${i}]`, depth + 1);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto === null) return `${path} (an object without prototype)`;
  if (proto !== Object.prototype) {
    return `${path} (a ${(value as object).constructor?.name ?? 'class instance'})`;
  }
  for (const [key, member] of Object.entries(value)) {
    if (member === undefined) return `${path}.${key} (undefined: JSON drops the property)`;
    const problem = namedJsonProblem(member, `${path}.${key}`, depth + 1);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * A message id that depends only on (saga, instance id, step): a UUID (version 8, "custom") built
 * from the SHA-256 of the three. An undo published again by a re-run compensation has the same id,
 * so a consumer's inbox drops the duplicate.
 */
export function undoMessageId(saga: string, id: string, step: string): string {
  return nameUuid('ferry-saga-undo', saga, id, step);
}
