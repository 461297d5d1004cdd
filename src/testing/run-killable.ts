import { type SpawnOptions, spawn } from 'node:child_process';

/**
 * Runs `command` in a process group of its own and resolves with its stdout. Past `timeoutMs` the
 * whole group is SIGKILLed, not only the command: `rabbitmqctl` is a script whose Erlang VM
 * (`rabbitmqctl_escript`) outlives a kill of the script, holding a distribution port that the next
 * calls then fail on.
 */
export function runKillable(
  command: string,
  args: readonly string[],
  timeoutMs: number,
  options: Pick<SpawnOptions, 'env' | 'cwd' | 'uid' | 'gid'> = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // Whatever the command left in its group (it exited, a grandchild may not have) goes too.
      killGroup(child.pid);
      const line = `${command} ${args.join(' ')}`;
      if (timedOut) reject(new Error(`${line} did not finish within ${timeoutMs} ms (killed)`));
      else if (code !== 0) reject(new Error(`${line} exited with ${code ?? signal}: ${stderr.trim()}`));
      else resolve(stdout);
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is gone already.
  }
}
