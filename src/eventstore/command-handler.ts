import { isDeepStrictEqual } from 'node:util';
import { describeThrown } from '../errors/describe-thrown.js';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions, knownOptions } from '../errors/options-object.js';
import { type Decider, type DeciderEvent, decideEvents } from './decider.js';
import { isConcurrencyError } from './errors.js';
import { encodeJson, JsonEncodingProblem } from './event-encoding.js';
import { pauseAfterLostRace } from './lost-race-pause.js';
import { SnapshotNotSerializableError } from './snapshot-errors.js';
import type { EventStore } from './store.js';
import type {
  AppendOptions,
  AppendResult,
  EventData,
  PendingEvent,
  ReadStreamOptions,
  RecordedEvent,
} from './types.js';

/** When {@link CommandHandler} saves snapshots. */
export interface CommandHandlerSnapshotOptions {
  /** Save a snapshot whenever a command takes the stream past a multiple of this many events. */
  readonly every: number;
  /**
   * Version of the state's shape. Bump it whenever the state type or `evolve` changes: snapshots of
   * another schema version are ignored and the state is rebuilt from the events.
   */
  readonly schemaVersion: number;
  /**
   * Turns the state into what is stored: a value that survives a JSON round trip. Give it with
   * `deserialize` when the state holds a `Map`, a `Date`, class instances… Each snapshot is checked
   * before it is saved: `deserialize` of the stored JSON must give a state deeply equal to the one
   * saved.
   * @default the state itself, which must then survive a JSON round trip unchanged
   */
  readonly serialize?: (state: never) => unknown;
  /** Rebuilds the state from what `serialize` stored (after a JSON round trip). @default the stored value itself */
  readonly deserialize?: (stored: unknown) => unknown;
}

/** Options of {@link CommandHandler}. */
export interface CommandHandlerOptions {
  /**
   * How many times a command is loaded and decided again after its append lost a race
   * (`ConcurrencyError`) before that error is rethrown. Under contention each retry loses only to an
   * append that landed meanwhile, so `n` concurrent writers of one stream need at most `n - 1`.
   * @default 3
   */
  readonly maxRetries?: number;
  /**
   * Saves the state every `every` events so that loading reads only the events after it. Backends
   * store it as JSON, so the state must survive a JSON round trip unchanged (plain objects, arrays,
   * strings, finite numbers, booleans, null; no `Date`, `Map`, `bigint`, class instances or
   * `undefined` properties), or `serialize`/`deserialize` must convert it. A state that would not
   * come back deeply equal is not saved: `onSnapshotError` gets a `SnapshotNotSerializableError`.
   * @default no snapshots: every load folds the whole stream
   */
  readonly snapshots?: CommandHandlerSnapshotOptions;
  /**
   * Called when saving a snapshot fails, when a state cannot be stored as one
   * (`SnapshotNotSerializableError`), and when `deserialize` throws on a stored one (which is then
   * ignored). The command still succeeds, since its events are stored, and loads simply read more
   * events. Whatever this hook throws is ignored.
   * @default the error is dropped
   */
  readonly onSnapshotError?: (error: unknown, streamId: string) => void;
}

const COMMAND_HANDLER_OPTION_NAMES = ['maxRetries', 'snapshots', 'onSnapshotError'];
const SNAPSHOT_OPTION_NAMES = ['every', 'schemaVersion', 'serialize', 'deserialize'];
const HANDLE_OPTION_NAMES = ['metadata', 'signal'];
const HANDLE_IN_OPTION_NAMES = ['metadata'];

/** Defaults of {@link CommandHandlerOptions}. */
export const DEFAULT_COMMAND_HANDLER_OPTIONS = Object.freeze({ maxRetries: 3 });

/** Options of one {@link CommandHandler.handle} call. */
export interface HandleOptions {
  /** Added to the metadata of every event appended (with the ambient correlation and causation ids). */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** Stops retrying: checked before each attempt. The append in flight, if any, is not undone. */
  readonly signal?: AbortSignal;
}

/** The state of a stream as {@link CommandHandler.load} rebuilt it. */
export interface LoadResult<S> {
  readonly state: S;
  /** Version of the last event folded into `state`; -1 when the stream does not exist. */
  readonly version: number;
}

/** What {@link CommandHandler.handle} did. */
export interface CommandResult<S> {
  /** The state after the appended events. */
  readonly state: S;
  /** The events appended, as read back from the store; empty when the command decided nothing. */
  readonly events: RecordedEvent[];
  /** Version of the stream's last event (-1 when there is no stream): the `expectedVersion` of a next append. */
  readonly nextExpectedVersion: number;
}

