import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { diskRoomCheck, LOCK_FILE, lockDataDir, processStartTime, usableDataDir } from './data-dir.js';
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

/**
 * A Node process that has exited and that its parent never reaps: the parent (a shell that then
 * becomes `sleep`) lives until the test ends.
 */
async function zombie(): Promise<number> {
  const parent = spawn('sh', ['-c', `"${process.execPath}" -e 0 & echo $!; exec sleep 60`], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  children.push(parent);
  const pid = Number(
    await new Promise<string>((resolve) => parent.stdout!.once('data', (d) => resolve(String(d)))),
  );
  for (let i = 0; i < 200; i++) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return pid;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`process ${pid} did not become a zombie`);
}

/** The lock this process writes: its id and when it started. */
const mine = async () => `${process.pid} ${await processStartTime(process.pid)}\n`;

describe('lockDataDir', () => {
  it('claims a folder, and releases it', async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir);
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(await mine());
    await release();
    await expect(readFile(join(dir, LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it.each([
    ['with when it started', async (pid: number) => `${pid} ${await processStartTime(pid)}\n`],
    ['as an earlier version wrote it (the process id alone)', async (pid: number) => `${pid}\n`],
  ])(
    'refuses a folder another live shop holds, written %s, naming the variable and the process',
    async (_, lock) => {
      const dir = await dataDir();
      const pid = await running(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)']);
      await writeFile(join(dir, LOCK_FILE), await lock(pid));
      const refusal = lockDataDir(dir);
      await expect(refusal).rejects.toBeInstanceOf(SettingsError);
      await expect(refusal).rejects.toThrow(
        `FERRY_DATA_DIR ${dir} is in use by another shop (process ${pid}): stop it, or set FERRY_DATA_DIR to another folder`,
      );
      // Left as it was: the other shop's.
      expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(await lock(pid));
    },
  );

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
    // Its id reused by another Node process (another shop, on another folder): not the one that wrote it.
    [
      'a process whose id is now a live Node process started at another time',
      async () => `${await running(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'])} 1`,
    ],
    // Killed, and not yet reaped by its parent (an init that reaps slowly, or none): kill(pid, 0)
    // still finds it. Before, the shop was refused as "in use by another shop".
    [
      'a shop killed and not yet reaped (a zombie, with the start time it wrote)',
      async () => {
        const pid = await zombie();
        return `${pid} ${await processStartTime(pid)}`;
      },
    ],
    ['nothing readable', async () => 'garbage'],
  ])('takes over a lock left by %s', async (_, holder) => {
    const dir = await dataDir();
    await writeFile(join(dir, LOCK_FILE), `${await holder()}\n`);
    const release = await lockDataDir(dir);
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(await mine());
    await release();
  });

  it('releases only its own lock, not one taken over meanwhile', async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir);
    await writeFile(join(dir, LOCK_FILE), '999999\n');
    await release();
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe('999999\n');
  });

  it.each([
    ['a folder', (file: string) => execFileSync('mkdir', [file])],
    // Read, it would block for ever.
    ['a FIFO', (file: string) => execFileSync('mkfifo', [file])],
  ])('refuses a lock that is %s, naming the variable and the file', async (_, make) => {
    const dir = await dataDir();
    make(join(dir, LOCK_FILE));
    await expect(lockDataDir(dir)).rejects.toThrow(
      new SettingsError(
        `FERRY_DATA_DIR ${dir} cannot be used: ${join(dir, LOCK_FILE)} is not a file: remove it`,
      ),
    );
  });
});

describe('a data folder on a full disk', () => {
  it('is refused naming the variable, and no empty lock is left in it', async () => {
    const dir = await dataDir();
    // A file system of 64 KiB, filled: new empty files still fit (free inodes), a byte does not.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    try {
      await writeFile(join(dir, 'fill'), Buffer.alloc(64 * 1024)).catch(() => {});
      await expect(usableDataDir(dir)).rejects.toThrow(
        new SettingsError(`FERRY_DATA_DIR ${dir} cannot be used: no space left on device, write`),
      );
      const lock = lockDataDir(dir);
      await expect(lock).rejects.toBeInstanceOf(SettingsError);
      await expect(lock).rejects.toThrow(
        `FERRY_DATA_DIR ${dir} cannot be used: shop.pid cannot be written (no space left on device, write)`,
      );
      expect((await readdir(dir)).sort()).toEqual(['fill']);
    } finally {
      execFileSync('umount', [dir]);
    }
  });
});

describe('a data folder on a disk with little room left', () => {
  it('is refused naming the variable and the space when under the minimum asked, taken otherwise', async () => {
    const dir = await dataDir();
    // 1 MiB: a byte fits, the shop's SQLite files and their logs do not.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
    try {
      await expect(usableDataDir(dir, { minFreeBytes: 32 * 1024 * 1024 })).rejects.toThrow(
        new SettingsError(
          `FERRY_DATA_DIR ${dir} cannot be used: its disk has 1.0 MiB free, the shop needs at least 32 MiB`,
        ),
      );
      await expect(usableDataDir(dir, { minFreeBytes: 512 * 1024 })).resolves.toBeUndefined();
      await expect(usableDataDir(dir)).resolves.toBeUndefined();
      expect(await readdir(dir)).toEqual([]);
    } finally {
      execFileSync('umount', [dir]);
    }
  });
});

describe('diskRoomCheck', () => {
  it('passes while the disk has the room asked for, and fails saying how much is free when it has not', async () => {
    const dir = await dataDir();
    await expect(diskRoomCheck(dir, 1)()).resolves.toBeUndefined();
    // More than any disk here has.
    await expect(diskRoomCheck(dir, Number.MAX_SAFE_INTEGER)()).rejects.toThrow(
      /^the data folder's disk has \d+(\.\d)? MiB free, less than the \d+ MiB the shop needs to keep orders$/,
    );
  });
});
