// Helpers of the supervisor's tests.
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'ferry';

/** Absolute path of a script in fixtures/. */
export const fixture = (name: string): string =>
  fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

/** The repository's root, where `--import tsx` resolves. */
export const repositoryRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** A writable that keeps everything written to it. */
export function sink(): { readonly stream: Writable; text(): string; lines(): string[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const text = (): string => chunks.join('');
  return { stream, text, lines: () => text().split('\n').slice(0, -1) };
}

export interface LogEntry {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly message: string;
  readonly fields: Record<string, unknown>;
}

/** A logger that keeps every entry. */
export function recordingLogger(): Logger & {
  readonly entries: LogEntry[];
  messages(level?: LogEntry['level']): string[];
} {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']) =>
    (message: string, fields: Record<string, unknown> = {}): void => {
      entries.push({ level, message, fields });
    };
  return {
    entries,
    messages: (level) =>
      entries.filter((entry) => level === undefined || entry.level === level).map((entry) => entry.message),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
}

/**
 * Whether `pid` is a live process. A zombie counts as gone: an orphan's exit is reaped by whatever
 * runs as pid 1, which in a container may take its time.
 */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || !isProcMounted()) return probe(pid);
    return false;
  }
}

function isProcMounted(): boolean {
  try {
    readFileSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
}

function probe(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
