import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { onLines } from './child-process.js';

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
