import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { onLines, tsxLoader } from './child-process.js';

/** The lines `onLines` reports for a child that writes `chunks` to stdout, one write each, then exits. */
async function linesOf(chunks: readonly string[]): Promise<string[]> {
  const script = `const chunks = ${JSON.stringify(chunks)};
    (async () => { for (const c of chunks) { process.stdout.write(Buffer.from(c, 'base64')); await new Promise((r) => setTimeout(r, 20)); } })();`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  onLines(child, (line) => lines.push(line));
  await once(child, 'close');
  return lines;
}

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

describe('onLines', () => {
  it('reports each line, one split across writes joined, and the last one without a line break', async () => {
    expect(await linesOf([b64('ready\npart'), b64('ial\n'), b64('last-no-newline')])).toEqual([
      'ready',
      'partial',
      'last-no-newline',
    ]);
  });

  it('drops the \\r of \\r\\n line ends, and decodes a character split across writes', async () => {
    const euro = Buffer.from('€\n');
    expect(await linesOf([b64('windows\r\n'), b64(euro.subarray(0, 1)), b64(euro.subarray(1))])).toEqual([
      'windows',
      '€',
    ]);
  });
});

describe('spawnFixture', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-spawn-fixture-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs a TypeScript fixture from a working directory where tsx is not installed (a monorepo root, another folder)', async () => {
    // A process whose working directory has no node_modules calls spawnFixture: before, the child
    // was started with `--import tsx`, resolved from there, and died at once (ERR_MODULE_NOT_FOUND)
    // without a line.
    const childProcess = new URL('./child-process.ts', import.meta.url).href;
    const fixture = fileURLToPath(new URL('./fixtures/typed-hello.ts', import.meta.url));
    const parent = join(dir, 'parent.mjs');
    writeFileSync(
      parent,
      `import { spawnFixture, onLines } from ${JSON.stringify(childProcess)};
      const child = spawnFixture(${JSON.stringify(fixture)}, {});
      onLines(child, (line) => console.log('child: ' + line));
      child.on('exit', (code) => console.log('exit ' + code));`,
    );
    const runner = spawn(
      process.execPath,
      ['--import', tsxLoader([fileURLToPath(import.meta.url)]), parent],
      {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const lines: string[] = [];
    onLines(runner, (line) => lines.push(line));
    await once(runner, 'close');
    expect(lines).toEqual(['child: hello 42', 'exit 0']);
  }, 20_000);

  it('says what to install when tsx is nowhere to be found: DEPENDENCY_MISSING, nothing started', () => {
    expect(() => tsxLoader([join(dir, 'fixture.ts'), join(dir, 'noop.js')])).toThrow(
      expect.objectContaining({
        code: 'DEPENDENCY_MISSING',
        message: expect.stringContaining('npm install --save-dev tsx'),
      }),
    );
  });
});
