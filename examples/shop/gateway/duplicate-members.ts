/**
 * The first member name that appears twice in one object of `json` (valid JSON text), compared as
 * JSON reads names (`"a"` and `"\u0061"` are one name), or `undefined`. `JSON.parse` keeps the last
 * of them without a word: `{"quantity":1,"quantity":999}` would order 999. Iterative, so that a body
 * nested however deep is scanned without growing the stack.
 */
export function firstDuplicateMember(json: string): string | undefined {
  // One entry per open object (its names so far) or array (null).
  const open: (Set<string> | null)[] = [];
  let nameNext = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) {
      let end = i + 1;
      let escaped = false;
      for (; end < json.length; end++) {
        const d = json.charCodeAt(end);
        if (d === BACKSLASH) {
          escaped = true;
          end++;
        } else if (d === QUOTE) break;
      }
      if (nameNext) {
        const name = escaped ? (JSON.parse(json.slice(i, end + 1)) as string) : json.slice(i + 1, end);
        const names = open[open.length - 1] as Set<string>;
        if (names.has(name)) return name;
        names.add(name);
        nameNext = false;
      }
      i = end;
    } else if (c === OPEN_BRACE) {
      open.push(new Set());
      nameNext = true;
    } else if (c === OPEN_BRACKET) {
      open.push(null);
      nameNext = false;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      open.pop();
      nameNext = false;
    } else if (c === COMMA) {
      nameNext = open.length > 0 && open[open.length - 1] !== null;
    }
  }
  return undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
