import { currentContext } from '../context/context.js';
import { describeThrown } from '../errors/describe-thrown.js';
import { describeValue } from '../errors/describe-value.js';
import { uuidv7 } from '../ids/uuidv7.js';
import { InvalidEventError } from './errors.js';
import { EVENT_LIMITS, encodeJson, JsonEncodingProblem, nameProblem } from './event-encoding.js';
import type { EventData, ExpectedVersion, PreparedEvent, ReadStreamOptions } from './types.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Most events in one append. */
export const MAX_APPEND_EVENTS = 10_000;

/**
 * Most events one transaction (a unit of work) appends, on every backend: PostgreSQL's positions
 * leave 16 bits for the event's index in its transaction, and the embedded backends keep the same
 * limit, so that what works on them works there.
 */
export const MAX_TRANSACTION_EVENTS = 65_536;

/** An append that would take its transaction past {@link MAX_TRANSACTION_EVENTS}. */
export function tooManyTransactionEvents(held: number, adding: number): InvalidEventError {
  return new InvalidEventError(
    `one transaction holds at most ${MAX_TRANSACTION_EVENTS} events: this one has ${held}, and the append brings ${adding} (nothing was written)`,
  );
}

/** An append checked and encoded: what a backend stores. */
export interface PreparedAppend {
  readonly events: readonly PreparedEvent[];
  readonly expected: ExpectedVersion;
}

/**
 * Checks an append and encodes its events, the one way for every path that appends (`EventStore.append`,
 * a backend's `appendInTransaction`): else `InvalidEventError` naming the field, before any backend
 * sees it. Fills in missing ids (UUIDv7), lower-cases given ones, and puts the ambient correlation and
 * causation ids in metadata. `expected` undefined means `'any'`.
 */
export function prepareAppend(
  streamId: string,
  events: readonly EventData[],
  expected: ExpectedVersion | undefined,
): PreparedAppend {
  assertStreamId(streamId);
  const expectedVersion = expected === undefined ? 'any' : expected;
  assertExpectedVersion(expectedVersion);
  if (!Array.isArray(events))
    throw new InvalidEventError(`append takes an array of events, not ${describeValue(events)}`);
  if (events.length === 0) throw new InvalidEventError('append needs at least one event');
  if (events.length > MAX_APPEND_EVENTS)
    throw new InvalidEventError(`append takes at most ${MAX_APPEND_EVENTS} events at once`);
  const prepared = events.map((event, i) => prepareEvent(event, i));
  if (new Set(prepared.map((e) => e.id)).size !== prepared.length) {
    throw new InvalidEventError('an append cannot hold the same event id twice');
  }
  return { events: prepared, expected: expectedVersion };
}

export function assertStreamId(streamId: string): void {
  const problem = nameProblem(streamId, EVENT_LIMITS.streamIdLength);
  if (problem !== undefined)
    throw new InvalidEventError(`the stream id ${describeValue(streamId)} ${problem}`);
}

function assertExpectedVersion(expected: ExpectedVersion): void {
  if (expected === 'any' || expected === 'no_stream' || expected === 'stream_exists') return;
  if (typeof expected === 'number' && Number.isSafeInteger(expected) && expected >= -1) return;
  throw new InvalidEventError(
    `expectedVersion must be 'any', 'no_stream', 'stream_exists' or a version (a safe integer, -1 for no stream), not ${describeValue(expected)}`,
  );
}

/**
 * Metadata as JSON sees it at the top level (after its `toJSON`, as `JSON.stringify` calls it) when
 * that is a plain object; else why not. An array, a Date (its ISO string), a Map (stored as {}), a
 * class instance or a primitive would be stored as something else than an object of members, or
 * silently as {}.
 */
function plainMetadata(
  metadata: unknown,
): { readonly plain: Record<string, unknown> } | { readonly not: string } {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))
    return { not: describeValue(metadata) };
  const name = (Object.getPrototypeOf(metadata) as { constructor?: { name?: unknown } } | null)?.constructor
    ?.name;
  const what = typeof name === 'string' && name !== '' && name !== 'Object' ? `a ${name}` : 'an object';
  const toJSON = (metadata as { toJSON?: unknown }).toJSON;
  const value: unknown = typeof toJSON === 'function' ? toJSON.call(metadata, '') : metadata;
  const proto: unknown =
    typeof value === 'object' && value !== null ? Object.getPrototypeOf(value) : undefined;
  if (!Array.isArray(value) && (proto === Object.prototype || proto === null))
    return { plain: value as Record<string, unknown> };
  return { not: value === metadata ? what : `${what} whose toJSON gives ${describeValue(value)}` };
}

