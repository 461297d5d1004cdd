import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MAX_LINE_LENGTH, prefixLines } from './prefix-lines.js';
import { sink } from './test-kit.js';

const ended = (stream: PassThrough): Promise<void> => new Promise((resolve) => stream.once('end', resolve));

describe('prefixLines', () => {
  it('prefixes whole lines across chunk boundaries, drops \\r of CRLF, and writes a last partial line at the end', async () => {
    const from = new PassThrough();
    const to = sink();
    prefixLines(from, to.stream, 'orders | ');
    const done = ended(from);
    for (const chunk of ['one\ntw', 'o\r\n', '\nthr', 'ee']) from.write(chunk);
    from.end();
    await done;
    expect(to.text()).toBe('orders | one\norders | two\norders | \norders | three\n');
  });

  it('keeps a character whose UTF-8 bytes arrive in two chunks whole', async () => {
    const from = new PassThrough();
    const to = sink();
    prefixLines(from, to.stream, '> ');
    const done = ended(from);
    const bytes = Buffer.from('crème\n');
    from.write(bytes.subarray(0, 3));
    from.write(bytes.subarray(3));
    from.end();
    await done;
    expect(to.text()).toBe('> crème\n');
  });

  it('cuts a line longer than MAX_LINE_LENGTH instead of buffering it without bound', async () => {
    const from = new PassThrough();
    const to = sink();
    prefixLines(from, to.stream, '> ');
    const done = ended(from);
    from.write('y'.repeat(MAX_LINE_LENGTH + 1)); // no newline yet: cut once it passes the limit
    from.end(`z\n${'x'.repeat(2 * MAX_LINE_LENGTH + 5)}\nlast\n`); // whole lines longer than the limit too
    await done;
    expect(to.lines().map((line) => line.length - 2)).toEqual([
      MAX_LINE_LENGTH,
      2,
      MAX_LINE_LENGTH,
      MAX_LINE_LENGTH,
      5,
      4,
    ]);
    expect(to.lines()[1]).toBe('> yz');
  });

  it('pauses the child’s stream while the destination is full, and resumes on drain', async () => {
    const from = new PassThrough();
    const written: string[] = [];
    let release: (() => void) | undefined;
    const to = new Writable({
      highWaterMark: 1,
      write(chunk, _encoding, done) {
        written.push(String(chunk));
        release = done;
      },
    });
    prefixLines(from, to, '> ');
    from.write('a\nb\n');
    await new Promise((resolve) => setImmediate(resolve));
    expect(from.isPaused()).toBe(true);
    release?.();
    await new Promise((resolve) => setImmediate(resolve));
    release?.();
    await new Promise((resolve) => setImmediate(resolve));
    expect(from.isPaused()).toBe(false);
    expect(written).toEqual(['> a\n', '> b\n']);
  });
});
