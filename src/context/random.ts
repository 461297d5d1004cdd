import { randomFillSync } from 'node:crypto';

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const pool = new Uint8Array(4096);
let offset = pool.length;

/**
 * `bytes` bytes from a pool of cryptographic randomness refilled 4 KiB at a time: one `getrandom`
 * system call per 4 KiB instead of one per id (a per-id `randomBytes` was a quarter of an HTTP
 * client's time). The pool is process-wide; callers get a copy.
 */
export function randomBytesPooled(
  bytes: number,
  into: Uint8Array = new Uint8Array(bytes),
  at = 0,
): Uint8Array {
  if (offset + bytes > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  into.set(pool.subarray(offset, offset + bytes), at);
  offset += bytes;
  return into;
}

/** Lower-case hex of `bytes` pooled random bytes, never all zeros (W3C trace and span ids must not be). */
export function randomHex(bytes: number): string {
  for (;;) {
    if (offset + bytes > pool.length) {
      randomFillSync(pool);
      offset = 0;
    }
    let hex = '';
    let zero = true;
    for (let i = 0; i < bytes; i++) {
      const b = pool[offset + i]!;
      if (b !== 0) zero = false;
      hex += HEX[b];
    }
    offset += bytes;
    if (!zero) return hex;
  }
}
