import { type ChildProcess, spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import type { Logger } from 'ferry';
import { prefixLines } from './prefix-lines.js';
import type { RestartBackoff } from './restart-backoff.js';

/** What one instance runs, resolved by the supervisor: its env is computed once and kept across restarts. */
export interface InstancePlan {
  readonly name: string;
  readonly instance: number;
  /** `name#instance`, or `name` alone when the process has one instance. */
  readonly label: string;
  /** Prefix of each output line, the label padded so that all prefixes line up. */
  readonly prefix: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string | undefined;
  readonly ipc: boolean;
}

/** Where an instance writes and reports, and how it paces restarts. */
export interface InstanceContext {
  readonly logger: Logger;
  readonly backoff: RestartBackoff;
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** Exit codes after which the instance is not started again. */
  readonly fatalExitCodes: ReadonlySet<number>;
  /** Told of an exit with one of `fatalExitCodes` (outside a stop): the supervisor stops the rest. */
  readonly onFatalExit: (instance: SupervisedInstance, code: number) => void;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

function how(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal !== null) return `was killed by ${signal}`;
  return code === null ? 'failed to start' : `exited with code ${code}`;
}

/**
 * One instance of one process under supervision: runs it, starts it again after each exit (after
 * the backoff), and stops it on request. Only the supervisor creates these.
 */
export class SupervisedInstance {
  #child: ChildProcess | undefined;
  #startedAt = 0;
  #restarts = 0;
  /** Exits since the instance last stayed up `resetAfterMs`: picks the next backoff delay. */
  #streak = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  #exited: (() => void) | undefined;

  constructor(
    readonly plan: InstancePlan,
    private readonly context: InstanceContext,
  ) {}

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  get restarts(): number {
    return this.#restarts;
  }

  start(): void {
    const { plan, context } = this;
    this.#startedAt = Date.now();
    let child: ChildProcess;
    try {
      child = spawn(plan.command, plan.args, {
        cwd: plan.cwd,
        env: plan.env,
        // Same process group as the supervisor (detached: false): a terminal's Ctrl-C, or a kill of
        // the whole group, reaches every child too. A SIGKILL of the supervisor alone does not;
        // that is what the IPC channel and exitWithParent() are for.
        detached: false,
        stdio: plan.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
      });
    } catch (error) {
      context.logger.error(`${plan.label} could not be spawned: ${String(error)}`, { process: plan.label });
      this.#ended(null, null);
      return;
    }
    this.#child = child;
    if (child.stdout !== null) prefixLines(child.stdout, context.stdout, plan.prefix);
    if (child.stderr !== null) prefixLines(child.stderr, context.stderr, plan.prefix);
    let ended = false;
    const end = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (ended) return;
      ended = true;
      this.#ended(code, signal);
    };
    child.once('exit', end);
    // Spawn failures (no such command, no such cwd) emit 'error' and never 'exit'.
    child.on('error', (error) => {
      if (child.pid !== undefined) return; // a failed kill(): the child runs on, its exit will come
      context.logger.error(`${plan.label} could not be started: ${error.message}`, { process: plan.label });
      end(null, null);
    });
    if (child.pid !== undefined) {
      context.logger.info(`${plan.label} started (pid ${child.pid})`, {
        process: plan.label,
        pid: child.pid,
      });
    }
  }

  #ended(code: number | null, signal: NodeJS.Signals | null): void {
    const { plan, context } = this;
    const pid = this.#child?.pid;
    const uptimeMs = Date.now() - this.#startedAt;
    this.#child = undefined;
    const fields = { process: plan.label, pid, code, signal, uptimeMs };
    const who = pid === undefined ? plan.label : `${plan.label} (pid ${pid})`;
    if (this.#stopping) {
      context.logger.info(`${who} ${how(code, signal)} on stop`, fields);
      this.#exited?.();
      return;
    }
    if (code !== null && context.fatalExitCodes.has(code)) {
      context.logger.error(
        `${who} ${how(code, signal)} after ${seconds(uptimeMs)}, which says starting it again cannot help: ` +
          'not restarted; stopping every process',
        fields,
      );
      context.onFatalExit(this, code);
      return;
    }
    this.#streak = uptimeMs >= context.backoff.resetAfterMs ? 1 : this.#streak + 1;
    const restartInMs = context.backoff.delayMs(this.#streak);
    context.logger.warn(
      `${who} ${how(code, signal)} after ${seconds(uptimeMs)}; ` +
        `restart ${this.#restarts + 1} in ${restartInMs} ms`,
      { ...fields, restartInMs, restarts: this.#restarts },
    );
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.#restarts += 1;
      this.start();
    }, restartInMs);
  }

  /** Sends `signal` to the running child; false when none is running (between restarts, or stopped). */
  kill(signal: NodeJS.Signals): boolean {
    return this.#child?.kill(signal) ?? false;
  }

  /**
   * No restart from now on; SIGTERM to the child, SIGKILL if it is still there after `timeoutMs`.
   * Resolves once it has exited. Called once, by the supervisor's stop().
   */
  stop(timeoutMs: number): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const child = this.#child;
    if (child === undefined) return Promise.resolve();
    const { plan, context } = this;
    return new Promise<void>((resolve) => {
      const killer = setTimeout(() => {
        context.logger.warn(
          `${plan.label} (pid ${child.pid}) still running ${timeoutMs} ms after SIGTERM; sending SIGKILL`,
          { process: plan.label, pid: child.pid },
        );
        child.kill('SIGKILL');
      }, timeoutMs);
      this.#exited = () => {
        clearTimeout(killer);
        resolve();
      };
      child.kill('SIGTERM');
    });
  }
}
