/**
 * Names of query parameters whose values are secrets (`?password=`, which pg reads as the password,
 * `?token=`, `?api_key=`, `?X-Amz-Signature=`, `?sig=`, `?auth=`, `?jwt=`, `?session=`…), read
 * percent-decoded (`toke%6E` is `token` to the server): masked like the password of the authority.
 */
const SECRET_NAME = /pass|pwd|secret|token|key|sig|auth|jwt|session|credential/i;
/** One query parameter: its separator, raw name and raw value. */
const PARAMETER = /([?&])([^=&#]*)=([^&#]*)/g;

function isSecretName(raw: string): boolean {
  if (SECRET_NAME.test(raw)) return true;
  try {
    return SECRET_NAME.test(decodeURIComponent(raw.replaceAll('+', ' ')));
  } catch {
    return false;
  }
}

/**
 * Masks the password of a URL so it can appear in logs and errors, and the values of query
 * parameters that hold secrets ({@link SECRET_NAME}). Works on text that does not parse as a URL
 * too (`user:secret@host` without a scheme), since that is exactly what a typo produces.
 */
export function redactUrl(url: string): string {
  const redacted = maskSecretParameters(redactAuthority(url));
  // For a message: a megabyte of text given as a URL is not quoted whole.
  return redacted.length > MAX_SHOWN ? `${redacted.slice(0, MAX_SHOWN)}…` : redacted;
}

/**
 * `text` (a request path with its query, a URL without credentials) with the values of its secret
 * query parameters masked ({@link SECRET_NAME}), nothing else changed and nothing cut: what
 * ServiceClient shows of a call's target in its errors and events.
 */
export function maskSecretParameters(text: string): string {
  return text.replace(PARAMETER, (parameter, separator: string, name: string) =>
    isSecretName(name) ? `${separator}${name}=***` : parameter,
  );
}

/** Longest redacted URL given back: URLs longer than this are cut (after masking). */
const MAX_SHOWN = 1000;

function redactAuthority(url: string): string {
  const scheme = url.indexOf('://');
  const authority = scheme >= 0 ? scheme + 3 : 0;
  const at = url.indexOf('@', authority);
  if (at < 0) return url;
  const colon = url.indexOf(':', authority);
  if (colon < 0 || colon > at) return url;
  return `${url.slice(0, colon)}:***${url.slice(url.lastIndexOf('@'))}`;
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
