/** An event to append. */
export interface EventData<T = unknown, K extends string = string> {
  readonly type: K;
  readonly data: T;
  /** Free-form metadata; the ambient correlation and causation ids are added to it. */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** A UUID. Appending an id the stream already holds is a no-op (idempotent append). @default a new UUID v7 */
  readonly id?: string;
}

/** An event as stored. */
export interface RecordedEvent<T = unknown, K extends string = string> {
  readonly streamId: string;
  /** 0-based position of the event in its stream. */
  readonly version: number;
  /**
   * Position in the store's global order. Increasing, not contiguous: compare positions, do not
   * count with them.
   */
  readonly position: bigint;
  readonly id: string;
  readonly type: K;
  readonly data: T;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** RFC 3339 time of the append. */
  readonly time: string;
}

/** An event appended in a transaction not yet committed: its global position and time are not known yet. */
export type PendingEvent<T = unknown, K extends string = string> = Omit<
  RecordedEvent<T, K>,
  'position' | 'time'
>;

/**
 * What the writer believes about the stream: `'any'` (no check), `'no_stream'` (it must not exist),
 * `'stream_exists'`, or the version of the last event the writer saw (a safe integer; -1 means no
 * stream). Anything else, `null` included, is refused with `INVALID_EVENT`.
 */
export type ExpectedVersion = 'any' | 'no_stream' | 'stream_exists' | number;

export interface AppendOptions {
  /** @default 'any' */
  readonly expectedVersion?: ExpectedVersion;
}

export interface AppendResult {
  /** The version of the stream's last event: pass it as `expectedVersion` of the next append. */
  readonly nextExpectedVersion: number;
  /** Global position of the last event appended. */
  readonly position: bigint;
}

export interface ReadStreamOptions {
  /** First version to read (inclusive); with `direction: 'backward'`, the version to start down from. @default 0, or the last version backward */
  readonly fromVersion?: number;
  /** @default no limit */
  readonly limit?: number;
  /** @default 'forward' */
  readonly direction?: 'forward' | 'backward';
}

export interface ReadAllOptions {
  /** First position to read (inclusive), a bigint from 0n to 2^63-1; 0n and 1n are the beginning. @default the beginning */
  readonly fromPosition?: bigint;
  /** Only events of these types. */
  readonly types?: readonly string[];
  /** Events fetched per round trip. @default 500 */
  readonly batchSize?: number;
}

/** An event prepared for a backend: id and metadata filled in, data and metadata serialisable. */
export interface PreparedEvent {
  readonly id: string;
  readonly type: string;
  readonly data: unknown;
  readonly metadata: Readonly<Record<string, unknown>>;
}
