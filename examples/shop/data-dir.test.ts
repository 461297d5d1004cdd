import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LOCK_FILE, lockDataDir } from './data-dir.js';
import { SettingsError } from './settings.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-lock-'));
  dirs.push(dir);
  return dir;
}

/** A running process: `command args`, until the test ends. */
async function running(command: string, args: string[]): Promise<number> {
  const child = spawn(command, args, { stdio: 'ignore' });
  children.push(child);
  await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject));
  return child.pid as number;
}

describe('lockDataDir', () => {
  it('claims a folder, and releases it', async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir);
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(`${process.pid}\n`);
    await release();
    await expect(readFile(join(dir, LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a folder another live Node process holds, naming the variable and the process', async () => {
    const dir = await dataDir();
    const pid = await running(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)']);
    await writeFile(join(dir, LOCK_FILE), `${pid}\n`);
    const refusal = lockDataDir(dir);
    await expect(refusal).rejects.toBeInstanceOf(SettingsError);
    await expect(refusal).rejects.toThrow(
      `FERRY_DATA_DIR ${dir} is in use by another shop (process ${pid}): stop it, or set FERRY_DATA_DIR to another folder`,
    );
    // Left as it was: the other shop's.
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(`${pid}\n`);
  });

  it.each([
    [
      'a process that is gone',
      async () => {
        const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
        await new Promise((resolve) => child.once('exit', resolve));
        return String(child.pid);
      },
    ],
    ['a live process that is not Node (its pid reused)', async () => String(await running('sleep', ['60']))],
    [
      'this very process (restarted with the same pid, as pid 1 in a container)',
      async () => String(process.pid),
    ],
    ['nothing readable', async () => 'garbage'],
  ])('takes over a lock left by %s', async (_, holder) => {
    const dir = await dataDir();
    await writeFile(join(dir, LOCK_FILE), `${await holder()}\n`);
    const release = await lockDataDir(dir);
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(`${process.pid}\n`);
    await release();
  });

  it('releases only its own lock, not one taken over meanwhile', async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir);
    await writeFile(join(dir, LOCK_FILE), '999999\n');
    await release();
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe('999999\n');
  });
});
