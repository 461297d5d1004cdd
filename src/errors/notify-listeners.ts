/**
 * Calls each of `listeners` with `payload`, in order. A listener that throws changes nothing for
 * the caller nor for the listeners after it, and its error is not hidden: it is thrown again on its
 * own, after the current turn (an uncaught exception), as Node's diagnostics channels do.
 */
export function notifyListeners<T>(listeners: Iterable<(payload: T) => void>, payload: T): void {
  for (const listener of listeners) {
    try {
      listener(payload);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}
