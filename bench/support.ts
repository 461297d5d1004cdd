import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createTestVhost } from '../src/testing/rabbitmq.js';

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

/** A command-line mistake: the script stops before measuring anything (exit code 2). */
function usage(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

/** `--name N`: the number given (at least `min`), `fallback` when absent; anything else is refused. */
export function argValue(name: string, fallback: number, min = 1): number {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0) return fallback;
  const given = process.argv[index + 1];
  const value = Number(given);
  if (given === undefined || given.trim() === '' || !Number.isFinite(value) || value < min) {
    usage(`--${name} takes a number of at least ${min}, not ${given ?? 'nothing'}`);
  }
  return value;
}

/** `--only <case>`: one of `cases`, or undefined when absent; an unknown case is refused. */
export function onlyCase(cases: readonly string[]): string | undefined {
  const index = process.argv.indexOf('--only');
  if (index < 0) return undefined;
  const given = process.argv[index + 1];
  if (given === undefined || !cases.includes(given)) {
    usage(`--only takes one of ${cases.join(', ')}, not ${given ?? 'nothing'}`);
  }
  return given;
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
 * resolves its origin once the child reports the port it listens on. The child is stopped by
 * `stop()`, or when the benchmark ends, fails or is interrupted.
 */
export async function forkServer(script: string): Promise<{ origin: string; stop: () => Promise<void> }> {
  const child = fork(fileURLToPath(script), ['--serve'], { execArgv: process.execArgv, stdio: 'inherit' });
  const exited = once(child, 'exit');
  const stop = onCleanup(`the server process (pid ${child.pid})`, async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill();
      await exited;
    }
  });
  const [message] = (await Promise.race([
    once(child, 'message'),
    exited.then(([code, signal]) => {
      throw new Error(`the server process ended before listening (${signal ?? `exit code ${code}`})`);
    }),
  ])) as [{ port: number }];
  return { origin: `http://127.0.0.1:${message.port}`, stop };
}

// ── cleanup ───────────────────────────────────────────────────────────────────────────────────────

/** What to undo on the way out (children, temp dirs, databases, schemas, vhosts), last registered first. */
const cleanups: { readonly what: string; readonly run: () => Promise<void> }[] = [];

/**
 * Registers `run` to be done when the script ends, fails or is interrupted (Ctrl-C, SIGTERM); the
 * function returned runs it now (once) and unregisters it.
 */
export function onCleanup(what: string, run: () => Promise<void> | void): () => Promise<void> {
  const entry = { what, run: async () => run() };
  cleanups.push(entry);
  return async () => {
    const index = cleanups.indexOf(entry);
    if (index < 0) return;
    cleanups.splice(index, 1);
    await entry.run();
  };
}

async function cleanUp(): Promise<void> {
  for (let entry = cleanups.pop(); entry !== undefined; entry = cleanups.pop()) {
    try {
      await entry.run();
    } catch (error) {
      progress(`cleaning up ${entry.what} failed: ${errorMessage(error)}`);
    }
  }
}

export const errorMessage = (error: unknown) => (error instanceof Error ? error.message : String(error));

let interrupted = false;

/** Whether Ctrl-C or SIGTERM stopped the script (a failure that follows is no failure to report). */
export const wasInterrupted = () => interrupted;

/**
 * Runs a benchmark's `main`: on Ctrl-C or SIGTERM, and once it ends or fails, undoes what it
 * registered with `onCleanup`. A failure is printed and the exit code is 1 (130 and 143 when
 * interrupted).
 */
export async function runBenchmark(name: string, main: () => Promise<void>): Promise<void> {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      // The work under way fails as its schema, vhost or files go: no failure to report, and no
      // reason to stop before the rest is removed.
      process.on('uncaughtException', () => {});
      process.on('unhandledRejection', () => {});
      progress(`${signal}: stopping and removing what this run created`);
      void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }
  try {
    await main();
  } catch (error) {
    if (!interrupted) process.stderr.write(`${name} failed: ${errorMessage(error)}\n`);
    process.exitCode = 1;
  } finally {
    await cleanUp();
  }
}

/**
 * A fresh RabbitMQ vhost on the broker of FERRY_BENCH_AMQP_URL (default FERRY_TEST_AMQP_URL's, then
 * the local guest), its permissions given to that URL's user; deleted by `remove()`, or when the
 * benchmark ends, fails or is interrupted.
 */
export async function benchVhost(prefix: string): Promise<{ readonly url: string; remove(): Promise<void> }> {
  if (process.env.FERRY_BENCH_AMQP_URL) process.env.FERRY_TEST_AMQP_URL = process.env.FERRY_BENCH_AMQP_URL;
  const vhost = await createTestVhost(prefix);
  return { url: vhost.url, remove: onCleanup(`vhost ${vhost.name}`, () => vhost.dispose()) };
}
