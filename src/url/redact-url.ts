import { cutAt } from '../errors/cut-text.js';

/**
 * Names of query parameters whose values are secrets (`?password=`, which pg reads as the password,
 * `?token=`, `?api_key=`, `?X-Amz-Signature=`, `?sig=`, `?auth=`, `?jwt=`, `?session=`…), read
 * percent-decoded (`toke%6E` is `token` to the server): masked like the password of the authority.
 */
const SECRET_NAME = /pass|pwd|secret|token|key|sig|auth|jwt|session|credential/i;
/**
 * A parameter's start, in a query, a fragment (`#access_token=`) or after a `;`: its separator and
 * raw name, bounded (the work stays linear in the text whatever it holds).
 */
const PARAMETER = /([?&;#])([^=&#;?\s"'<>`]{0,256})=/g;
/** Where the value of a parameter that is no secret ends: the next parameter may start there. */
const VALUE_END = /[&#;?\s"'<>`]/g;
/**
 * Where a secret value ends: it runs on over `;` and `?`, which most servers do not split at
 * (`?token=a;b` is the token `a;b`), up to the next `&`, `#`, white space or quote.
 */
const SECRET_END = /[&#\s"'<>`]/g;
/**
 * Where the authority of a URL in a text ends: RFC 3986's `/`, `?` and `#` (and `\\`, a slash to
 * browsers), and what ends a URL in a text, white space and quotes (a URL inside JSON).
 */
const AUTHORITY_END = /[/?#\\\s"'<>`]/g;
/** Where a word ends in a text: white space and quotes. */
const WORD_END = /[\s"'<>`]/g;
const SCHEME_CHAR = /[a-z0-9+.-]/i;
/** Longest scheme read before a `://`, and longest authority after it (a JWT as password fits). */
const MAX_SCHEME = 32;
const MAX_AUTHORITY = 8192;

function isSecretName(raw: string): boolean {
  if (SECRET_NAME.test(raw)) return true;
  try {
    return SECRET_NAME.test(decodeURIComponent(raw.replaceAll('+', ' ')));
  } catch {
    return false;
  }
}

/**
 * Masks the password of a URL so it can appear in logs and errors (an http(s) or ws(s) URL's user
 * name without a password too, `https://<token>@host`: it may be a token), and the values of query parameters that hold
 * secrets ({@link SECRET_NAME}). Works on text that does not parse as a URL too (`user:secret@host`
 * without a scheme, since that is exactly what a typo produces, or a message quoting several URLs).
 */
export function redactUrl(url: string): string {
  // One URL (or none: a typo) is masked from its authority's first : to its last @, white space or
  // not; a text quoting several, or with words before its URL, URL by URL.
  const mark = url.indexOf('://');
  const single =
    mark === url.lastIndexOf('://') && (mark < 0 || /^[a-z][a-z0-9+.-]*$/i.test(url.slice(0, mark)));
  // For a message: a megabyte of text given as a URL is not quoted whole.
  if (!single) return maskedAndCut(url, MAX_SHOWN);
  // Its parameters read only as far as the cut keeps (and a name's length past it).
  return cutAt(maskSecretParameters(redactAuthority(url).slice(0, MAX_SHOWN + 300)), MAX_SHOWN);
}

/**
 * How far past a cut the masking reads: a URL's scheme and authority span at most this much
 * ({@link MAX_AUTHORITY}), so a password that starts before the cut is masked as in the whole text.
 */
const USERINFO_REACH = MAX_SCHEME + 3 + MAX_AUTHORITY;

/**
 * `text` masked as {@link maskCredentials} masks it, cut to `max` UTF-16 units (ending in `…`, never
 * between the halves of a surrogate pair): the masking reads only what the cut keeps and
 * {@link USERINFO_REACH} more, so a megabyte of text costs no more than its start.
 */
export function maskedAndCut(text: string, max: number): string {
  const read = text.length > max + USERINFO_REACH ? text.slice(0, max + USERINFO_REACH) : text;
  return cutAt(maskCredentials(read), max);
}

/**
 * `text` (a message, a stack, a request path with its query) with the credentials of every URL it
 * quotes masked (`scheme://user:***@`; `https://***@` for a web URL's user name alone) and the values
 * of secret parameters ({@link SECRET_NAME}); nothing else changed and nothing cut. What Ferry shows
 * of an error's text in its logs and dead letters, and of a call's target in ServiceClient's errors
 * and events. Linear in the text, whatever it holds.
 */
export function maskCredentials(text: string): string {
  return maskSecretParameters(text.includes('://') ? maskUserinfos(text) : text);
}

/**
 * The first match of `pattern` at or after a position, for positions asked in increasing order
 * (each search starts where the last one's answer no longer holds): `text.length` for none.
 */
function finder(text: string, pattern: RegExp): (from: number) => number {
  const search = new RegExp(pattern.source, 'g');
  let searchedFrom = Number.POSITIVE_INFINITY;
  let found = -1;
  return (from) => {
    if (from >= searchedFrom && from <= found) return found;
    search.lastIndex = from;
    found = search.exec(text)?.index ?? text.length;
    searchedFrom = from;
    return found;
  };
}

/**
 * Each URL's user information masked: within its authority (up to `/ ? #`, white space or a quote),
 * the part before the last `@`. A password holding an unencoded `/ ? #` ends the authority early:
 * then an authority `user:pass` (not `host:port`) followed, in the same word, by an `@` is masked up
 * to that `@`.
 */
function maskUserinfos(text: string): string {
  const authorityEnd = finder(text, AUTHORITY_END);
  const wordEnd = finder(text, WORD_END);
  const nextAt = finder(text, /@/);
  let out = '';
  let copied = 0;
  for (let mark = text.indexOf('://'); mark >= 0; mark = text.indexOf('://', mark + 3)) {
    const start = mark + 3;
    if (start <= copied) continue;
    let schemeStart = mark;
    while (
      schemeStart > 0 &&
      mark - schemeStart < MAX_SCHEME &&
      SCHEME_CHAR.test(text[schemeStart - 1] ?? '')
    ) {
      schemeStart--;
    }
    const scheme = text.slice(schemeStart, mark);
    if (!/^[a-z]/i.test(scheme)) continue;
    const end = Math.min(authorityEnd(start), start + MAX_AUTHORITY);
    const authority = text.slice(start, end);
    const at = authority.lastIndexOf('@');
    const colon = authority.indexOf(':');
    let from: number;
    let to: number;
    if (at >= 0 && colon >= 0 && colon < at) {
      from = start + colon + 1;
      to = start + at;
    } else if (at > 0 && isTokenScheme(scheme)) {
      from = start;
      to = start + at;
    } else if (at < 0 && colon >= 0 && isCutPassword(authority, colon, text[end] ?? '')) {
      const later = nextAt(end);
      if (later >= Math.min(wordEnd(end), start + MAX_AUTHORITY)) continue;
      from = start + colon + 1;
      to = later;
    } else {
      continue;
    }
    out += `${text.slice(copied, from)}***`;
    copied = to;
  }
  return copied === 0 ? text : out + text.slice(copied);
}

/**
 * An authority without an `@` that may be the start of a password an unencoded `/ ? #` cut:
 * `user:pa` (not `host:8080`, not an IPv6 `[::1]`), ended by one of those three.
 */
function isCutPassword(authority: string, colon: number, ender: string): boolean {
  return (
    '/?#'.includes(ender) &&
    ender !== '' &&
    !authority.startsWith('[') &&
    !/^\d*$/.test(authority.slice(colon + 1))
  );
}

/**
 * `text` with the values of its secret parameters masked ({@link SECRET_NAME}), nothing else
 * changed. A value that is no secret ends at the next separator, so a parameter nested in it
 * (`?next=/cb?token=…`) is looked at too.
 */
function maskSecretParameters(text: string): string {
  if (!text.includes('=')) return text;
  const parameter = new RegExp(PARAMETER.source, 'g');
  const valueEnd = finder(text, VALUE_END);
  const secretEnd = finder(text, SECRET_END);
  let out = '';
  let copied = 0;
  for (let match = parameter.exec(text); match !== null; match = parameter.exec(text)) {
    const value = match.index + match[0].length;
    if (isSecretName(match[2] ?? '')) {
      const end = secretEnd(value);
      out += `${text.slice(copied, value)}***`;
      copied = end;
      parameter.lastIndex = end;
    } else {
      parameter.lastIndex = valueEnd(value);
    }
  }
  return copied === 0 ? text : out + text.slice(copied);
}

/** Longest redacted URL given back: URLs longer than this are cut (after masking). */
const MAX_SHOWN = 1000;

/**
 * On the web a user name without a password is often a token (`https://<token>@github.com/…`, and
 * ServiceClient refuses it as credentials); elsewhere (`postgres://app@db`, `amqp://guest@host`) it
 * is a role, shown.
 */
function isTokenScheme(scheme: string): boolean {
  return /(?:^|\+)(?:https?|wss?)$/i.test(scheme);
}

function redactAuthority(url: string): string {
  const scheme = url.indexOf('://');
  const authority = scheme >= 0 ? scheme + 3 : 0;
  const at = url.indexOf('@', authority);
  if (at < 0) return url;
  const colon = url.indexOf(':', authority);
  if (colon >= 0 && colon < at) {
    // Up to the last @ before the path that follows the first: a password may hold an @, / or #,
    // while a later @ in the path or query (`?email=ada@example.com`) is not the host's.
    const path = url.slice(at).search(/[/?#]/);
    const end = url.lastIndexOf('@', path < 0 ? url.length : at + path);
    return `${url.slice(0, colon)}:***${url.slice(end)}`;
  }
  // An @ after a path is not credentials.
  if (scheme >= 0 && isTokenScheme(url.slice(0, scheme)) && !/[\s/?#]/.test(url.slice(authority, at))) {
    return `${url.slice(0, authority)}***${url.slice(at)}`;
  }
  return url;
}

/**
 * The secrets a URL carries (its password and the values of its secret query parameters), raw and
 * percent-decoded: what to mask in a driver's message that may quote them.
 */
export function urlSecrets(url: string): string[] {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return [];
  }
  const raw = [parsed.password];
  for (const match of parsed.search.matchAll(/([?&;])([^=&#;]*)=([^&#]*)/g)) {
    if (isSecretName(match[2] ?? '')) raw.push(match[3] ?? '');
  }
  const secrets = new Set<string>();
  for (const secret of raw) {
    if (secret === '') continue;
    secrets.add(secret);
    try {
      secrets.add(decodeURIComponent(secret.replaceAll('+', ' ')));
      secrets.add(decodeURIComponent(secret));
    } catch {
      // A malformed escape: the raw form is masked.
    }
  }
  // Longest first, so that a secret holding another is masked whole.
  return [...secrets].sort((a, b) => b.length - a.length);
}
