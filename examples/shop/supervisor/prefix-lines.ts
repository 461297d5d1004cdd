import type { Readable, Writable } from 'node:stream';

/** A child that prints this much without a newline gets it cut into lines, so one chatty process cannot fill the supervisor's memory. */
export const MAX_LINE_LENGTH = 64 * 1024;

/**
 * Copies `from` to `to` line by line, each line led by `prefix`. Bytes are decoded as UTF-8 across
 * chunk boundaries; `\r\n` becomes `\n`; a last line without a newline is written when `from` ends.
 * While `to` is full (a slow pipe reading the supervisor), `from` is paused, so the child waits
 * instead of the supervisor buffering without bound.
 */
export function prefixLines(from: Readable, to: Writable, prefix: string): void {
  let pending = '';
  const writeLine = (line: string): void => {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (!to.write(`${prefix}${text}\n`) && !from.isPaused()) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  };
  const write = (line: string): void => {
    let rest = line;
    for (; rest.length > MAX_LINE_LENGTH; rest = rest.slice(MAX_LINE_LENGTH))
      writeLine(rest.slice(0, MAX_LINE_LENGTH));
    writeLine(rest);
  };
  from.setEncoding('utf8');
  from.on('data', (chunk: string) => {
    pending += chunk;
    for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
      write(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
    for (; pending.length > MAX_LINE_LENGTH; pending = pending.slice(MAX_LINE_LENGTH)) {
      writeLine(pending.slice(0, MAX_LINE_LENGTH));
    }
  });
  from.on('end', () => {
    if (pending !== '') write(pending);
    pending = '';
  });
  // A child's pipe that breaks is the child's business; its exit is what the supervisor acts on.
  from.on('error', () => {});
}
