import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { SettingsError } from './settings.js';

/**
 * Makes the data folder if needed and proves the shop can keep files in it, by writing one and
 * removing it: a regular file, a folder of a file system that refuses new entries (`/proc`,
 * `/sys`), one without write permission. Throws a {@link SettingsError} naming FERRY_DATA_DIR,
 * before any service opens a SQLite file there (whose own error names neither the variable nor
 * the folder, and which a supervisor would restart forever).
 */
export async function usableDataDir(
  dir: string,
  options: {
    /** Refused with less free space than this for an unprivileged process (`statfs`). @default 0 */
    readonly minFreeBytes?: number;
  } = {},
): Promise<void> {
  try {
    await makeDataDir(dir);
    if (!(await stat(dir)).isDirectory()) throw new Error('it is not a folder');
    const probe = join(dir, `.ferry-write-test-${process.pid}-${randomBytes(4).toString('hex')}`);
    // A byte, not an empty file: a full disk still takes new empty files.
    try {
      await writeFile(probe, 'x', { flag: 'wx' });
    } finally {
      await rm(probe, { force: true }).catch(() => {});
    }
    const min = options.minFreeBytes ?? 0;
    if (min > 0) {
      const { bavail, bsize } = await statfs(dir);
      const free = bavail * bsize;
      if (free < min) throw new Error(`its disk has ${mib(free)} free, the shop needs at least ${mib(min)}`);
    }
  } catch (error) {
    throw new SettingsError(`FERRY_DATA_DIR ${dir} cannot be used: ${withoutErrorCode(error)}`);
  }
}

/**
 * Free space under which the running shop says it is not ready: half of what it needs to start, so
 * that `GET /health` fails before the SQLite writes do.
 */
export const RUNNING_MIN_FREE_BYTES = 16 * 1024 * 1024;

/**
 * A readiness check (`GET /health`) that fails while the data folder's disk has less than
 * `minFreeBytes` free: the services' SQLite writes then fail (507 `STORAGE_FULL`), and an operator
 * looking at the health report learns why.
 */
export function diskRoomCheck(dir: string, minFreeBytes: number): () => Promise<void> {
  return async () => {
    const { bavail, bsize } = await statfs(dir);
    const free = bavail * bsize;
    if (free < minFreeBytes) {
      throw new Error(
        `the data folder's disk has ${mib(free)} free, less than the ${mib(minFreeBytes)} the shop needs to keep orders`,
      );
    }
  };
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MiB`;

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
 * folder would each relay and run sagas from the same files. The file holds the process id and, on
 * Linux, when that process started, so that a lock left by a process that is gone (SIGKILLed, its
 * machine restarted) is taken over even when its id now belongs to another process. Resolves with
 * the release; throws a {@link SettingsError} naming FERRY_DATA_DIR while another shop holds it, or
 * when the lock cannot be written (a full disk) or is not a file.
 */
export async function lockDataDir(dir: string): Promise<() => Promise<void>> {
  const file = join(dir, LOCK_FILE);
  const started = await processStartTime(process.pid);
  const mine = `${process.pid}${started === undefined ? '' : ` ${started}`}\n`;
  const unusable = (why: string) => new SettingsError(`FERRY_DATA_DIR ${dir} cannot be used: ${why}`);
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(file, mine, { flag: 'wx' });
      return async () => {
        // Only its own: a lock taken over meanwhile belongs to the process that took it.
        if ((await readFile(file, 'utf8').catch(() => '')) === mine) await rm(file, { force: true });
      };
    } catch (error) {
      const { code } = error as NodeJS.ErrnoException;
      if (code !== 'EEXIST' || attempt === 3) {
        // Created and not written (ENOSPC): an empty lock is not left behind.
        if (code !== 'EEXIST') await rm(file, { force: true }).catch(() => {});
        throw unusable(`${LOCK_FILE} cannot be written (${withoutErrorCode(error)})`);
      }
    }
    // A folder or a FIFO would be read forever or not at all.
    const kind = await lstat(file).catch(() => undefined);
    if (kind !== undefined && !kind.isFile()) {
      throw unusable(`${file} is not a file: remove it`);
    }
    const [pid, start] = (await readFile(file, 'utf8').catch(() => '')).trim().split(/\s+/).map(Number);
    if (await isOtherShop(pid, start)) {
      throw new SettingsError(
        `FERRY_DATA_DIR ${dir} is in use by another shop (process ${pid}): stop it, or set FERRY_DATA_DIR to another folder`,
      );
    }
    // Left by a process that is gone (or unreadable): removed, and claimed again; of two shops
    // doing this at once, one claims it and the other finds it held.
    await rm(file, { force: true }).catch((error: Error) => {
      throw unusable(`${LOCK_FILE} was left by a shop that is gone and cannot be removed (${error.message})`);
    });
  }
}

/**
 * Whether process `pid` runs and is the one that wrote the lock: started at `start` when the lock
 * says when (and /proc can tell), else a Node process other than this one.
 */
async function isOtherShop(pid: number | undefined, start: number | undefined): Promise<boolean> {
  if (pid === undefined || !Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const stat = await processStat(pid);
  // Exited, not yet reaped by its parent (a shop SIGKILLed under an init that reaps slowly): gone.
  if (stat?.state === 'Z' || stat?.state === 'X') return false;
  const actual = stat?.startTicks;
  if (start !== undefined && Number.isSafeInteger(start) && actual !== undefined) return actual === start;
  const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  // Where /proc cannot tell (another system), a live process is taken for the shop.
  return command === undefined || /node/i.test(command);
}

/** When process `pid` started, in clock ticks since boot (/proc/pid/stat's 22nd field); Linux only. */
export async function processStartTime(pid: number): Promise<number | undefined> {
  return (await processStat(pid))?.startTicks;
}

/** Process `pid`'s state letter (`R`, `S`, `Z`…) and start time, from /proc/pid/stat; Linux only. */
async function processStat(
  pid: number,
): Promise<{ state: string; startTicks: number | undefined } | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // After the command's name, in parentheses (which may hold spaces and parentheses itself).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[19]);
  return { state: fields[0] ?? '', startTicks: Number.isSafeInteger(ticks) ? ticks : undefined };
}

/** A file system error's message without its leading code (`ENOSPC: no space left…` → `no space left…`). */
export const withoutErrorCode = (error: unknown): string => (error as Error).message.replace(/^[A-Z]+: /, '');
