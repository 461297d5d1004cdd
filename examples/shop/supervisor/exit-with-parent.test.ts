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

/** Starts fixtures/host.ts (a supervisor of one child) and resolves the child's pid once it runs. */
async function startHost(env: Record<string, string>): Promise<{ host: ChildProcess; watcher: number }> {
  const host = spawn(process.execPath, ['--conditions=ferry-source', '--import', 'tsx', fixture('host.ts')], {
    cwd: repositoryRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  leftovers.push(host.pid!);
  let output = '';
  host.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  await waitFor(
    () => /pid=\d+/.test(output),
    () => `the watcher runs; host output: ${output}`,
  );
  const watcher = Number(/pid=(\d+)/.exec(output)![1]);
  leftovers.push(watcher);
  expect(output).toMatch(/^watcher \| (ready pid=\d+|pid=\d+ watching=true)\n/);
  return { host, watcher };
}

const exited = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });

describe('exitWithParent', () => {
  it('makes a supervised child exit, after its onParentGone, when the supervisor process is SIGKILLed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-exit-with-parent-'));
    dirs.push(dir);
    const marker = join(dir, 'marker');
    const { host, watcher } = await startHost({ MARKER_FILE: marker });
    expect(isAlive(watcher)).toBe(true);
    host.kill('SIGKILL');
    await exited(host);
    await waitFor(() => !isAlive(watcher), `watcher ${watcher} is gone`, 5000);
    expect(existsSync(marker) && readFileSync(marker, 'utf8')).toBe('parent gone');
  });

  it('without it, the child of a SIGKILLed supervisor runs on (what the helper is for)', async () => {
    const { host, watcher } = await startHost({ HOST_CHILD: 'plain', KEEP_AFTER_PARENT: '1' });
    host.kill('SIGKILL');
    await exited(host);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(isAlive(watcher)).toBe(true);
  });

  it('does not keep the process alive by itself, and says false where there is no parent channel', async () => {
    const run = (ipc: boolean): Promise<{ code: number | null; output: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', fixture('parent-watcher.mjs')], {
          cwd: repositoryRoot,
          env: { ...process.env, FINISH: '1' },
          stdio: ipc ? ['ignore', 'pipe', 'inherit', 'ipc'] : ['ignore', 'pipe', 'inherit'],
        });
        leftovers.push(child.pid!);
        let output = '';
        child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
          output += chunk;
        });
        child.once('exit', (code) => resolve({ code, output }));
      });
    const [withChannel, without] = await Promise.all([run(true), run(false)]);
    expect(withChannel).toEqual({ code: 0, output: expect.stringMatching(/watching=true\n$/) });
    expect(without).toEqual({ code: 0, output: expect.stringMatching(/watching=false\n$/) });
  });
});
