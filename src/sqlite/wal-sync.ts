import fs from 'node:fs';

const noop = () => {};

/**
 * The database file at the store's path is no longer the one its connections opened (deleted, or
 * replaced by another): what they commit goes to a file nobody can open again, lost at close.
 */
export class DatabaseFileMovedError extends Error {
  constructor(path: string) {
    super(
      `${path} was deleted or replaced since the store opened it: what the store writes now goes to a file that no longer has that path, and is lost when it closes`,
    );
    this.name = 'DatabaseFileMovedError';
  }
}

/** The syncs of a store's file, as its inbox, idempotency store and units of work wait for them. */
export interface CommitSync {
  /** After a commit that must survive a power cut (see {@link WalSync.afterCommit}). */
  readonly afterCommit: () => Promise<void>;
  /** Before what was read leaves the file (see {@link WalSync.durable}). */
  readonly durable: () => Promise<void>;
}

/** For a connection that syncs in COMMIT (`synchronous = FULL`): nothing to wait for. */
export const SYNCED_IN_COMMIT: CommitSync = Object.freeze({
  afterCommit: () => Promise.resolve(),
  durable: () => Promise.resolve(),
});

/**
 * The disk syncs of a SQLite file's write-ahead log, on Node's thread pool rather than in COMMIT.
 *
 * The store's connections commit with `synchronous = NORMAL`: COMMIT writes the transaction's frames
 * to the WAL (a crash of the process loses none of them) and returns without waiting for the disk.
 * What must survive a power cut waits for {@link afterCommit}: an `fdatasync` of the WAL file that
 * began after the commit, run in the background, so the event loop keeps serving while the disk
 * works. Calls made while a sync runs share the next one: under load one sync serves every commit of
 * its time, whatever their connection or batch. (SQLite itself syncs the WAL before a checkpoint
 * copies it into the database, and the database before the WAL is reused.)
 *
 * What leaves the file (rows a relay publishes, events a subscription hands out, a stream read)
 * first waits for {@link durable}: nothing, unless a commit of this process or of another connection
 * to the file (`PRAGMA data_version`) came after the last sync began. So nothing is published, handed
 * out or answered that a power cut could still take back.
 */
export class WalSync {
  readonly #path: string;
  /** The path the store was given, absolute: what must still name the file the connections opened. */
  readonly #namedAs: string;
  /** The database file the connections opened (device and inode), when it could be read. */
  readonly #identity: { readonly dev: number; readonly ino: number } | undefined;
  readonly #dataVersion: () => bigint | undefined;
  #fd: Promise<number> | undefined;
  /** Commits of this process that asked for a sync. */
  #commits = 0;
  /** What the last completed sync covers: commits of this process, and the file's data version. */
  #synced: Covered = { commits: 0, version: undefined };
  /** The sync under way, what it covers, and when it began (`performance.now()`). */
  #running: { readonly done: Promise<void>; readonly covers: Covered; readonly since: number } | undefined;
  /** The sync that starts once the running one ends, shared by every call made meanwhile. */
  #next: Promise<void> | undefined;
  #closed = false;
  /** Set by {@link abandon}: every sync waited for, and every later one, rejects with it. */
  #abandoned: Error | undefined;
  readonly #abandonment = new Set<(error: Error) => void>();

  /**
   * @param databasePath the database file as SQLite opened it, symbolic links resolved and absolute
   *   (`realpathSync`): its WAL is the file beside it, `-wal` added.
   * @param dataVersion `PRAGMA data_version` of a connection to the file that stays open (it changes
   *   when another connection commits); `undefined` while there is none.
   * @param namedAs the path the store was given, made absolute, links unresolved: the file must
   *   stay the one it names (a link pointed elsewhere, as a restore or a deploy does, moves it as
   *   surely as a file renamed over it). Defaults to `databasePath`.
   */
  constructor(databasePath: string, dataVersion: () => bigint | undefined, namedAs = databasePath) {
    this.#path = `${databasePath}-wal`;
    this.#namedAs = namedAs;
    this.#dataVersion = dataVersion;
    try {
      const { dev, ino } = fs.statSync(databasePath);
      this.#identity = { dev, ino };
    } catch {
      this.#identity = undefined;
    }
  }

  /** After a commit that must survive a power cut: resolves once a sync begun after this call ended. */
  afterCommit(): Promise<void> {
    this.#commits++;
    return this.#sync();
  }

