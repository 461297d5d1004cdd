import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FerryError } from '../errors/ferry-error.js';

/**
 * Starts a TypeScript fixture in a child Node process (through tsx), its stdout piped, stderr
 * inherited. tsx (an optional peer) is looked for from the fixture's folder, then from the working
 * directory, then from where Ferry is installed, and the child is given the one found, so a test
 * run from another folder (a monorepo's root) finds it too. Throws `DEPENDENCY_MISSING`, starting
 * nothing, when there is none.
 */
export function spawnFixture(path: string, env: Record<string, string>): ChildProcess {
  const fixture = resolve(path);
  const loader = tsxLoader([fixture, join(process.cwd(), 'noop.js'), fileURLToPath(import.meta.url)]);
  return spawn(process.execPath, ['--import', loader, fixture], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/**
 * The file URL of tsx's loader, resolved as from each file of `from` in turn (the node_modules
 * folders above it), or `DEPENDENCY_MISSING` when none finds it.
 */
export function tsxLoader(from: readonly string[]): string {
  for (const file of from) {
    try {
      return pathToFileURL(createRequire(file).resolve('tsx')).href;
    } catch {
      // Not installed above this file: the next place.
    }
  }
  throw new FerryError(
    'DEPENDENCY_MISSING',
    `spawnFixture runs TypeScript fixtures through tsx, which was found neither above the fixture, nor above the working directory, nor beside Ferry: install it (npm install --save-dev tsx)`,
  );
}

/**
 * Calls `onLine` for each line the child prints on stdout (without its `\n` or `\r\n`), the last one
 * too when the child ends without a line break after it.
 */
export function onLines(child: ChildProcess, onLine: (line: string) => void): void {
  let buffer = '';
  // A character split across chunks is decoded whole.
  const decoder = new StringDecoder('utf8');
  const stdout = child.stdout!;
  stdout.on('data', (chunk: Buffer) => {
    buffer += decoder.write(chunk);
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      onLine(buffer.slice(0, nl).replace(/\r$/, ''));
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
    }
  });
  // The last line, when the child ended without a line break after it.
  stdout.on('end', () => {
    buffer += decoder.end();
    if (buffer !== '') onLine(buffer.replace(/\r$/, ''));
    buffer = '';
  });
}
