/**
 * `text` itself when it has at most `max` UTF-16 units, else its start ending in `…`, `max` units at
 * most, never cut between the two halves of a surrogate pair.
 */
export function cutAt(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}
