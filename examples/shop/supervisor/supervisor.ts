import type { Writable } from 'node:stream';
import { InvalidOptionsError, type Logger, stderrLogger } from 'ferry';
import { type RestartBackoffOptions, restartBackoff } from './restart-backoff.js';
import { type InstancePlan, SupervisedInstance } from './supervised-instance.js';

/** One program the supervisor keeps running, in `instances` copies. */
export interface ProcessSpec {
  /** Names the process in logs and output prefixes, and in {@link Supervisor.kill}. Unique, no `#`. */
  readonly name: string;
  /** How many copies to run, numbered from 0. An integer >= 1. */
  readonly instances: number;
  /**
   * The executable, e.g. `process.execPath`. For TypeScript, run `process.execPath` with
   * `['--import', 'tsx', …]` rather than the `tsx` command, which puts a process of its own between
   * the supervisor and the service (signals relayed, the IPC channel ending at tsx).
   */
  readonly command: string;
  readonly args: readonly string[];
  /**
   * Variables of one instance (its port, say), laid over the supervisor's own environment; an
   * `undefined` value removes a variable. Called once per instance at start: restarts reuse it.
   */
  readonly env: (instance: number) => Record<string, string | undefined>;
  /** Working directory. @default the supervisor's */
  readonly cwd?: string | undefined;
  /**
   * Open an IPC channel to each instance, which the instance watches with `exitWithParent()` to
   * exit when the supervisor dies. Turn off for programs that are not Node. @default true
   */
  readonly ipc?: boolean | undefined;
}

/** Options of {@link startSupervisor}. */
export interface SupervisorOptions {
  readonly processes: readonly ProcessSpec[];
  /** Where starts (info), exits and restarts (warn) are reported. @default stderrLogger (warn and error only) */
  readonly logger?: Logger | undefined;
  /** Pace of restarts after exits. @default DEFAULT_RESTART_BACKOFF (250 ms doubling to 10 s, jitter, reset after 30 s up) */
  readonly backoff?: RestartBackoffOptions | undefined;
  /** How long stop() waits after SIGTERM before it SIGKILLs what is left. @default 9000 (a whole stop fits in 10 s) */
  readonly stopTimeoutMs?: number | undefined;
  /** Receives the children's stdout, line by line, prefixed. @default process.stdout */
  readonly stdout?: Writable | undefined;
  /** Receives the children's stderr, line by line, prefixed. @default process.stderr */
  readonly stderr?: Writable | undefined;
  /**
   * Exit codes that say starting the program again cannot help (the shop's services exit with 2 on
   * a configuration error): an instance that exits with one is not restarted, and the supervisor
   * stops every other instance, as stop() does; waitForExit() then tells which and why.
   * @default [] (every exit is restarted)
   */
  readonly fatalExitCodes?: readonly number[] | undefined;
}

/** Defaults of {@link SupervisorOptions}. */
export const DEFAULT_SUPERVISOR = Object.freeze({
  stopTimeoutMs: 9000,
  fatalExitCodes: [] as readonly number[],
});

/** How a supervisor ended: stop() was called, or an instance exited with one of `fatalExitCodes`. */
export type SupervisorExit =
  | { readonly reason: 'stopped' }
  | { readonly reason: 'fatal-exit'; readonly label: string; readonly code: number };

/** One instance as the supervisor sees it now. */
export interface InstanceStatus {
  readonly name: string;
  readonly instance: number;
  /** `name#instance`, or `name` alone for a process with one instance. */
  readonly label: string;
  /** The running child's pid; undefined between an exit and its restart, and after stop. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** How many times this instance was started again after an exit. */
  readonly restarts: number;
}

/** A running supervisor: see {@link startSupervisor}. */
export interface Supervisor {
  /** Every instance, in the order of `processes`, then by instance number. */
  status(): InstanceStatus[];
  /**
   * SIGTERM to every child at once, and no restart from then on; a child still alive after
   * `stopTimeoutMs` gets SIGKILL. Resolves once every child has exited. Idempotent: later calls
   * return the same promise.
   */
  stop(): Promise<void>;
  /**
   * Resolves once every child has exited for good: after stop(), or after an instance exited with
   * one of `fatalExitCodes` and the others were stopped. Without fatal exit codes, the supervisor
   * never ends on its own.
   */
  waitForExit(): Promise<SupervisorExit>;
  /**
   * Sends `signal` to one instance, as a crash or an operator would (chaos tests SIGKILL one and
   * expect it back). False when that instance has no running child at the moment. Throws
   * InvalidOptionsError for an unknown name or instance.
   */
  kill(name: string, instance: number, signal?: NodeJS.Signals): boolean;
}

