/**
 * Runs `work`, keeping the process alive until it settles. What a caller awaits (a close, a flush)
 * may wait on timers that are unref'd so as not to hold a process up otherwise: without this, a
 * script's `await store.close()` could see the process end first (exit 13, close never resolved).
 */
export async function keepingAlive<T>(work: () => Promise<T>): Promise<T> {
  const keepAlive = setInterval(() => {}, 2 ** 30);
  try {
    return await work();
  } finally {
    clearInterval(keepAlive);
  }
}
