import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from 'ferry/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { fixture, isAlive, repositoryRoot } from './test-kit.js';

const leftovers: number[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const pid of leftovers.splice(0)) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const exited = (child: ChildProcess): Promise<number | null> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });

describe('watchParentPid', () => {
  it('calls back once the parent has died, even by SIGKILL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-watch-parent-pid-'));
    dirs.push(dir);
    const marker = join(dir, 'marker');
    // A shell between this test and the watcher, as npm puts one: `; true` keeps it from exec'ing.
    const shell = spawn(
      'sh',
      ['-c', `"${process.execPath}" --import tsx "${fixture('pid-watcher.mjs')}"; true`],
      {
        cwd: repositoryRoot,
        env: { ...process.env, MARKER_FILE: marker },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    leftovers.push(shell.pid as number);
    let output = '';
    shell.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    await waitFor(
      () => /pid=\d+/.test(output),
      () => `the watcher runs; its output: ${output}`,
    );
    const watcher = Number(/pid=(\d+)/.exec(output)?.[1]);
    leftovers.push(watcher);
    expect(isAlive(watcher)).toBe(true);

    shell.kill('SIGKILL');
    await exited(shell);
    await waitFor(() => !isAlive(watcher), `watcher ${watcher} is gone`, 5000);
    expect(existsSync(marker) && readFileSync(marker, 'utf8')).toBe('parent gone');
  });

  it('does not keep the process alive by itself', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture('pid-watcher.mjs')], {
      cwd: repositoryRoot,
      env: { ...process.env, FINISH: '1' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    leftovers.push(child.pid as number);
    expect(await exited(child)).toBe(0);
  });
});
