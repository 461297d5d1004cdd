import { stopWhenNpmIsGone } from './supervisor/watch-parent-pid.js';

/** Options of {@link stopOnSignals}. */
export interface StopOnSignalsOptions<T> {
  /** Closes what was started; the process then exits 0, or 1 when it rejects. */
  readonly close: (started: T) => Promise<unknown>;
  /** Says that a stop began (`SIGTERM`, `SIGINT`, or the npm that started the program is gone). */
  readonly onStop: (reason: string) => void;
  /** Hears why closing failed, before the exit with code 1. */
  readonly onCloseError?: (error: unknown) => void;
  /** The parent to outlive when npm started the program: `process.ppid` read as it starts. */
  readonly parentPid: number;
}

/** What {@link stopOnSignals} returns. */
export interface SignalStop<T> {
  /** Whether a stop began. */
  readonly stopping: () => boolean;
  /**
   * Awaits the start and returns what it started, or `undefined` when a stop began meanwhile: what
   * was started is then closed and the process exits.
   */
  readonly started: (start: Promise<T>) => Promise<T | undefined>;
}

/**
 * Stops a program once on SIGINT, SIGTERM, or when the npm that started it is gone — also during
 * its start. Install it before the start: a signal sent while the program starts (a test, a
 * supervisor, a quick Ctrl-C) then closes what it started once started, instead of meeting the
 * default action (killed by the signal, files and children left behind).
 *
 * @example
 * const lifecycle = stopOnSignals({ close: (shop) => shop.close(), onStop: log.info, parentPid });
 * const shop = await lifecycle.started(startEmbeddedShop(options));
 * if (shop === undefined) return;
 */
export function stopOnSignals<T>(options: StopOnSignalsOptions<T>): SignalStop<T> {
  let started: T | undefined;
  let stopping = false;
  const close = (what: T): Promise<void> =>
    options.close(what).then(
      () => process.exit(0),
      (error: unknown) => {
        options.onCloseError?.(error);
        process.exit(1);
      },
    );
  const stop = (reason: string): void => {
    if (stopping) return;
    stopping = true;
    options.onStop(reason);
    if (started !== undefined) void close(started);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  stopWhenNpmIsGone(stop, options.parentPid);
  return {
    stopping: () => stopping,
    started: async (start) => {
      started = await start;
      if (!stopping) return started;
      await close(started);
      return undefined;
    },
  };
}