/**
 * The event's own metadata members, or `InvalidEventError` naming `metadata`: also when its `toJSON`
 * or a getter throws, as for data (that error the cause), not the thrown error itself.
 */
function ownMetadata(event: EventData, index: number): [string, unknown][] {
  if (event.metadata === undefined) return [];
  let own: ReturnType<typeof plainMetadata>;
  let entries: [string, unknown][];
  try {
    own = plainMetadata(event.metadata);
    entries = 'plain' in own ? Object.entries(own.plain) : [];
  } catch (error) {
    throw new InvalidEventError(
      `event ${index} (${event.type}): metadata: cannot be encoded as JSON: ${describeThrown(error).message}`,
      { cause: error },
    );
  }
  if ('not' in own) {
    throw new InvalidEventError(
      `event ${index} (${event.type}): metadata must be a plain object, not ${own.not}`,
    );
  }
  return entries;
}

/** Fills in id and metadata, with the ambient correlation and causation ids, and encodes the event. */
function prepareEvent(event: EventData, index: number): PreparedEvent {
  if (typeof event !== 'object' || event === null)
    throw new InvalidEventError(`event ${index} is not an object`);
  const typeProblem = nameProblem(event.type, EVENT_LIMITS.typeLength);
  if (typeProblem !== undefined)
    throw new InvalidEventError(`event ${index}: its type ${describeValue(event.type)} ${typeProblem}`);
  if (event.id !== undefined && (typeof event.id !== 'string' || !UUID.test(event.id))) {
    throw new InvalidEventError(`event ${index}: its id ${describeValue(event.id)} is not a UUID`);
  }
  const own = ownMetadata(event, index);
  const context = currentContext();
  const ambient: [string, unknown][] = [];
  if (context !== undefined) {
    ambient.push(['correlationId', context.correlationId]);
    if (context.messageId !== undefined) ambient.push(['causationId', context.messageId]);
  }
  // fromEntries defines own properties: a `__proto__` key stays a key, as in JSON, and sets no prototype.
  const metadata = Object.fromEntries([...ambient, ...own]);
  const data = encodeJson(event.data === undefined ? null : event.data);
  if (data instanceof JsonEncodingProblem)
    throw new InvalidEventError(`event ${index} (${event.type}): data: ${data.message}`, {
      cause: data.cause,
    });
  const encodedMetadata = encodeJson(metadata);
  if (encodedMetadata instanceof JsonEncodingProblem)
    throw new InvalidEventError(`event ${index} (${event.type}): metadata: ${encodedMetadata.message}`, {
      cause: encodedMetadata.cause,
    });
  return {
    id: event.id?.toLowerCase() ?? uuidv7(),
    type: event.type,
    data,
    metadata: encodedMetadata as Record<string, unknown>,
  };
}

/**
 * Checks the arguments of a stream read (else `InvalidEventError`, `INVALID_EVENT`): the stream id,
 * `fromVersion` and `limit` non-negative safe integers, `direction` 'forward' or 'backward'.
 */
export function assertReadStream(streamId: string, options: ReadStreamOptions): void {
  assertStreamId(streamId);
  if (options.fromVersion !== undefined && !isCount(options.fromVersion)) {
    throw new InvalidEventError(
      `fromVersion must be a non-negative safe integer, not ${describeValue(options.fromVersion)}`,
    );
  }
  if (options.limit !== undefined && !isCount(options.limit)) {
    throw new InvalidEventError(
      `limit must be a non-negative safe integer, not ${describeValue(options.limit)}`,
    );
  }
  if (
    options.direction !== undefined &&
    options.direction !== 'forward' &&
    options.direction !== 'backward'
  ) {
    throw new InvalidEventError(
      `direction must be 'forward' or 'backward', not ${describeValue(options.direction)}`,
    );
  }
}

/** A non-negative safe integer (a version, a count). */
export function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
