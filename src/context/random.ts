import { randomFillSync } from 'node:crypto';

const pool = new Uint8Array(65_536);
let offset = pool.length;
/** ASCII codes of the hex digits of each byte value: two per byte. */
const HEX_CODES = new Uint8Array(512);
for (let i = 0; i < 256; i++) {
  const hex = i.toString(16).padStart(2, '0');
  HEX_CODES[i * 2] = hex.charCodeAt(0);
  HEX_CODES[i * 2 + 1] = hex.charCodeAt(1);
}
const scratch = Buffer.alloc(128);

function take(bytes: number): number {
  if (offset + bytes > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const at = offset;
  offset += bytes;
  return at;
}

/**
 * `bytes` bytes from a pool of cryptographic randomness refilled 64 KiB at a time. Each fill costs
 * about 7 µs whatever its size here, so per-id fills (a per-id `randomBytes`) were a quarter of an
 * HTTP client's time, and 4 KiB fills still a tenth; at 64 KiB the cost is about 0.3 ns a byte. The
 * pool is process-wide; callers get a copy.
 */
export function randomBytesPooled(
  bytes: number,
  into: Uint8Array = new Uint8Array(bytes),
  at = 0,
): Uint8Array {
  const from = take(bytes);
  into.set(pool.subarray(from, from + bytes), at);
  return into;
}

/** Writes the hex digits of `source[from, from + bytes)` into the scratch buffer at `at`. */
function hexInto(source: Uint8Array, from: number, bytes: number, at: number): void {
  for (let i = 0; i < bytes; i++) {
    const b = source[from + i]! * 2;
    scratch[at + i * 2] = HEX_CODES[b]!;
    scratch[at + i * 2 + 1] = HEX_CODES[b + 1]!;
  }
}

/**
 * Builds a string from ASCII parts in one flat allocation. Concatenating two-character pieces made
 * deep rope strings that the socket write then had to flatten: about a tenth of an HTTP client's
 * time went there.
 */
export function asciiOf(length: number): string {
  return scratch.toString('latin1', 0, length);
}

/** Writes the hex of `bytes` pooled random bytes, never all zeros, into the scratch buffer at `at`. */
export function writeRandomHex(bytes: number, at: number): void {
  for (;;) {
    const from = take(bytes);
    let zero = true;
    for (let i = 0; i < bytes; i++) if (pool[from + i] !== 0) zero = false;
    if (zero) continue;
    hexInto(pool, from, bytes, at);
    return;
  }
}

/** Lower-case hex of `bytes` pooled random bytes, never all zeros (W3C trace and span ids must not be). */
export function randomHex(bytes: number): string {
  writeRandomHex(bytes, 0);
  return asciiOf(bytes * 2);
}

/** Hex-encodes `source` bytes into the scratch buffer at `at` (for callers assembling an id with `asciiOf`). */
export function writeHex(source: Uint8Array, from: number, bytes: number, at: number): void {
  hexInto(source, from, bytes, at);
}

/** Writes ASCII `text` into the scratch buffer at `at` (short texts: a loop beats a native call). */
export function writeAscii(text: string, at: number): void {
  for (let i = 0; i < text.length; i++) scratch[at + i] = text.charCodeAt(i);
}
