import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runKillable } from './run-killable.js';
import { waitFor } from './wait.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-run-killable-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A script that starts a long-lived grandchild (as rabbitmqctl starts its Erlang VM), writes its pid, and waits. */
function hangingScript(name: string): { path: string; pidFile: string } {
  const path = join(dir, name);
  const pidFile = join(dir, `${name}.pid`);
  writeFileSync(path, `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\nwait\n`);
  chmodSync(path, 0o755);
  return { path, pidFile };
}

describe('runKillable', () => {
  it('resolves with stdout, and rejects with stderr on a non-zero exit', async () => {
    expect(await runKillable('sh', ['-c', 'echo out'], 5000)).toBe('out\n');
    await expect(runKillable('sh', ['-c', 'echo bad >&2; exit 3'], 5000)).rejects.toThrow(
      /exited with 3: bad/,
    );
  });

  it('past its timeout, kills the command and what it started, and says so', async () => {
    const { path, pidFile } = hangingScript('hangs.sh');
    const started = Date.now();
    await expect(runKillable(path, [], 300)).rejects.toThrow(/did not finish within 300 ms/);
    expect(Date.now() - started).toBeLessThan(5000);
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => !alive(grandchild), 'the grandchild to be killed with its group', 2000);
  });
});
