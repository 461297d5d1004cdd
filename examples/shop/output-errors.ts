/**
 * Lets the process run on when its output cannot be written: a write to stdout or stderr whose
 * reader is gone (`npm run start:distributed | head`, a log shipper that restarted) fails with EPIPE,
 * and an 'error' event nobody listens for ends the process — for the supervisor, the whole shop,
 * which nothing restarts. Call it first thing in a program's main: its output is then lost, not
 * its work. Calling it again adds nothing.
 */
export function runOnWithoutOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (!stream.listeners('error').includes(ignore)) stream.on('error', ignore);
  }
}

function ignore(): void {
  // The output is gone; there is nowhere left to say so.
}
