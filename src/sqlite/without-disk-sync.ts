import type Database from 'better-sqlite3';

/** `PRAGMA synchronous` values by number. */
const SYNCHRONOUS = ['OFF', 'NORMAL', 'FULL', 'EXTRA'] as const;

/**
 * A runner of synchronous writes on `db` that commit with `synchronous = NORMAL`, the connection's
 * own setting (read now) put back after each: the commit does not wait for the disk. A crash of the
 * process loses none of it (WAL); a power cut may lose the last of it, and the connection's next
 * commit with FULL syncs the WAL, these frames with it. On a connection at NORMAL or below already,
 * it runs the write as it is. Its statements are prepared once (`db.pragma()` compiles on every call).
 */
export function withoutDiskSync(db: Database.Database): <T>(write: () => T) => T {
  const setting = Number(db.prepare('PRAGMA synchronous').pluck().get());
  if (!(setting > 1)) return (write) => write();
  const lower = db.prepare('PRAGMA synchronous = NORMAL');
  const restore = db.prepare(`PRAGMA synchronous = ${SYNCHRONOUS[setting] ?? setting}`);
  return (write) => {
    lower.run();
    try {
      return write();
    } finally {
      restore.run();
    }
  };
}
