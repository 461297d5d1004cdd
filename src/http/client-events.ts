import { notifyListeners } from '../errors/notify-listeners.js';

/**
 * What a {@link ServiceClient} reports; no logging happens unless someone listens. A listener that
 * throws does not change the call; its error is thrown again on its own, an uncaught exception.
 */
export interface ClientEventMap {
  /** An attempt is being sent (one the deadline left no time for is not). */
  attempt: { client: string; method: string; path: string; attempt: number };
  response: {
    client: string;
    method: string;
    path: string;
    attempt: number;
    status: number;
    durationMs: number;
  };
  retry: { client: string; method: string; path: string; attempt: number; delayMs: number; error: unknown };
  breaker: { client: string; breaker: string; from: string; to: string };
  /**
   * The client refused the call, or gave it up, without an answer to report: `CIRCUIT_OPEN`,
   * `BULKHEAD_FULL`, `RETRY_BUDGET_EXHAUSTED`, or `deadline` when it passed before an attempt could
   * be sent (before the call, in the bulkhead queue, or waiting to retry; `error` is then the
   * `TIMEOUT` the call rejects with), or `CLIENT_CLOSED` for a call close() ended while it waited
   * (to start, in the bulkhead queue, or to retry). What an attempt that was sent ends with is the
   * call's own failure, never a rejection: an error status (a `response` event), a 2xx body too
   * large or not the JSON it claims (after its `response` event), the attempt's timeout (cut short
   * by the deadline or not), a connection error.
   * A retry refused by the budget (`RETRY_BUDGET_EXHAUSTED`) or by a breaker opened during the call
   * (`CIRCUIT_OPEN`), or not made because its wait would end past the deadline (`deadline`), ends the
   * call with its last attempt's outcome, which `error` then holds.
   */
  rejection: { client: string; method: string; path: string; reason: string; error?: unknown };
}

/** A small typed emitter: a listener set per event, nothing allocated per call when nobody listens. */
export class ClientEvents {
  readonly #listeners: { [K in keyof ClientEventMap]?: Set<(payload: ClientEventMap[K]) => void> } = {};

  on<K extends keyof ClientEventMap>(event: K, listener: (payload: ClientEventMap[K]) => void): () => void {
    let set = this.#listeners[event] as Set<(payload: ClientEventMap[K]) => void> | undefined;
    if (set === undefined) {
      set = new Set();
      (this.#listeners as Record<string, unknown>)[event] = set;
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Whether anyone listens, so that callers build payloads only when they will be read. */
  listens(event: keyof ClientEventMap): boolean {
    const set = this.#listeners[event];
    return set !== undefined && set.size > 0;
  }

  emit<K extends keyof ClientEventMap>(event: K, payload: ClientEventMap[K]): void {
    const set = this.#listeners[event] as Set<(payload: ClientEventMap[K]) => void> | undefined;
    if (set === undefined || set.size === 0) return;
    // An observer's bug must not break the call it observes, nor be hidden.
    notifyListeners(set, payload);
  }
}
