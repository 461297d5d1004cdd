/**
 * Runs the shop's services as separate processes: spawns, prefixes their output, restarts what
 * exits, stops everything in time. Generic: knows nothing of the services it runs.
 */
export type { ExitWithParentOptions } from './exit-with-parent.js';
export { DEFAULT_EXIT_WITH_PARENT, exitWithParent } from './exit-with-parent.js';
export { freePorts } from './free-port.js';
export type { ParsedInstances } from './instances.js';
export { InstancesArgumentError, MAX_INSTANCES, parseInstances } from './instances.js';
export type { RestartBackoffOptions } from './restart-backoff.js';
export { DEFAULT_RESTART_BACKOFF } from './restart-backoff.js';
export type {
  InstanceStatus,
  ProcessSpec,
  Supervisor,
  SupervisorExit,
  SupervisorOptions,
} from './supervisor.js';
export { DEFAULT_SUPERVISOR, startSupervisor } from './supervisor.js';
export type { WatchParentPidOptions } from './watch-parent-pid.js';
export { DEFAULT_WATCH_PARENT_PID, stopWhenNpmIsGone, watchParentPid } from './watch-parent-pid.js';
