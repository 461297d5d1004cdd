import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { SettingsError } from './settings.js';

/**
 * Makes the data folder if needed and proves the shop can keep files in it, by writing one and
 * removing it: a regular file, a folder of a file system that refuses new entries (`/proc`,
 * `/sys`), one without write permission. Throws a {@link SettingsError} naming FERRY_DATA_DIR,
 * before any service opens a SQLite file there (whose own error names neither the variable nor
 * the folder, and which a supervisor would restart forever).
 */
export async function usableDataDir(dir: string): Promise<void> {
  try {
    await makeDataDir(dir);
    if (!(await stat(dir)).isDirectory()) throw new Error('it is not a folder');
    const probe = join(dir, `.ferry-write-test-${process.pid}-${randomBytes(4).toString('hex')}`);
    await writeFile(probe, '', { flag: 'wx' });
    await rm(probe, { force: true });
  } catch (error) {
    throw new SettingsError(
      `FERRY_DATA_DIR ${dir} cannot be used: ${(error as Error).message.replace(/^[A-Z]+: /, '')}`,
    );
  }
}

/**
 * Makes `dir` and its missing parents, from the nearest one that exists down. Not Node's recursive
 * mkdir: under a directory that answers ENOENT to new entries (`/proc`) it tries again forever.
 */
export async function makeDataDir(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let path = resolve(dir); ; path = dirname(path)) {
    if (await exists(path)) break;
    missing.unshift(path);
    if (dirname(path) === path) break;
  }
  for (const path of missing) {
    await mkdir(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
  }
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** The file that says which process runs a shop on a data folder. */
export const LOCK_FILE = 'shop.pid';

/**
 * Claims the data folder for this process, as PostgreSQL's postmaster.pid does: two shops on one
 * folder would each relay and run sagas from the same files. A lock left by a process that is gone
 * (SIGKILLed, its machine restarted) is taken over. Resolves with the release; throws a
 * {@link SettingsError} naming FERRY_DATA_DIR and the other process while it runs.
 */
export async function lockDataDir(dir: string): Promise<() => Promise<void>> {
  const file = join(dir, LOCK_FILE);
  const mine = `${process.pid}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(file, mine, { flag: 'wx' });
      return async () => {
        // Only its own: a lock taken over meanwhile belongs to the process that took it.
        if ((await readFile(file, 'utf8').catch(() => '')) === mine) await rm(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt === 3) throw error;
    }
    const holder = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    if (await isOtherLiveNode(holder)) {
      throw new SettingsError(
        `FERRY_DATA_DIR ${dir} is in use by another shop (process ${holder}): stop it, or set FERRY_DATA_DIR to another folder`,
      );
    }
    // Left by a process that is gone (or unreadable): removed, and claimed again; of two shops
    // doing this at once, one claims it and the other finds it held.
    await rm(file, { force: true });
  }
}

/** Whether `pid` is a running Node process other than this one (a reused pid is not a shop). */
async function isOtherLiveNode(pid: number): Promise<boolean> {
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  // Where /proc cannot tell (another system), a live process is taken for the shop.
  return command === undefined || /node/i.test(command);
}
