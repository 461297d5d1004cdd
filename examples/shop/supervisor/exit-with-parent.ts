import { runOnWithoutOutput } from '../output-errors.js';

/** Options of {@link exitWithParent}. */
export interface ExitWithParentOptions {
  /**
   * Runs once when the parent is gone, before the process exits: close servers, flush what can be
   * flushed. Its output goes nowhere (the parent read the pipes), so write errors are swallowed.
   */
  readonly onParentGone?: () => unknown;
  /** Longest wait for `onParentGone` before exiting anyway. @default 5000 */
  readonly graceMs?: number;
  /** Exit code once the parent is gone. @default 1 */
  readonly exitCode?: number;
}

/** Defaults of {@link ExitWithParentOptions}. */
export const DEFAULT_EXIT_WITH_PARENT = Object.freeze({ graceMs: 5000, exitCode: 1 });

/**
 * Call once in a supervised process to exit when the supervisor dies, even by SIGKILL, which it
 * cannot forward. The supervisor opens an IPC channel to every child it spawns; the kernel closes
 * that channel when the supervisor dies, however it dies, and Node then emits `disconnect` here.
 * Without this, a child of a SIGKILLed supervisor is adopted by init and runs on, holding its port.
 *
 * The channel is unreferenced, so watching it never keeps the process alive on its own. Returns
 * whether there was a channel to watch (false when not started by the supervisor, e.g. by hand).
 *
 * @example
 * exitWithParent({ onParentGone: () => app.close() });
 */
export function exitWithParent(options: ExitWithParentOptions = {}): boolean {
  const channel = process.channel;
  if (channel === undefined || !process.connected) return false;
  const { graceMs, exitCode } = { ...DEFAULT_EXIT_WITH_PARENT, ...options };
  process.once('disconnect', () => {
    runOnWithoutOutput();
    const exit = (): void => process.exit(exitCode);
    setTimeout(exit, graceMs).unref();
    Promise.resolve()
      .then(() => options.onParentGone?.())
      .then(exit, exit);
  });
  // A 'disconnect' listener references the channel; undo that so the process can still end by itself.
  channel.unref();
  return true;
}
