/**
 * Runs tasks one at a time per key, each after the ones asked for before it with the same key, in
 * the order they were asked for; tasks of different keys run side by side. A task that fails does
 * not hold up the next one. Keys whose tasks are all done are forgotten.
 *
 * @example
 * const turns = new KeyedTurns();
 * await Promise.all([turns.run('q', list), turns.run('q', replay)]); // replay starts once list ended
 */
export class KeyedTurns {
  readonly #tails = new Map<string, Promise<void>>();

  /** Calls `task` once every task asked for earlier under `key` has settled; resolves as it does. */
  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key);
    const result = previous === undefined ? start(task) : previous.then(task);
    const tail = result.then(
      () => {},
      () => {},
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}

/** Calls `task` now; a synchronous throw becomes a rejection, as it would after a previous turn. */
function start<T>(task: () => Promise<T>): Promise<T> {
  try {
    return task();
  } catch (error) {
    return Promise.reject(error);
  }
}
