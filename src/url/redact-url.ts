/**
 * Masks the password of a URL so it can appear in logs and errors. Works on text that does not parse
 * as a URL too (`user:secret@host` without a scheme), since that is exactly what a typo produces.
 */
export function redactUrl(url: string): string {
  const scheme = url.indexOf('://');
  const authority = scheme >= 0 ? scheme + 3 : 0;
  const at = url.indexOf('@', authority);
  if (at < 0) return url;
  const colon = url.indexOf(':', authority);
  if (colon < 0 || colon > at) return url;
  return `${url.slice(0, colon)}:***${url.slice(url.lastIndexOf('@'))}`;
}
