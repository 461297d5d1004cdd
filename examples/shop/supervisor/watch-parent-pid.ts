/** Options of {@link watchParentPid}. */
export interface WatchParentPidOptions {
  /** How often the parent's pid is read. @default 500 */
  readonly intervalMs?: number;
  /**
   * The parent to outlive. Read `process.ppid` as the process starts and pass it when the watch
   * begins later (after a slow start), so that a parent gone meanwhile is noticed too.
   * @default process.ppid at the call
   */
  readonly parentPid?: number;
}

/** Defaults of {@link WatchParentPidOptions}. */
export const DEFAULT_WATCH_PARENT_PID = Object.freeze({ intervalMs: 500 });

const swallow = (): void => {};

/**
 * Calls `onParentGone` once when the process that started this one has exited: its pid is no longer
 * the parent's (an orphan is adopted by init or a subreaper). For processes whose parent opened no
 * IPC channel, which {@link exitWithParent} needs: `npm start` kills the shell it ran the script in
 * and exits, and the shop, adopted, would otherwise run on holding its port.
 *
 * The timer is unreferenced: watching never keeps the process alive. Once the parent is gone,
 * write errors on stdout and stderr are swallowed (whoever read them may be gone too). Returns a
 * function that stops watching.
 *
 * @example
 * watchParentPid(() => shop.close().then(() => process.exit(0)));
 */
export function watchParentPid(onParentGone: () => unknown, options: WatchParentPidOptions = {}): () => void {
  const { intervalMs } = { ...DEFAULT_WATCH_PARENT_PID, ...options };
  const parent = options.parentPid ?? process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    process.stdout.on('error', swallow);
    process.stderr.on('error', swallow);
    onParentGone();
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
