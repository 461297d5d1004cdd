import type { AppendResult } from './types.js';

/** What {@link OwnAppends.record} returns: the appends begun since, until it stops. */
export interface AppendRecording {
  /**
   * Stops recording; resolves, once every append recorded has settled, the lowest position of an
   * event they appended (undefined when none was recorded, or none succeeded).
   */
  lowest(): Promise<bigint | undefined>;
  /** Stops recording, nothing awaited. */
  stop(): void;
}

/**
 * The appends made through one store, told to the `from: 'end'` subscriptions that are fixing where
 * they start. PostgreSQL fixes the end from a snapshot the server takes a round trip after
 * subscribe(): an append sent right after it, a single statement, can commit first and be taken as
 * existing. A subscription caps its start below the appends made through its store from its
 * subscribe() until its end was fixed (memory and SQLite read the end within subscribe(), so the cap
 * never lowers theirs).
 */
export class OwnAppends {
  readonly #recordings = new Set<Promise<bigint | undefined>[]>();

  /** An append of `count` events begun now through the store; `result` is its outcome. */
  begun(result: Promise<AppendResult>, count: number): void {
    if (this.#recordings.size === 0) return;
    // Positions of one append follow each other: its first is `count - 1` below its last.
    const first = result.then(
      (r) => r.position - BigInt(count - 1),
      () => undefined,
    );
    for (const recording of this.#recordings) recording.push(first);
  }

  /** Records the appends begun from now on. */
  record(): AppendRecording {
    const begun: Promise<bigint | undefined>[] = [];
    this.#recordings.add(begun);
    const stop = () => {
      this.#recordings.delete(begun);
    };
    return {
      stop,
      lowest: async () => {
        stop();
        let lowest: bigint | undefined;
        for (const first of await Promise.all(begun)) {
          if (first !== undefined && (lowest === undefined || first < lowest)) lowest = first;
        }
        return lowest;
      },
    };
  }
}
