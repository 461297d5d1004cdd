import { type ChildProcess, spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';

/** Starts a TypeScript fixture in a child Node process (through tsx), its stdout piped, stderr inherited. */
export function spawnFixture(path: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', path], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
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
