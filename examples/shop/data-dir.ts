import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
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
