import type { ExpectedVersion, ReadStreamOptions, RecordedEvent } from './types.js';

/** Whether a stream whose last event has version `current` (-1: no stream) satisfies `expected`. */
export function expectedVersionHolds(expected: ExpectedVersion, current: number): boolean {
  switch (expected) {
    case 'any':
      return true;
    case 'no_stream':
      return current === -1;
    case 'stream_exists':
      return current >= 0;
    default:
      return current === expected;
  }
}

/** Applies `readStream` options to a stream's events held in version order (memory backend, tests). */
export function selectStreamEvents<E extends Pick<RecordedEvent, 'version'>>(
  stream: readonly E[],
  options: ReadStreamOptions,
): E[] {
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  if (options.direction === 'backward') {
    const from = Math.min(options.fromVersion ?? stream.length - 1, stream.length - 1);
    const out: E[] = [];
    for (let v = from; v >= 0 && out.length < limit; v--) out.push(stream[v]!);
    return out;
  }
  const from = Math.max(0, options.fromVersion ?? 0);
  return stream.slice(from, from + Math.min(limit, stream.length));
}