function plans(processes: readonly ProcessSpec[]): InstancePlan[] {
  const names = new Set<string>();
  for (const spec of processes) {
    if (spec.name === '' || spec.name.includes('#') || names.has(spec.name)) {
      throw new InvalidOptionsError(
        `supervisor process names must be unique, non-empty, without '#': ${spec.name}`,
      );
    }
    names.add(spec.name);
    if (!Number.isInteger(spec.instances) || spec.instances < 1) {
      throw new InvalidOptionsError(`${spec.name}: instances must be an integer >= 1, not ${spec.instances}`);
    }
  }
  const label = (spec: ProcessSpec, instance: number): string =>
    spec.instances === 1 ? spec.name : `${spec.name}#${instance}`;
  const width = Math.max(0, ...processes.map((spec) => label(spec, spec.instances - 1).length));
  return processes.flatMap((spec) =>
    Array.from({ length: spec.instances }, (_, instance) => {
      const env: NodeJS.ProcessEnv = { ...process.env };
      for (const [key, value] of Object.entries(spec.env(instance))) {
        if (value === undefined) delete env[key];
        else env[key] = value;
      }
      return {
        name: spec.name,
        instance,
        label: label(spec, instance),
        prefix: `${label(spec, instance).padEnd(width)} | `,
        command: spec.command,
        args: [...spec.args],
        env,
        cwd: spec.cwd,
        ipc: spec.ipc ?? true,
      };
    }),
  );
}

/**
 * Starts every instance of every process and keeps them running: an instance that exits, with any
 * code or signal but one of `fatalExitCodes`, is started again after a backoff that grows while it
 * keeps crashing and resets once it has stayed up; an exit with a fatal code stops them all. Output is copied line by line to the supervisor's stdout and stderr, each
 * line prefixed with the instance's label.
 *
 * Children share the supervisor's process group. If the supervisor is SIGKILLed it cannot stop
 * them: a child that called `exitWithParent()` exits as soon as its IPC channel closes; any other
 * child is adopted by init and runs on until someone kills it. Wire SIGTERM and SIGINT to stop().
 * From a terminal, Ctrl-C sends SIGINT to the whole group: children get it directly as well as the
 * SIGTERM of stop(), so their shutdown must tolerate both.
 *
 * @example
 * const supervisor = startSupervisor({ processes: [{ name: 'payments', instances: 2, command: process.execPath,
 *   args: ['--import', 'tsx', 'examples/shop/payments/main.ts'], env: (i) => ({ PORT: String(ports[i]) }) }] });
 * process.once('SIGTERM', () => void supervisor.stop());
 */
export function startSupervisor(options: SupervisorOptions): Supervisor {
  const stopTimeoutMs = options.stopTimeoutMs ?? DEFAULT_SUPERVISOR.stopTimeoutMs;
  if (!(stopTimeoutMs >= 0) || !Number.isFinite(stopTimeoutMs)) {
    throw new InvalidOptionsError(`stopTimeoutMs must be a finite number >= 0, not ${stopTimeoutMs}`);
  }
  const fatalExitCodes = options.fatalExitCodes ?? DEFAULT_SUPERVISOR.fatalExitCodes;
  for (const code of fatalExitCodes) {
    if (!Number.isInteger(code) || code < 1 || code > 255) {
      throw new InvalidOptionsError(`fatalExitCodes must be integers from 1 to 255, not ${code}`);
    }
  }
  let why: SupervisorExit = { reason: 'stopped' };
  let stopped: Promise<void> | undefined;
  let exited: (exit: SupervisorExit) => void = () => {};
  const exit = new Promise<SupervisorExit>((resolve) => {
    exited = resolve;
  });
  const context = {
    logger: options.logger ?? stderrLogger,
    backoff: restartBackoff(options.backoff),
    stdout: options.stdout ?? process.stdout,
    stderr: options.stderr ?? process.stderr,
    fatalExitCodes: new Set(fatalExitCodes),
    onFatalExit(instance: SupervisedInstance, code: number) {
      if (stopped !== undefined) return;
      why = { reason: 'fatal-exit', label: instance.plan.label, code };
      void supervisor.stop();
    },
  };
  const instances = plans(options.processes).map((plan) => new SupervisedInstance(plan, context));

  const supervisor: Supervisor = {
    status: () =>
      instances.map(({ plan, pid, running, restarts }) => ({
        name: plan.name,
        instance: plan.instance,
        label: plan.label,
        pid,
        running,
        restarts,
      })),
    stop() {
      stopped ??= Promise.all(instances.map((instance) => instance.stop(stopTimeoutMs))).then(() => {
        context.logger.info('supervisor stopped: every child has exited');
        exited(why);
      });
      return stopped;
    },
    waitForExit: () => exit,
    kill(name, instance, signal = 'SIGTERM') {
      const found = instances.find(({ plan }) => plan.name === name && plan.instance === instance);
      if (found === undefined)
        throw new InvalidOptionsError(`the supervisor runs no instance ${instance} of ${name}`);
      return found.kill(signal);
    },
  };
  for (const instance of instances) instance.start();
  return supervisor;
}
