import { processWideMap } from './process-wide.js';

/**
 * Leases given up in this process, by SQLite file: every store of the process opened on a file hears
 * of a release through any of them, so that its standbys claim at once. Other processes have no such
 * channel (SQLite has no notifications): their standbys find the lease free on their next poll.
 */
type LeaseListener = (subscription: string) => void;

/** One list of listeners per file for the whole process, like the write locks. */
const byFile = processWideMap<string, Set<LeaseListener>>('ferry.sqlite.lease-listeners');

/** Calls `listener` when a lease on the file `file` (a write lock's key) is given up in this process. */
export function watchLeaseReleases(file: string, listener: LeaseListener): () => void {
  let listeners = byFile.get(file);
  if (listeners === undefined) {
    listeners = new Set();
    byFile.set(file, listeners);
  }
  listeners.add(listener);
  return () => {
    listeners.delete(listener);
    if (listeners.size === 0 && byFile.get(file) === listeners) byFile.delete(file);
  };
}

/** Tells the listeners of `file` that the lease of `subscription` was given up. */
export function announceLeaseRelease(file: string, subscription: string): void {
  for (const listener of [...(byFile.get(file) ?? [])]) listener(subscription);
}
