import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { onLines, spawnFixture } from '../testing/child-process.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-flush-exit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the script `fixtures/<name>` on the store at `url` to its end: the lines it printed, its exit code. */
async function runScript(name: string, url: string): Promise<{ lines: string[]; code: number | null }> {
  const child = spawnFixture(fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)), {
    FERRY_STORE_URL: url,
  });
  const lines: string[] = [];
  onLines(child, (line) => lines.push(line));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { lines, code };
}

const stores = (file: string): [string, string][] => [
  ['memory://', 'memory'],
  [`sqlite:${join(dir, file)}`, 'sqlite'],
];

describe('outbox.flush() in a script with nothing else to keep the process alive', () => {
  it.each(stores('flush.db'))(
    'waits for the round it asked for, then the script goes on and ends by itself (%s)',
    async (url) => {
      const { lines, code } = await runScript('flush-and-exit.ts', url);
      // Before, the process ended while flush() waited (exit 13, an unsettled top-level await), its
      // message not yet published and nothing after the flush run.
      expect(lines).toEqual([
        'flushed, published 1',
        expect.stringMatching(/^closed, handled [01]$/),
        'exit 0',
      ]);
      expect(code).toBe(0);
    },
    30_000,
  );
});

describe('store.close() in a script with nothing else to keep the process alive', () => {
  it.each(stores('close.db'))(
    'waits for the outbox writes called before it and resolves; the script goes on and ends by itself (%s)',
    async (url) => {
      const { lines, code } = await runScript('close-and-exit.ts', url);
      // Before, the process ended while close() waited for the relay's round (unref'd timers): exit 13,
      // close() never resolved, nothing after it run.
      expect(lines).toEqual(['closed, writes fulfilled fulfilled', 'exit 0']);
      expect(code).toBe(0);
    },
    30_000,
  );
});
