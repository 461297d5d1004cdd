/**
 * `timestamp` (without time zone) and `date` values, and arrays of them, for the service's own SQL.
 * pg's parsers read DateStyle ISO only, the style Ferry's connections use, and give `null` for any
 * other text: a unit of work whose SQL set another (`SET LOCAL DateStyle = 'SQL'`) lost every such
 * value. Text in DateStyle ISO (and `infinity`) goes to pg's parser, the application's if it set one;
 * any other comes as PostgreSQL wrote it (`01/02/2024 03:04:05.25`), never read as another date.
 */

const TIMESTAMP_OID = 1114;
const TIMESTAMP_ARRAY_OID = 1115;
const DATE_OID = 1082;
const DATE_ARRAY_OID = 1182;

/** DateStyle ISO output, any year (BC too), or an infinity, which every DateStyle writes alike. */
const ISO_TIMESTAMP = /^(?:\d{4,}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?(?: BC)?|-?infinity)$/;
const ISO_DATE = /^(?:\d{4,}-\d\d-\d\d(?: BC)?|-?infinity)$/;

type Parse = (text: string) => unknown;

/**
 * The text parser of `oid` when it is one of these types (else `undefined`): `parserOf` gives pg's
 * parser of a type, `parseArray` reads an array's text, its non-null items by `item`.
 */
export function localTimeParser(
  oid: number,
  parserOf: (oid: number) => Parse,
  parseArray: (source: string, item: Parse) => unknown[],
): Parse | undefined {
  const iso =
    oid === TIMESTAMP_OID || oid === TIMESTAMP_ARRAY_OID
      ? ISO_TIMESTAMP
      : oid === DATE_OID || oid === DATE_ARRAY_OID
        ? ISO_DATE
        : undefined;
  if (iso === undefined) return undefined;
  if (oid === TIMESTAMP_OID || oid === DATE_OID) {
    const parse = parserOf(oid);
    return (text) => (iso.test(text) ? parse(text) : text);
  }
  const parseItem = parserOf(oid === TIMESTAMP_ARRAY_OID ? TIMESTAMP_OID : DATE_OID);
  // Items of a multidimensional array are arrays.
  type Items = (string | null | Items)[];
  const allIso = (items: Items): boolean =>
    items.every((item) => item === null || (Array.isArray(item) ? allIso(item) : iso.test(item)));
  const read = (items: Items): unknown[] =>
    items.map((item) =>
      item === null ? null : Array.isArray(item) ? read(item) : iso.test(item) ? parseItem(item) : item,
    );
  return (text) => {
    const items = parseArray(text, (item) => item) as Items;
    // One DateStyle writes the whole array: in ISO, pg's array parser reads it as it always did.
    return allIso(items) ? parserOf(oid)(text) : read(items);
  };
}
