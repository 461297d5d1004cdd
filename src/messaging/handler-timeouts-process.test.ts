import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { onLines, spawnFixture } from '../testing/child-process.js';

const fixture = fileURLToPath(new URL('./fixtures/hung-handler.ts', import.meta.url));

/** Runs the fixture's `scenario` until the process ends by itself: its lines, each with its ms. */
async function run(scenario: string, env: Record<string, string> = {}): Promise<Map<string, number>> {
  const child = spawnFixture(fixture, { FERRY_SCENARIO: scenario, ...env });
  const lines = new Map<string, number>();
  onLines(child, (line) => {
    const at = line.lastIndexOf(' ');
    lines.set(line.slice(0, at), Number(line.slice(at + 1)));
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  try {
    await once(child, 'exit');
  } finally {
    clearTimeout(killer);
  }
  return lines;
}

// On RabbitMQ the connection keeps a process alive; on the embedded broker nothing does, so the time
// limit of a handler in flight must, or a process awaiting what the limit frees exits unsettled.
describe('the handler time limit and the life of the process (embedded broker)', () => {
  it('keeps the process alive until a hung transactional handler is ended, so a unit of work waiting for its turn commits (and the retry runs)', async () => {
    const lines = await run('unit-behind');
    // Not exit 13 (a top-level await left unsettled) with the unit of work never run.
    expect([...lines.keys()]).toEqual(['unit committed', 'attempts 2', 'exit 0']);
    expect(lines.get('unit committed')).toBeGreaterThanOrEqual(450);
  });

  it('keeps the process alive while a handler without a limit (handlerTimeoutMs: 0) runs, so a unit of work waiting for its turn commits', async () => {
    const lines = await run('no-limit');
    expect([...lines.keys()]).toEqual(['unit committed', 'exit 0']);
    expect(lines.get('unit committed')).toBeGreaterThanOrEqual(550);
  });

  it('rolls back the unit of work of a transactional handler a close gave up on, freeing the store and the process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-abandoned-'));
    try {
      const lines = await run('abandoned-unit', { FERRY_DATA_DIR: dir });
      // Its unit held SQLite's write lock for ever (no limit): the outbox relay waited for it, and
      // kept the process alive; a unit of work after the close waited 5 s, then STORE_BUSY.
      expect([...lines.keys()]).toEqual(['handling', 'closed', 'unit committed, abandoned kept 0', 'exit 0']);
      expect(lines.get('exit 0')).toBeLessThan(15_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets the process end once no handler is running, not when the limit of the last one would have passed', async () => {
    const lines = await run('done');
    expect([...lines.keys()]).toEqual(['handling', 'exit 0']);
    // The limit is 60 s; the process ends as soon as its work is done.
    expect(lines.get('exit 0')).toBeLessThan(15_000);
  });

  it.each([
    ['closed', 'a 60 s limit'],
    ['no-limit-closed', 'no limit'],
  ])(
    'lets the process end once the bus is closed, a handler given up on still hanging (%s: %s)',
    async (scenario) => {
      const lines = await run(scenario);
      expect([...lines.keys()]).toEqual(['handling', 'closed', 'exit 0']);
      expect(lines.get('exit 0')).toBeLessThan(15_000);
    },
  );
});
