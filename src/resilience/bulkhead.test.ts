import { describe, expect, it } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { Bulkhead, bulkhead, DEFAULT_BULKHEAD } from './bulkhead.js';
import { isBulkheadFullError } from './errors.js';

/** Work that finishes when the test says so. */
function gate() {
  const started: string[] = [];
  const releases = new Map<string, (value: string) => void>();
  const task = (name: string) => () => {
    started.push(name);
    return new Promise<string>((resolve) => releases.set(name, resolve));
  };
  const release = async (name: string) => {
    releases.get(name)?.(name);
    // let the bulkhead's settle handlers run
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return { started, task, release };
}

async function flush() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

describe('bulkhead', () => {
  it('runs at most maxConcurrent executions at once', async () => {
    const pool = bulkhead({ maxConcurrent: 2, maxQueue: 10 });
    const { started, task, release } = gate();
    const results = ['a', 'b', 'c', 'd'].map((name) => pool.execute(task(name)));
    await flush();
    expect(started).toEqual(['a', 'b']);
    expect(pool.stats()).toEqual({ running: 2, queued: 2 });
    await release('b');
    expect(started).toEqual(['a', 'b', 'c']);
    await release('a');
    await release('c');
    await release('d');
    await expect(Promise.all(results)).resolves.toEqual(['a', 'b', 'c', 'd']);
    expect(pool.stats()).toEqual({ running: 0, queued: 0 });
  });

  it('starts waiting executions first in, first out', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 3 });
    const { started, task, release } = gate();
    for (const name of ['first', 'q1', 'q2', 'q3']) void pool.execute(task(name));
    for (const name of ['first', 'q1', 'q2']) await release(name);
    expect(started).toEqual(['first', 'q1', 'q2', 'q3']);
  });

  it('rejects at once with BulkheadFullError beyond maxConcurrent + maxQueue, without running fn', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 1 });
    const { task } = gate();
    void pool.execute(task('running'));
    void pool.execute(task('waiting'));
    let ran = false;
    const error = await pool
      .execute(() => {
        ran = true;
      })
      .catch((e: unknown) => e);
    expect(isBulkheadFullError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'BULKHEAD_FULL', maxConcurrent: 1, maxQueue: 1 });
    expect(ran).toBe(false);
  });

  it('queues nothing by default', async () => {
    expect(DEFAULT_BULKHEAD).toEqual({ maxConcurrent: 10, maxQueue: 0 });
    expect(Object.isFrozen(DEFAULT_BULKHEAD)).toBe(true);
    const pool = new Bulkhead({ maxConcurrent: 1 });
    const { task } = gate();
    void pool.execute(task('a'));
    await expect(pool.execute(task('b'))).rejects.toMatchObject({ code: 'BULKHEAD_FULL' });
  });

  it('frees the slot when fn fails or throws synchronously', async () => {
    const pool = bulkhead({ maxConcurrent: 1 });
    await expect(pool.execute(() => Promise.reject(new Error('async')))).rejects.toThrow('async');
    await expect(
      pool.execute(() => {
        throw new Error('sync');
      }),
    ).rejects.toThrow('sync');
    await expect(pool.execute(() => 'ok')).resolves.toBe('ok');
    expect(pool.stats()).toEqual({ running: 0, queued: 0 });
  });

  it('takes a waiting execution whose signal aborts out of the queue, rejecting with the reason', async () => {
    const pool = bulkhead({ maxConcurrent: 1, maxQueue: 2 });
    const { started, task, release } = gate();
    void pool.execute(task('running'));
    const controller = new AbortController();
    const aborted = pool.execute(task('aborted'), { signal: controller.signal });
    const next = pool.execute(task('next'));
    const reason = new Error('caller gave up');
    controller.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    expect(pool.stats()).toEqual({ running: 1, queued: 1 });
    await release('running');
    expect(started).toEqual(['running', 'next']);
    await release('next');
    await expect(next).resolves.toBe('next');
  });

  it('does not run fn when the signal is already aborted', async () => {
    const pool = bulkhead();
    const reason = new Error('late');
    let ran = false;
    await expect(
      pool.execute(
        () => {
          ran = true;
        },
        { signal: AbortSignal.abort(reason) },
      ),
    ).rejects.toBe(reason);
    expect(ran).toBe(false);
    expect(pool.stats().running).toBe(0);
  });

  it('passes signal and attempt to fn', async () => {
    const signal = new AbortController().signal;
    const context = await bulkhead().execute((c) => c, { signal, attempt: 2 });
    expect(context).toMatchObject({ signal, attempt: 2 });
  });

  it.each([
    ['maxConcurrent 0', { maxConcurrent: 0 }],
    ['a fractional maxConcurrent', { maxConcurrent: 1.5 }],
    ['a negative maxQueue', { maxQueue: -1 }],
  ])('rejects %s with INVALID_OPTIONS', (_, options) => {
    let error: unknown;
    try {
      bulkhead(options);
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionsError(error)).toBe(true);
  });
});