  /**
   * Before what was read from the file leaves it: resolves at once when no commit came after the
   * last sync began, else once a sync that covers them ended.
   */
  durable(): Promise<void> {
    const now: Covered = { commits: this.#commits, version: this.#dataVersion() };
    if (covers(this.#synced, now)) return Promise.resolve();
    if (this.#running !== undefined && covers(this.#running.covers, now)) return this.#running.done;
    return this.#sync();
  }

  #sync(): Promise<void> {
    if (this.#abandoned !== undefined) return Promise.reject(this.#abandoned);
    if (this.#closed) return Promise.resolve();
    if (this.#next !== undefined) return this.#next;
    if (this.#running === undefined) return this.#start();
    const next = this.#running.done.then(noop, noop).then(() => {
      this.#next = undefined;
      return this.#start();
    });
    this.#next = next;
    return next;
  }

  #start(): Promise<void> {
    const covered: Covered = { commits: this.#commits, version: this.#dataVersion() };
    const done = this.#abandonable(this.#datasync()).then(() => {
      if (covered.commits >= this.#synced.commits) this.#synced = covered;
    });
    const running = { done, covers: covered, since: performance.now() };
    this.#running = running;
    done.then(noop, noop).then(() => {
      if (this.#running === running) this.#running = undefined;
    });
    return done;
  }

  /** `sync`, or the error of {@link abandon} if that comes first. */
  #abandonable(sync: Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#abandonment.add(reject);
      sync.then(resolve, reject).finally(() => this.#abandonment.delete(reject));
    });
  }

  /** How long the sync under way has been running, in ms; 0 when none is. */
  runningFor(): number {
    return this.#running === undefined ? 0 : performance.now() - this.#running.since;
  }

  /**
   * Gives up on the syncs under way (a disk that does not answer): those waiting for them, and every
   * later call, reject with `error`. The backend's `close()` calls it when they outlast its limit.
   */
  abandon(error: Error): void {
    this.#abandoned ??= error;
    for (const reject of [...this.#abandonment]) reject(error);
  }

  async #datasync(): Promise<void> {
    this.#fd ??= new Promise<number>((resolve, reject) =>
      fs.open(this.#path, 'r', (error, fd) => (error ? reject(error) : resolve(fd))),
    ).catch((error: unknown) => {
      this.#fd = undefined;
      throw error;
    });
    const fd = await this.#fd;
    const [, moved] = await Promise.all([
      new Promise<void>((resolve, reject) =>
        fs.fdatasync(fd, (error) => (error ? reject(error) : resolve())),
      ),
      this.#moved(),
    ]);
    if (moved) {
      // Every later sync fails the same way: nothing written from now on can be kept.
      const error = new DatabaseFileMovedError(this.#namedAs);
      this.abandon(error);
      throw error;
    }
  }

  /**
   * Whether the store's path no longer names the file opened (gone, another in its place, or a link
   * on the way pointed elsewhere): `stat` follows the links as an opener of the path would.
   */
  #moved(): Promise<boolean> {
    const identity = this.#identity;
    if (identity === undefined) return Promise.resolve(false);
    return new Promise((resolve) =>
      fs.stat(this.#namedAs, (error, stats) =>
        resolve(error ? error.code === 'ENOENT' : stats.dev !== identity.dev || stats.ino !== identity.ino),
      ),
    );
  }

  /**
   * Waits for the syncs under way (or their {@link abandon}), then lets go of the WAL file (not
   * before a sync that hangs ends: its descriptor is the kernel's until then). Later calls resolve
   * at once.
   */
  async close(): Promise<void> {
    await this.#next?.catch(noop);
    await this.#running?.done.catch(noop);
    this.#closed = true;
    const fd = this.#fd;
    this.#fd = undefined;
    const closeFd = (descriptor: number | undefined) => {
      if (descriptor !== undefined) fs.close(descriptor, noop);
    };
    if (this.#abandoned === undefined) closeFd(await fd?.catch(() => undefined));
    else void fd?.then(closeFd, noop); // Closed once the hung open or sync lets go.
  }
}

interface Covered {
  readonly commits: number;
  readonly version: bigint | undefined;
}

/** Whether a sync that covered `synced` covers `now` too. */
function covers(synced: Covered, now: Covered): boolean {
  return synced.commits >= now.commits && synced.version === now.version;
}
