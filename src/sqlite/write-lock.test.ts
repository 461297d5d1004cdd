import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isStoreBusyError } from './store-busy.js';
import { WriteLock } from './write-lock.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sqlite-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const newPath = () => join(dir, `lock-${++files}.db`);

describe('WriteLock', () => {
  it('hands the lock over in the order it was asked for, nobody slipping in between', async () => {
    const lock = new WriteLock(newPath());
    const release = lock.tryAcquire()!;
    const order: string[] = [];
    const waiters = ['a', 'b', 'c'].map((name) =>
      lock.acquire(5000).then((next) => {
        order.push(name);
        // While one holds it, a newcomer neither takes it at once nor gets ahead of those waiting.
        expect(lock.tryAcquire()).toBeUndefined();
        next();
      }),
    );
    expect(lock.tryAcquire()).toBeUndefined();
    release();
    release(); // a second call does nothing
    await Promise.all(waiters);
    expect(order).toEqual(['a', 'b', 'c']);
    const again = lock.tryAcquire();
    expect(again).toBeDefined();
    again!();
  });

  it('is one lock for every instance on one file, however its path is spelled', async () => {
    const path = newPath();
    mkdirSync(join(dir, 'real'));
    symlinkSync(join(dir, 'real'), join(dir, 'link'));
    const spellings = [
      new WriteLock(relative(process.cwd(), path)),
      new WriteLock(join(dir, 'real', '..', `lock-${files}.db`)),
    ];
    const first = new WriteLock(path).tryAcquire()!;
    for (const lock of spellings) expect(lock.tryAcquire()).toBeUndefined();
    first();
    const viaLink = new WriteLock(join(dir, 'link', 'x.db')).tryAcquire()!;
    expect(new WriteLock(join(dir, 'real', 'x.db')).tryAcquire()).toBeUndefined();
    viaLink();
    // Another file, and private in-memory databases, are apart.
    const other = new WriteLock(newPath()).tryAcquire();
    const memory = [new WriteLock(':memory:').tryAcquire(), new WriteLock(':memory:').tryAcquire()];
    expect([other, ...memory].every((release) => release !== undefined)).toBe(true);
    for (const release of [other, ...memory]) release!();
  });

  it('fails a wait with STORE_BUSY after its timeout, leaving the queue to the others', async () => {
    const lock = new WriteLock(newPath());
    const release = lock.tryAcquire()!;
    const late = lock.acquire(20).catch((e: unknown) => e);
    const patient = lock.acquire(5000);
    expect(isStoreBusyError(await late)).toBe(true);
    release();
    (await patient)();
    const free = lock.tryAcquire();
    expect(free).toBeDefined();
    free!();
  });

  it('runs a write at once, synchronously, when the lock is free; otherwise once its turn comes', async () => {
    const lock = new WriteLock(newPath());
    let ran = false;
    const first = lock.write(1000, () => {
      ran = true;
      return 1;
    });
    expect(ran).toBe(true);
    expect(await first).toBe(1);
    const release = lock.tryAcquire()!;
    let second = false;
    const waiting = lock.write(1000, () => {
      second = true;
      return 2;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBe(false);
    release();
    expect(await waiting).toBe(2);
    await expect(
      lock.write(1000, () => {
        throw new Error('refused');
      }),
    ).rejects.toThrow('refused');
    const free = lock.tryAcquire();
    expect(free).toBeDefined();
    free!();
  });
});
