/**
 * Runs `work` with a signal that aborts when `short` (a handler's or a request's) or `long` (a
 * service's own, aborted as it closes) does, and detaches it from both once `work` settles.
 * `AbortSignal.any([short, long])` would do it in one call, but Node 20 keeps an entry on `long` for
 * every signal ever joined to it: one per message, never let go (about 50 bytes each, 50 MB a million).
 */
export async function withLinkedSignal<T>(
  short: AbortSignal,
  long: AbortSignal,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const onShort = (): void => controller.abort(short.reason);
  const onLong = (): void => controller.abort(long.reason);
  if (short.aborted) onShort();
  else if (long.aborted) onLong();
  else {
    short.addEventListener('abort', onShort, { once: true });
    long.addEventListener('abort', onLong, { once: true });
  }
  try {
    return await work(controller.signal);
  } finally {
    short.removeEventListener('abort', onShort);
    long.removeEventListener('abort', onLong);
  }
}
