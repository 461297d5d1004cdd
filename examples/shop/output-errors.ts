/**
 * Lets the process run on when its output cannot be written: a write to stdout or stderr whose
 * reader is gone (`npm run start:distributed | head`, a log shipper that restarted) fails with EPIPE,
 * and an 'error' event nobody listens for ends the process — for the supervisor, the whole shop,
 * which nothing restarts. Call it first thing in a program's main: its output is then lost, not
 * its work.
 */
export function runOnWithoutOutput(): void {
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
}

function ignore(): void {
  // The output is gone; there is nowhere left to say so.
}
