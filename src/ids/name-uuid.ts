import { createHash } from 'node:crypto';

/**
 * A UUID (version 8, RFC 9562) derived from `parts`: the same parts give the same id in any process,
 * so a step run again produces the same message id, and consumers' inboxes drop the copy.
 */
export function nameUuid(...parts: readonly string[]): string {
  const hash = createHash('sha256').update(JSON.stringify(parts)).digest();
  hash[6] = (hash[6]! & 0x0f) | 0x80;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
