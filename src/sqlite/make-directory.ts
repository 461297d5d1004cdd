import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * `mkdir -p`, one level at a time. Node's own recursive mkdir never returns for a path under a
 * directory that refuses new entries with ENOENT (`/proc/nope`): it tries again forever. Here each
 * level is made at most twice, and the error of the level that cannot be made is thrown.
 */
export function makeDirectory(dir: string): void {
  // As written, not normalized: `a/missing/../b` needs `a/missing` as SQLite opens it.
  try {
    mkdirSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    const parent = dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw error;
    makeDirectory(parent);
    try {
      mkdirSync(dir);
    } catch (again) {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
    }
  }
}
