/**
 * Text the shop's requests carry (names, ids, payment methods), as the stores and URLs can take it:
 * no control characters (NUL, line breaks, escape sequences, C1) and no lone surrogates (malformed
 * UTF-16, which JSON spells `"\ud800"`). Such text is refused with a 400 where a request is read,
 * instead of failing later: the event store refuses NUL and lone surrogates, and encodeURIComponent
 * throws on a lone surrogate.
 */
import { z } from 'zod';

const CONTROL = /\p{Cc}/u;
/** With the u flag a surrogate pair is one code point: only a lone surrogate matches. */
const LONE_SURROGATE = /\p{Surrogate}/u;

/** `schema` refusing control characters and lone surrogates. */
export function printable(schema: z.ZodString): z.ZodString {
  return schema
    .refine((value) => !CONTROL.test(value), 'must not contain control characters')
    .refine((value) => !LONE_SURROGATE.test(value), 'must not contain lone surrogates');
}

/** Printable text of 1 to `max` characters. */
export const printableText = (max: number): z.ZodString => printable(z.string().min(1).max(max));
