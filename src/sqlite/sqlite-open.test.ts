import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { waitFor } from '../testing/wait.js';
import { holdWriteLock } from './fixtures/write-lock-holder.js';
import { SqliteEventStoreBackend } from './sqlite-backend.js';
import { isStoreBusyError } from './store-busy.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-open-'));
let files = 0;
const freshPath = () => join(dir, `open-${++files}.db`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

const openFixture = fileURLToPath(new URL('./fixtures/open-and-append.ts', import.meta.url));

/** Starts a process that opens `path` at `startAt` (epoch ms) and appends one event; resolves to what it reported. */
async function openInAnotherProcess(path: string, startAt: number): Promise<string> {
  const child = spawnFixture(openFixture, { FERRY_SQLITE_PATH: path, FERRY_START_AT: String(startAt) });
  const lines: string[] = [];
  onLines(child, (line) => void lines.push(line));
  await once(child, 'exit');
  return lines.join('\n');
}

describe('opening a new SQLite file', () => {
  it('makes the folders of a new file, and fails to open where a folder cannot be made instead of hanging', async () => {
    // `..` after a folder that does not exist yet: SQLite opens the path as written, so it needs it.
    for (const nested of [join(dir, 'a', 'b', 'c', 'store.db'), `${dir}/x/missing/../y/store.db`]) {
      const backend = new SqliteEventStoreBackend({ path: nested });
      await backend.open();
      await backend.close();
    }
    // /proc answers ENOENT to new entries: Node's recursive mkdir tried again forever there.
    for (const path of ['/proc/ferry-no-such/store.db', '/proc/ferry-no-such/deeper/store.db']) {
      const error = await new SqliteEventStoreBackend({ path }).open().catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'sqlite' });
      expect(((error as Error).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    }
  });

  it('fails to open with STORE_UNAVAILABLE a file the process may only read (it opened, and every write failed untyped)', async () => {
    // A folder the other user may enter and write (SQLite makes the -wal and -shm there).
    const folder = mkdtempSync(join(tmpdir(), 'ferry-sqlite-shared-'));
    chmodSync(folder, 0o777);
    cleanups.push(async () => rmSync(folder, { recursive: true, force: true }));
    const path = join(folder, 'store.db');
    const backend = new SqliteEventStoreBackend({ path });
    await backend.open();
    await new EventStore(backend).append('before', [{ type: 'Opened', data: {} }]);
    await backend.close();
    chmodSync(path, 0o444);
    // Root writes whatever the mode: the fixture then runs as nobody.
    const asOther =
      process.getuid?.() === 0 ? ['--reuid=65534', '--regid=65534', '--clear-groups'] : undefined;
    const child =
      asOther === undefined
        ? spawnFixture(openFixture, { FERRY_SQLITE_PATH: path, FERRY_START_AT: '0' })
        : spawn('setpriv', [...asOther, process.execPath, '--import', 'tsx', openFixture], {
            env: { ...process.env, FERRY_SQLITE_PATH: path, FERRY_START_AT: '0' },
            stdio: ['ignore', 'pipe', 'inherit'],
          });
    const lines: string[] = [];
    onLines(child, (line) => void lines.push(line));
    await once(child, 'exit');
    expect(lines.join('\n')).toMatch(
      /^failed STORE_UNAVAILABLE could not open the sqlite event store at .*: the file is read-only for this process/,
    );
    // Refused before SQLite opened it: no -wal or -shm of the other user's left beside it, which its
    // owner might not be allowed to write (shutting the owner out of its own store).
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect(existsSync(`${path}-shm`)).toBe(false);
    // Nothing was written: the file opens as it was for a process that may write it.
    chmodSync(path, 0o644);
    const reopened = new SqliteEventStoreBackend({ path });
    await reopened.open();
    cleanups.push(() => reopened.close());
    expect((await reopened.readStream('before', {})).map((e) => e.type)).toEqual(['Opened']);
  });

  it('fails to open with STORE_UNAVAILABLE naming the file, the cause kept, where the file cannot be', async () => {
    writeFileSync(join(dir, 'plain-file'), '');
    writeFileSync(join(dir, 'not-a-database.db'), 'plain text, not SQLite\n'.repeat(100));
    mkdirSync(join(dir, 'a-folder.db'));
    for (const [path, cause] of [
      [join(dir, 'plain-file', 'store.db'), /ENOTDIR|SQLITE_CANTOPEN/],
      [join(dir, 'not-a-database.db'), /not a database/],
      [join(dir, 'a-folder.db'), /unable to open|directory/i],
    ] as const) {
      const error = await new SqliteEventStoreBackend({ path }).open().catch((e: unknown) => e);
      expect(error, path).toMatchObject({ code: 'STORE_UNAVAILABLE', backend: 'sqlite' });
      expect((error as Error).message).toContain(`could not open the sqlite event store at ${path}: `);
      const reason = (error as Error).cause as NodeJS.ErrnoException;
      expect(`${reason.code} ${reason.message}`).toMatch(cause);
    }
  });

  it("refuses a path ending in a folder's slash (SQLite opened a file named after the folder)", () => {
    for (const path of [`${dir}/t/`, './data/']) {
      expect(() => new SqliteEventStoreBackend({ path })).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      );
    }
  });
  it('lets several processes open one new file at once: each migrates or waits, then appends', async () => {
    // Rounds of processes released at one instant on a new file each: the switch to WAL and the
    // migrations race. Every process must open and append.
    for (let round = 0; round < 4; round++) {
      const path = freshPath();
      const startAt = Date.now() + 2500; // after every child has loaded tsx and the driver
      const reports = await Promise.all(Array.from({ length: 6 }, () => openInAnotherProcess(path, startAt)));
      expect(reports, `round ${round}`).toEqual(Array.from({ length: 6 }, () => 'ok'));
      const backend = new SqliteEventStoreBackend({ path });
      await backend.open();
      const store = new EventStore(backend);
      let events = 0;
      for await (const _ of store.readAll()) events++;
      await store.close();
      expect(events, `round ${round}`).toBe(6);
    }
  }, 120_000);

  it('waits while another connection holds the write lock of the new file, then opens', async () => {
    const path = freshPath();
    const holder = await holdWriteLock(path, 800, cleanups);
    const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs: 10_000 });
    cleanups.push(() => backend.close());
    const started = Date.now();
    await backend.open();
    expect(Date.now() - started).toBeGreaterThan(300);
    await waitFor(holder.released, 'the other process to report its commit');
    const store = new EventStore(backend);
    await store.append('s', [{ type: 'Opened', data: {} }]);
    expect(await store.readStream('s')).toHaveLength(1);
  }, 30_000);

  it('fails with STORE_BUSY after busyTimeoutMs when the lock of the new file stays held', async () => {
    const path = freshPath();
    await holdWriteLock(path, 8000, cleanups);
    const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs: 400 });
    cleanups.push(() => backend.close());
    const started = Date.now();
    const error = await backend.open().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isStoreBusyError(error), String(error)).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
  }, 30_000);
});
