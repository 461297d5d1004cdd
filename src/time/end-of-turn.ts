/**
 * The end of the event loop's turn (its check phase, after the I/O callbacks of the turn), with the
 * `setImmediate` of the process as it loaded: fake timers a test installs afterwards (`vi.useFakeTimers()`)
 * cannot stop Ferry's own batching, commits and deliveries.
 */
const realSetImmediate = globalThis.setImmediate;

/** Runs `callback` at the end of this turn of the event loop. */
export function atEndOfTurn(callback: () => void): void {
  realSetImmediate(callback);
}

/** Resolves at the end of this turn of the event loop, once every queued promise continuation ran. */
export function endOfTurn(): Promise<void> {
  return new Promise((resolve) => realSetImmediate(resolve));
}
