/**
 * How many header lines of a request name `name`, from Node's `IncomingMessage.rawHeaders` (name,
 * value, name, value, …; names as sent). Node joins repeated lines of most headers into one value
 * with `", "`: a header that must come once, such as `Idempotency-Key`, sent on two lines reads as
 * one value holding both (`K, K`, a key nobody sent), told apart from a single line holding a comma
 * only here.
 */
export function headerLines(rawHeaders: readonly string[], name: string): number {
  const wanted = name.toLowerCase();
  let lines = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const header = rawHeaders[i] as string;
    if (header.length === wanted.length && header.toLowerCase() === wanted) lines++;
  }
  return lines;
}
