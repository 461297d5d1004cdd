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
  /**
   * Which recording of a step in the instance this is (1 for its first `done`, counted over every
   * step), part of the undo message id. Absent on steps stored before it was kept.
   */
  readonly recording?: number;
}

/** What a saga instance keeps in `SagaRow.state`, as JSON text. */
export interface StoredSagaState {
  readonly status: string;
  readonly data: unknown;
  readonly timeouts: Readonly<Record<string, StoredTimeout>>;
  readonly undo: readonly UndoStep[];
  /** How many times a step was recorded (`done`) in the instance's life: numbers the next recording. */
  readonly recorded: number;
}

/** Reads `SagaRow.state`; throws on a row that is not a saga state (written by something else). */
export function parseSagaState(saga: string, id: string, text: string): StoredSagaState {
  const value = JSON.parse(text) as Partial<StoredSagaState> | null;
  if (value === null || typeof value !== 'object' || typeof value.status !== 'string') {
    throw new Error(`saga "${saga}" instance "${id}": the stored state is not a saga state`);
  }
  const undo = value.undo ?? [];
  // Never below a step's own number, so that a later recording cannot take an id already used.
  const recorded = Math.max(
    typeof value.recorded === 'number' ? value.recorded : 0,
    ...undo.map((u) => u.recording ?? 0),
  );
  return { status: value.status, data: value.data, timeouts: value.timeouts ?? {}, undo, recorded };
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
 * The id of a step's undo message: a UUID (version 8, "custom") built from the SHA-256 of (saga,
 * instance id, step, recording). A compensation run again (a retried or redelivered message) loads
 * the same recording and sends the same id, so a consumer's inbox drops the duplicate; a step
 * recorded again after a compensation, or replaced, has a new recording and so a new id, which the
 * inbox does not take for the earlier undo. A step stored without a recording (by an earlier
 * version) keeps the id it had: (saga, instance id, step).
 */
export function undoMessageId(saga: string, id: string, step: string, recording?: number): string {
  return recording === undefined
    ? nameUuid('ferry-saga-undo', saga, id, step)
    : nameUuid('ferry-saga-undo', saga, id, step, String(recording));
}
