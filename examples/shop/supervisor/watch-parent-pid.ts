import { runOnWithoutOutput } from '../output-errors.js';

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
    runOnWithoutOutput();
    onParentGone();
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * When npm started this process (`npm start`, `npm run …`): calls `stop` once that npm is gone.
 * npm relays SIGTERM and SIGINT (the scripts `exec` node), but a SIGKILLed npm relays nothing, nor
 * does a shell left between npm and node (yarn, pnpm, a script without `exec`). Started by hand,
 * the process runs on after its shell.
 */
export function stopWhenNpmIsGone(stop: (reason: string) => void, parentPid: number): void {
  if (process.env.npm_lifecycle_event === undefined) return;
  watchParentPid(() => stop('the npm process that started the shop is gone'), { parentPid });
}
