import { randomUUID } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { processWideMap } from './process-wide.js';
import { StoreBusyError, whileBusy } from './store-busy.js';

/**
 * Runs a synchronous write on the store's connection in this process's turn at the file's write lock,
 * waiting for other processes' locks as `whileBusy` does (see {@link WriteLock.write}).
 */
export type StoreWrite = <T>(operation: () => T) => Promise<T>;

/** Lets a caller go on: the next waiter in line gets the lock. Calling it again does nothing. */
export type ReleaseWriteLock = () => void;

interface Waiter {
  readonly grant: (release: ReleaseWriteLock) => void;
  readonly reject: (error: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

/** The state of one file's lock while it is held or waited for; dropped when neither. */
interface FileLock {
  readonly waiters: Waiter[];
}

/** One lock per file for the whole process, whichever copy of this module takes it. */
const held = processWideMap<string, FileLock>('ferry.sqlite.write-locks');

/**
 * This process's turn at the write lock of one SQLite file: a FIFO shared by every connection of the
 * process to that file (a store's own, its units of work's, those of other stores opened on the same
 * path), so that they take turns here instead of polling SQLite for its lock while another of them
 * holds it across awaits. Other processes are not in it: against them SQLite's lock and `whileBusy`
 * still decide.
 *
 * One instance per connection owner; instances for the same path share one queue. A `:memory:`
 * database is private to its connection and gets a queue of its own.
 */
export class WriteLock {
  readonly #path: string;
  #key: string | undefined;

  constructor(path: string) {
    this.#path = path;
  }

  /**
   * The file's key, found on first use (the store creates the file's directory when it opens): the
   * real path of its directory and its name, so that two spellings of one path share a queue.
   */
  get #file(): string {
    this.#key ??= fileKey(this.#path);
    return this.#key;
  }

  /** The file's key in this process: the same for every spelling of its path (a private one for `:memory:`). */
  get file(): string {
    return this.#file;
  }

  /** Whether a connection of this process holds the lock or waits for it. */
  get taken(): boolean {
    return held.has(this.#file);
  }

  /** Takes the lock now if nobody holds or waits for it. */
  tryAcquire(): ReleaseWriteLock | undefined {
    const key = this.#file;
    if (held.has(key)) return undefined;
    held.set(key, { waiters: [] });
    return releaser(key);
  }

  /**
   * Waits for the lock, after those who asked before, for up to `timeoutMs`.
   * @throws StoreBusyError when it is still held by others after `timeoutMs`.
   */
  acquire(timeoutMs: number): Promise<ReleaseWriteLock> {
    const now = this.tryAcquire();
    if (now !== undefined) return Promise.resolve(now);
    const key = this.#file;
    const lock = held.get(key)!;
    return new Promise<ReleaseWriteLock>((grant, reject) => {
      const waiter: Waiter = { grant, reject, timer: undefined };
      lock.waiters.push(waiter);
      const started = Date.now();
      waiter.timer = setTimeout(() => {
        const at = lock.waiters.indexOf(waiter);
        if (at < 0) return;
        lock.waiters.splice(at, 1);
        reject(new StoreBusyError(Date.now() - started, new Error(HELD_HERE)));
      }, timeoutMs);
    });
  }

  /**
   * Runs `operation` (a synchronous write on a connection to the file) in this process's turn, then
   * while another process holds SQLite's lock as `whileBusy` does: `totalMs` bounds both waits.
   * When nobody of this process holds the lock, `operation` runs at once, synchronously.
   * @throws StoreBusyError when the lock stays held for `totalMs`.
   */
  async write<T>(totalMs: number, operation: () => T): Promise<T> {
    const started = Date.now();
    const release = this.tryAcquire() ?? (await this.acquire(totalMs));
    try {
      // One budget for both waits; the error says how long the write waited in all.
      return await whileBusy(totalMs, operation, started);
    } finally {
      release();
    }
  }
}

const HELD_HERE =
  'another connection of this process held the write lock of the file (a unit of work, or the store)';

function releaser(key: string): ReleaseWriteLock {
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const lock = held.get(key)!;
    const next = lock.waiters.shift();
    if (next === undefined) {
      held.delete(key);
      return;
    }
    clearTimeout(next.timer);
    // Handed over: the lock stays taken, so nobody can slip in before the next waiter runs.
    next.grant(releaser(key));
  };
}

function fileKey(path: string): string {
  if (path === ':memory:' || path === '') return `:memory:${randomUUID()}`;
  const absolute = resolve(path);
  try {
    return join(realpathSync(dirname(absolute)), basename(absolute));
  } catch {
    return absolute;
  }
}
