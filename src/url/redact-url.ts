/**
 * Names of query parameters whose values are secrets (`?password=`, which pg reads as the password,
 * `?token=`, `?api_key=`, `?X-Amz-Signature=`, `?sig=`, `?auth=`, `?jwt=`, `?session=`…), read
 * percent-decoded (`toke%6E` is `token` to the server): masked like the password of the authority.
 */
const SECRET_NAME = /pass|pwd|secret|token|key|sig|auth|jwt|session|credential/i;
/**
 * One parameter of a query (or of a fragment, `#access_token=`, or after a `;`): its separator, raw
 * name and raw value. The value runs to the next `&`, `#` or white space (`;` is no separator to most
 * servers: `?token=a;b` is the token `a;b`); a parameter after a `;` in the value of one that is not
 * secret is looked at on its own ({@link maskSecretParameters}).
 */
const PARAMETER = /([?&;#])([^=&#;?\s]{0,256})=([^&#\s]*)/g;
/**
 * The user information of each URL in a text: its scheme and the longest run of characters other
 * than white space that ends in an `@` (a password may hold an unencoded `@`, `/` or `#`). Both
 * bounded, as the parameters' names are: the work stays linear in the text whatever it holds.
 */
const USERINFO = /([a-z][a-z0-9+.-]{0,31}:\/\/)(\S{0,2048})@/gi;

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
  // not; a text quoting several, URL by URL.
  const single = url.indexOf('://') === url.lastIndexOf('://');
  // For a message: a megabyte of text given as a URL is not quoted whole.
  return single ? cutAt(maskSecretParameters(redactAuthority(url)), MAX_SHOWN) : maskedAndCut(url, MAX_SHOWN);
}

/**
 * How far past a cut the masking reads: a URL's scheme and user information span at most this
 * much ({@link USERINFO}), so a password that starts before the cut is masked as in the whole text.
 */
const USERINFO_REACH = 2100;

/**
 * `text` masked as {@link maskCredentials} masks it, cut to `max` UTF-16 units (ending in `…`, never
 * between the halves of a surrogate pair): the masking reads only what the cut keeps and
 * {@link USERINFO_REACH} more, so a megabyte of text costs no more than its start.
 */
export function maskedAndCut(text: string, max: number): string {
  const read = text.length > max + USERINFO_REACH ? text.slice(0, max + USERINFO_REACH) : text;
  return cutAt(maskCredentials(read), max);
}

function cutAt(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

/**
 * `text` (a message, a stack, a request path with its query) with the credentials of every URL it
 * quotes masked (`scheme://user:***@`; `https://***@` for a web URL's user name alone) and the values of
 * secret query parameters ({@link SECRET_NAME}); nothing else changed and nothing cut. What Ferry
 * shows of an error's text in its logs and dead letters, and of a call's target in ServiceClient's
 * errors and events.
 */
export function maskCredentials(text: string): string {
  return maskSecretParameters(text.includes('://') ? text.replace(USERINFO, maskUserinfo) : text);
}

function maskUserinfo(whole: string, scheme: string, run: string): string {
  const pathStart = run.search(/[/?#]/);
  const colon = run.indexOf(':');
  // user:password before any path, or a user name alone on the web: credentials.
  if (pathStart < 0 && colon >= 0) return `${scheme}${run.slice(0, colon)}:***@`;
  if (pathStart < 0 && isTokenScheme(scheme.slice(0, -3))) return `${scheme}***@`;
  // A password holding an unencoded / ? or #: masked up to the last @, as a typo would leave it.
  if (colon >= 0 && colon < pathStart) return `${scheme}${run.slice(0, colon)}:***@`;
  // The @ is in a path or query (https://host/users/@ada): not credentials, but the run may quote
  // another URL that has some (?next=amqp://u:p@h).
  const inner = `${run}@`;
  const masked = inner.replace(USERINFO, maskUserinfo);
  return masked === inner ? whole : `${scheme}${masked}`;
}

/**
 * `text` with the values of its secret parameters masked ({@link SECRET_NAME}), nothing else changed.
 */
function maskSecretParameters(text: string): string {
  return text.replace(PARAMETER, (parameter, separator: string, name: string, value: string) => {
    if (isSecretName(name)) return `${separator}${name}=***`;
    const semicolon = value.indexOf(';');
    // ?sslmode=require;password=…: the part after the ; may be a parameter of its own.
    return semicolon < 0
      ? parameter
      : `${separator}${name}=${value.slice(0, semicolon)}${maskSecretParameters(value.slice(semicolon))}`;
  });
}

/** Longest redacted URL given back: URLs longer than this are cut (after masking). */
const MAX_SHOWN = 1000;

/**
 * On the web a user name without a password is often a token (`https://<token>@github.com/…`, and
 * ServiceClient refuses it as credentials); elsewhere (`postgres://app@db`, `amqp://guest@host`) it
 * is a role, shown.
 */
function isTokenScheme(scheme: string): boolean {
  return /^(?:https?|wss?)$/i.test(scheme);
}

function redactAuthority(url: string): string {
  const scheme = url.indexOf('://');
  const authority = scheme >= 0 ? scheme + 3 : 0;
  const at = url.indexOf('@', authority);
  if (at < 0) return url;
  const colon = url.indexOf(':', authority);
  if (colon >= 0 && colon < at) return `${url.slice(0, colon)}:***${url.slice(url.lastIndexOf('@'))}`;
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
  for (const match of parsed.search.matchAll(PARAMETER)) {
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
