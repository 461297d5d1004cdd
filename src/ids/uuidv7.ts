import { asciiOf, randomBytesPooled, writeAscii, writeHex } from '../context/random.js';

const bytes = new Uint8Array(16);
let lastMs = -1;

/**
 * A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Ids sort by creation
 * time, which keeps database indexes on them (inbox, outbox, event ids) append-mostly. Within one
 * millisecond the random part is incremented (RFC 9562 §6.2, method 2), so ids stay unique and
 * ordered without drawing new randomness per id. The string is built in one flat allocation.
 * `ms` lets a caller that also stamps a time read the clock once; an earlier time than the last id's
 * is treated as the same millisecond, so ids stay ordered when the clock steps back.
 */
export function uuidv7(ms: number = Date.now()): string {
  if (ms > lastMs) {
    lastMs = ms;
    bytes[0] = Math.floor(ms / 2 ** 40) & 0xff;
    bytes[1] = Math.floor(ms / 2 ** 32) & 0xff;
    bytes[2] = (ms >>> 24) & 0xff;
    bytes[3] = (ms >>> 16) & 0xff;
    bytes[4] = (ms >>> 8) & 0xff;
    bytes[5] = ms & 0xff;
    randomBytesPooled(10, bytes, 6);
    bytes[6] = 0x70 | (bytes[6]! & 0x0f); // version 7
    bytes[8] = 0x80 | (bytes[8]! & 0x3f); // variant 10
  } else {
    // 56 bits of counter headroom per millisecond: overflow is out of reach.
    for (let i = 15; i >= 9; i--) {
      bytes[i] = (bytes[i]! + 1) & 0xff;
      if (bytes[i] !== 0) break;
    }
  }
  writeHex(bytes, 0, 4, 0);
  writeAscii('-', 8);
  writeHex(bytes, 4, 2, 9);
  writeAscii('-', 13);
  writeHex(bytes, 6, 2, 14);
  writeAscii('-', 18);
  writeHex(bytes, 8, 2, 19);
  writeAscii('-', 23);
  writeHex(bytes, 10, 6, 24);
  return asciiOf(36);
}
