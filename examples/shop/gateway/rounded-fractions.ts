/**
 * The first number of `json` (valid JSON text) written with a fractional part that JavaScript's
 * numbers cannot hold, so that `JSON.parse` rounds it to a whole number: `0.99999999999999999`
 * reads as `1`, and a quantity or price written as a fraction would pass as whole. `undefined` when
 * there is none. Whole numbers written with zeros after the point (`2.0`, `1.50e1`) are whole, and
 * are not reported.
 */
export function firstRoundedFraction(json: string): string | undefined {
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) {
      // Past the string: a digit inside one is text.
      for (i++; i < json.length; i++) {
        const d = json.charCodeAt(i);
        if (d === BACKSLASH) i++;
        else if (d === QUOTE) break;
      }
    } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
      NUMBER.lastIndex = i;
      const match = NUMBER.exec(json);
      if (match === null) continue;
      const literal = match[0];
      i += literal.length - 1;
      if (!isWholeLiteral(match[1]!, match[2] ?? '', match[3]) && Number.isInteger(Number(literal))) {
        return literal;
      }
    }
  }
  return undefined;
}

/** Whether digits `whole`.`fraction` times ten to `exponent` is a whole number, read exactly. */
function isWholeLiteral(whole: string, fraction: string, exponent: string | undefined): boolean {
  const digits = (whole + fraction).replace(/0+$/, '');
  if (/^0*$/.test(digits)) return true;
  const trailingZeros = whole.length + fraction.length - digits.length;
  // The exponent's size does not matter past the digits' count: a huge one is whole, a hugely
  // negative one is not (JSON.parse reads them as Infinity or 0, which callers refuse anyway).
  const power = exponent === undefined ? 0 : Math.max(-1e6, Math.min(1e6, Number(exponent)));
  return power + trailingZeros - fraction.length >= 0;
}

const NUMBER = /-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/y;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;