/**
 * Where {@link CommandHandler.handleIn} appends: a unit of work of an outbox (`outbox.unitOfWork`),
 * whose transaction also carries the messages the command publishes.
 */
export interface EventAppender {
  append(
    streamId: string,
    events: readonly EventData[],
    options?: AppendOptions,
  ): Promise<AppendResult & { readonly events: readonly PendingEvent[] }>;
  /**
   * Reads a stream in the same transaction (a unit of work's `readStream`): `handleIn` loads through
   * it, so that it needs no second database connection. @default the store's `readStream`
   */
  readStream?(streamId: string, options?: ReadStreamOptions): Promise<RecordedEvent[]>;
}

/** What {@link CommandHandler.handleIn} did, inside a transaction not yet committed. */
export interface PendingCommandResult<S> {
  /** The state after the decided events. */
  readonly state: S;
  /** The events appended in the transaction (positions and times are set at commit); empty when the command decided nothing. */
  readonly events: readonly PendingEvent[];
  /** Version of the stream's last event (-1 when there is no stream). */
  readonly nextExpectedVersion: number;
}

/**
 * Runs a {@link Decider} against an {@link EventStore}: loads a stream's state (from the latest
 * snapshot, if configured, and the events after it), decides, and appends the decided events only
 * if nobody appended in between. When someone did, it reloads and decides again, up to `maxRetries`
 * times. Domain errors thrown by `decide` propagate unchanged and nothing is appended.
 *
 * `evolve` receives `{ type, data }` rebuilt from each stored event, so what it sees has been through
 * JSON: an event decided without `data` comes back with `data: null`, and a `Date` as a string. The
 * state returned by `handle` is folded from the stored events too, so it equals what `load` returns.
 *
 * @example
 * const orders = new CommandHandler(store, orderDecider, { snapshots: { every: 50, schemaVersion: 1 } });
 * const { state, nextExpectedVersion } = await orders.handle('order-42', { type: 'Confirm' });
 */
export class CommandHandler<C, E extends DeciderEvent, S> {
  readonly #store: EventStore;
  readonly #decider: Decider<C, E, S>;
  readonly #maxRetries: number;
  readonly #snapshots: CommandHandlerSnapshotOptions | undefined;
  readonly #onSnapshotError: ((error: unknown, streamId: string) => void) | undefined;

  constructor(store: EventStore, decider: Decider<C, E, S>, options: CommandHandlerOptions = {}) {
    if (
      typeof decider?.initialState !== 'function' ||
      typeof decider.evolve !== 'function' ||
      typeof decider.decide !== 'function'
    ) {
      throw new InvalidOptionsError('a decider needs the functions initialState, evolve and decide');
    }
    const {
      maxRetries = DEFAULT_COMMAND_HANDLER_OPTIONS.maxRetries,
      snapshots,
      onSnapshotError,
    } = knownOptions('CommandHandler', options, COMMAND_HANDLER_OPTION_NAMES);
    if (!Number.isInteger(maxRetries) || maxRetries < 0) {
      throw new InvalidOptionsError(
        `maxRetries must be a non-negative integer, not ${describeValue(maxRetries)}`,
      );
    }
    if (snapshots !== undefined) {
      checkOptions('CommandHandler snapshots', snapshots, SNAPSHOT_OPTION_NAMES);
      if (!Number.isInteger(snapshots.every) || snapshots.every < 1) {
        throw new InvalidOptionsError(
          `snapshots.every must be a positive integer, not ${describeValue(snapshots.every)}`,
        );
      }
      if (
        !Number.isInteger(snapshots.schemaVersion) ||
        snapshots.schemaVersion < 0 ||
        snapshots.schemaVersion > 2_147_483_647
      ) {
        throw new InvalidOptionsError(
          `snapshots.schemaVersion must be an integer from 0 to 2147483647, not ${describeValue(snapshots.schemaVersion)}`,
        );
      }
      if ((snapshots.serialize === undefined) !== (snapshots.deserialize === undefined)) {
        throw new InvalidOptionsError(
          'snapshots.serialize and snapshots.deserialize go together: give both or neither',
        );
      }
      for (const key of ['serialize', 'deserialize'] as const) {
        if (snapshots[key] !== undefined && typeof snapshots[key] !== 'function') {
          throw new InvalidOptionsError(`snapshots.${key} must be a function`);
        }
      }
    }
    if (onSnapshotError !== undefined && typeof onSnapshotError !== 'function') {
      throw new InvalidOptionsError('onSnapshotError must be a function');
    }
    this.#store = store;
    this.#decider = decider;
    this.#maxRetries = maxRetries;
    this.#snapshots = snapshots === undefined ? undefined : { ...snapshots };
    this.#onSnapshotError = onSnapshotError;
  }

