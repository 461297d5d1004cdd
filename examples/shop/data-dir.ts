import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

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
