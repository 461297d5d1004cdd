import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** Shared helpers of the benchmark scripts: windowed pumping, medians, JSON lines, progress, server processes. */

/** Runs `send` `total` times with at most `window` outstanding; each send calls `done` when it completes. */
export function pump(
  total: number,
  window: number,
  send: (i: number, done: (error?: unknown) => void) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let completed = 0;
    let inFlight = 0;
    let failed = false;
    const done = (error?: unknown) => {
      if (failed) return;
      if (error !== undefined) {
        failed = true;
        reject(error);
        return;
      }
      inFlight--;
      completed++;
      if (completed === total) resolve();
      else next();
    };
    const next = () => {
      while (inFlight < window && sent < total) {
        inFlight++;
        send(sent++, done);
      }
    };
    next();
  });
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function progress(message: string): void {
  process.stderr.write(`  … ${message}\n`);
}

/** One result line on stdout: what was measured, Ferry vs its baseline, and the target. */
export function report(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

export function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Seconds since `start` (a `performance.now()` reading). */
export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}

export function argValue(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0) return fallback;
  const value = Number(process.argv[index + 1]);
  return Number.isFinite(value) ? value : fallback;
}

export function hasFlag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}

/** Counts handled messages; `done` resolves when `total` were counted. */
export function countdown(total: number): { readonly done: Promise<void>; tick(): number } {
  let count = 0;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  return {
    done,
    tick() {
      count++;
      if (count === total) finish();
      return count;
    },
  };
}

/**
 * Starts `script` again in a child process with `--serve` (a server on the other core) and
 * resolves its origin once the child reports the port it listens on.
 */
export async function forkServer(script: string): Promise<{ child: ChildProcess; origin: string }> {
  const child = fork(fileURLToPath(script), ['--serve'], { execArgv: process.execArgv, stdio: 'inherit' });
  const [message] = (await once(child, 'message')) as [{ port: number }];
  return { child, origin: `http://127.0.0.1:${message.port}` };
}