  /**
   * The current state of a stream: the latest snapshot of the configured schema version (if
   * snapshots are on), then every event after it, folded with `evolve`.
   */
  async load(streamId: string): Promise<LoadResult<S>> {
    return this.#load(streamId, undefined);
  }

  /** {@link load}, reading the events through `read` when given (a unit of work's transaction). */
  async #load(
    streamId: string,
    read: ((streamId: string, options: ReadStreamOptions) => Promise<RecordedEvent[]>) | undefined,
  ): Promise<LoadResult<S>> {
    let start: LoadResult<S> | undefined;
    // Through a transaction, snapshots (read through the store, on another connection) are skipped.
    if (this.#snapshots !== undefined && read === undefined) {
      const snapshot = await this.#store.loadSnapshot<unknown>(streamId);
      if (
        snapshot !== undefined &&
        snapshot.schemaVersion === this.#snapshots.schemaVersion &&
        Number.isInteger(snapshot.version) &&
        snapshot.version >= 0
      ) {
        const { deserialize } = this.#snapshots;
        if (deserialize === undefined) start = { state: snapshot.state as S, version: snapshot.version };
        else {
          try {
            start = { state: deserialize(snapshot.state) as S, version: snapshot.version };
          } catch (error) {
            // An unreadable snapshot only costs reading the whole stream.
            this.#reportSnapshotError(error, streamId);
          }
        }
      }
    }
    start ??= { state: this.#decider.initialState(), version: -1 };
    const from = { fromVersion: start.version + 1 };
    const events = await (read === undefined ? this.#store.readStream(streamId, from) : read(streamId, from));
    return this.#fold(start.state, start.version, events);
  }

  /**
   * Loads the stream, decides `command`, and appends the decided events expecting the version it
   * loaded; on a `ConcurrencyError` it starts over after a short random pause (up to 5 ms, doubling,
   * at most 100 ms), up to `maxRetries` times, then rethrows the last one. A command that decides nothing appends nothing and returns the current state. After an
   * append that takes the stream past a multiple of `snapshots.every`, it saves a snapshot.
   */
  async handle(streamId: string, command: C, options: HandleOptions = {}): Promise<CommandResult<S>> {
    checkOptions('CommandHandler.handle', options, HANDLE_OPTION_NAMES);
    for (let attempt = 0; ; attempt++) {
      options.signal?.throwIfAborted();
      const loaded = await this.load(streamId);
      const decided = decideEvents(this.#decider, command, loaded.state);
      if (decided.length === 0) {
        return { state: loaded.state, events: [], nextExpectedVersion: loaded.version };
      }
      let nextExpectedVersion: number;
      try {
        ({ nextExpectedVersion } = await this.#store.append(
          streamId,
          decided.map((event) => toEventData(event, options.metadata)),
          { expectedVersion: loaded.version === -1 ? 'no_stream' : loaded.version },
        ));
      } catch (error) {
        if (!isConcurrencyError(error) || attempt >= this.#maxRetries) throw error;
        await pauseAfterLostRace(attempt);
        continue;
      }
      // Read back rather than rebuild: positions, ids, metadata and time are the store's to say.
      const events = await this.#store.readStream(streamId, {
        fromVersion: nextExpectedVersion - decided.length + 1,
        limit: decided.length,
      });
      const { state } = this.#fold(loaded.state, loaded.version, events);
      await this.#maybeSnapshot(streamId, loaded.version, nextExpectedVersion, state);
      return { state, events, nextExpectedVersion };
    }
  }

  /**
   * Decides `command` against the stream's committed state and appends the decided events through
   * `work`, a unit of work (`outbox.unitOfWork(work => orders.handleIn(work, id, command))`), so
   * that the events commit together with what else the unit of work writes and publishes. A race
   * lost to another writer rejects with `ConcurrencyError` at once (no retry here: the transaction
   * is the caller's, and `outbox.unitOfWork` runs the whole unit again). When `work` can read
   * (`work.readStream`, as a unit of work can), the stream is loaded in its transaction, without a
   * second database connection, and snapshots are neither read nor saved on this path.
   *
   * @example
   * await outbox.unitOfWork(async (work) => {
   *   const { state } = await orders.handleIn(work, `order-${id}`, { type: 'Place', items });
   *   await work.publish('order.placed', { orderId: id, total: state.total }, { key: id });
   * });
   */
  async handleIn(
    work: EventAppender,
    streamId: string,
    command: C,
    options: Pick<HandleOptions, 'metadata'> = {},
  ): Promise<PendingCommandResult<S>> {
    checkOptions('CommandHandler.handleIn', options, HANDLE_IN_OPTION_NAMES);
    const loaded = await this.#load(streamId, work.readStream?.bind(work));
    const decided = decideEvents(this.#decider, command, loaded.state);
    if (decided.length === 0) {
      return { state: loaded.state, events: [], nextExpectedVersion: loaded.version };
    }
    const appended = await work.append(
      streamId,
      decided.map((event) => toEventData(event, options.metadata)),
      { expectedVersion: loaded.version === -1 ? 'no_stream' : loaded.version },
    );
    let state = loaded.state;
    // Folded from the events as stored (their JSON round trip), as handle() folds what it reads back.
    for (const event of appended.events) {
      state = this.#decider.evolve(state, { type: event.type, data: event.data } as unknown as E);
    }
    return { state, events: appended.events, nextExpectedVersion: appended.nextExpectedVersion };
  }

  #fold(state: S, version: number, events: readonly RecordedEvent[]): LoadResult<S> {
    let current = state;
    let last = version;
    for (const event of events) {
      current = this.#decider.evolve(current, { type: event.type, data: event.data } as unknown as E);
      last = event.version;
    }
    return { state: current, version: last };
  }

  async #maybeSnapshot(streamId: string, oldVersion: number, newVersion: number, state: S): Promise<void> {
    const policy = this.#snapshots;
    if (policy === undefined) return;
    if (Math.floor((newVersion + 1) / policy.every) <= Math.floor((oldVersion + 1) / policy.every)) return;
    try {
      const stored = storable(policy, streamId, newVersion, state);
      await this.#store.saveSnapshot<unknown>({
        streamId,
        version: newVersion,
        schemaVersion: policy.schemaVersion,
        state: stored,
      });
    } catch (error) {
      this.#reportSnapshotError(error, streamId);
    }
  }

  #reportSnapshotError(error: unknown, streamId: string): void {
    try {
      this.#onSnapshotError?.(error, streamId);
    } catch {
      // The events are stored; a failing hook must not turn the command into a failure.
    }
  }
}

