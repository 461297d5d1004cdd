import { InvalidOptionsError } from '../errors/ferry-error.js';
import { type Decider, type DeciderEvent, decideEvents } from './decider.js';
import { isConcurrencyError } from './errors.js';
import type { EventStore } from './store.js';
import type { EventData, RecordedEvent } from './types.js';

/** When {@link CommandHandler} saves snapshots. */
export interface CommandHandlerSnapshotOptions {
  /** Save a snapshot whenever a command takes the stream past a multiple of this many events. */
  readonly every: number;
  /**
   * Version of the state's shape. Bump it whenever the state type or `evolve` changes: snapshots of
   * another schema version are ignored and the state is rebuilt from the events.
   */
  readonly schemaVersion: number;
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
   * Saves the state every `every` events so that loading reads only the events after it. The state
   * must then survive a JSON round trip (plain objects, arrays, strings, finite numbers, booleans,
   * null; no `Date`, `Map`, `bigint` or class instances), as that is how backends store it.
   * @default no snapshots: every load folds the whole stream
   */
  readonly snapshots?: CommandHandlerSnapshotOptions;
  /**
   * Called when saving a snapshot fails. The command still succeeds, since its events are stored,
   * and the next load simply reads more events. Whatever this hook throws is ignored.
   * @default the error is dropped
   */
  readonly onSnapshotError?: (error: unknown, streamId: string) => void;
}

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
    const { maxRetries = DEFAULT_COMMAND_HANDLER_OPTIONS.maxRetries, snapshots, onSnapshotError } = options;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) {
      throw new InvalidOptionsError(`maxRetries must be a non-negative integer, not ${String(maxRetries)}`);
    }
    if (snapshots !== undefined) {
      if (!Number.isInteger(snapshots.every) || snapshots.every < 1) {
        throw new InvalidOptionsError(
          `snapshots.every must be a positive integer, not ${String(snapshots.every)}`,
        );
      }
      if (!Number.isInteger(snapshots.schemaVersion) || snapshots.schemaVersion < 0) {
        throw new InvalidOptionsError(
          `snapshots.schemaVersion must be a non-negative integer, not ${String(snapshots.schemaVersion)}`,
        );
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
    let start: LoadResult<S> | undefined;
    if (this.#snapshots !== undefined) {
      const snapshot = await this.#store.loadSnapshot<S>(streamId);
      if (
        snapshot !== undefined &&
        snapshot.schemaVersion === this.#snapshots.schemaVersion &&
        Number.isInteger(snapshot.version) &&
        snapshot.version >= 0
      ) {
        start = { state: snapshot.state, version: snapshot.version };
      }
    }
    start ??= { state: this.#decider.initialState(), version: -1 };
    const events = await this.#store.readStream(streamId, { fromVersion: start.version + 1 });
    return this.#fold(start.state, start.version, events);
  }

  /**
   * Loads the stream, decides `command`, and appends the decided events expecting the version it
   * loaded; on a `ConcurrencyError` it starts over after a short random pause (up to 5 ms, doubling,
   * at most 100 ms), up to `maxRetries` times, then rethrows the last one. A command that decides nothing appends nothing and returns the current state. After an
   * append that takes the stream past a multiple of `snapshots.every`, it saves a snapshot.
   */
  async handle(streamId: string, command: C, options: HandleOptions = {}): Promise<CommandResult<S>> {
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
        // Full jitter, so that writers who lost the same race do not collide again in step.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(100, 5 * 2 ** attempt)));
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
      await this.#store.saveSnapshot<S>({
        streamId,
        version: newVersion,
        schemaVersion: policy.schemaVersion,
        state,
      });
    } catch (error) {
      try {
        this.#onSnapshotError?.(error, streamId);
      } catch {
        // The events are stored; a failing hook must not turn the command into a failure.
      }
    }
  }
}

function toEventData(
  event: DeciderEvent,
  metadata: Readonly<Record<string, unknown>> | undefined,
): EventData {
  return metadata === undefined
    ? { type: event.type, data: event.data }
    : { type: event.type, data: event.data, metadata };
}