/**
 * What to store for `state`, after checking that loading it gives back a deeply equal state: the
 * backends keep JSON, and a snapshot that comes back different (a `Map` as `{}`, a `Date` as a
 * string) would poison every later load of the stream.
 */
function storable(
  policy: CommandHandlerSnapshotOptions,
  streamId: string,
  version: number,
  state: unknown,
): unknown {
  let stored: unknown;
  let loaded: unknown;
  try {
    stored = policy.serialize === undefined ? state : (policy.serialize as (s: unknown) => unknown)(state);
    // As the store encodes it: what no backend stores (a lone surrogate, NUL, nesting past the
    // limit) is this error too, not the store's INVALID_EVENT.
    const decoded = encodeJson(stored);
    if (decoded instanceof JsonEncodingProblem)
      throw new TypeError(`the state ${decoded.message}`, { cause: decoded.cause });
    loaded = policy.deserialize === undefined ? decoded : policy.deserialize(decoded);
  } catch (error) {
    throw new SnapshotNotSerializableError(
      streamId,
      version,
      `${policy.serialize === undefined ? 'JSON' : 'serialize, JSON and deserialize'} failed: ${describeThrown(error).message}`,
      error,
    );
  }
  if (!isDeepStrictEqual(loaded, state)) {
    throw new SnapshotNotSerializableError(
      streamId,
      version,
      policy.serialize === undefined
        ? 'it does not survive a JSON round trip unchanged (a Map, Set, Date, class instance or undefined property?); give snapshots.serialize and deserialize'
        : 'deserialize(JSON round trip of serialize(state)) is not deeply equal to the state',
    );
  }
  return stored;
}

function toEventData(
  event: DeciderEvent,
  metadata: Readonly<Record<string, unknown>> | undefined,
): EventData {
  return metadata === undefined
    ? { type: event.type, data: event.data }
    : { type: event.type, data: event.data, metadata };
}
