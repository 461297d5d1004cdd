import { maskCredentials } from '../url/redact-url.js';
import { InvalidRequestError } from './errors.js';

/** A call's query parameters (`CallOptions.query`); `undefined` values are left out. */
export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

/** A character a request target cannot hold as it is: anything but printable ASCII. */
const UNENCODED = /[^\x21-\x7e]/;

/**
 * The path of a call as sent, without its `#fragment` (never sent, as browsers and fetch do not
 * send it), so that a query appended to it lands before the fragment would have been.
 * @throws InvalidRequestError when the path does not start with `/` (a relative path or an absolute
 * URL, which would be joined to the base path as nonsense or sent to this origin for another), or
 * holds a character that is not printable ASCII (a space, a control character, `é`, `日`): it must
 * be percent-encoded, and which encoding the caller meant is not ours to guess (undici sent `é` as
 * one Latin-1 byte, which servers refuse, and refused `日` with a generic error)
 */
export function pathOfCall(path: string, request: string): string {
  if (path.charCodeAt(0) !== 47 /* / */) {
    throw new InvalidRequestError(
      request,
      // Masked as the rest of the message is: a path without its "/" may still carry `?api_key=`.
      `the path must start with "/", not ${JSON.stringify(maskCredentials(path).slice(0, 80))}`,
    );
  }
  const fragment = path.indexOf('#');
  const sent = fragment < 0 ? path : path.slice(0, fragment);
  const unencoded = UNENCODED.exec(sent);
  if (unencoded !== null) {
    throw new InvalidRequestError(
      request,
      `the path holds ${JSON.stringify(unencoded[0])} at index ${unencoded.index}: a path and its query are printable ASCII, anything else percent-encoded (encodeURIComponent(segment), or the query option)`,
    );
  }
  return sent;
}

/** The request target: the client's base path, the call's path (no fragment), then its query. */
export function requestTarget(basePath: string, path: string, query: Query | undefined): string {
  return withQuery(basePath === '' ? path : `${basePath}${path}`, query);
}

function withQuery(path: string, query: Query | undefined): string {
  if (query === undefined) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query))
    if (value !== undefined) params.append(key, String(value));
  const text = params.toString();
  if (text === '') return path;
  if (!path.includes('?')) return `${path}?${text}`;
  // A query the path leaves open (`/p?`, `/p?a=1&`) takes the parameters as they are: no empty pair.
  const last = path.charCodeAt(path.length - 1);
  return last === 63 /* ? */ || last === 38 /* & */ ? `${path}${text}` : `${path}&${text}`;
}

/**
 * The path prefix of a client's base URL, without its trailing slashes (`''` for none): `/api` for
 * `http://host/api/` or `http://host/api//`, joined before every call's path (which starts with
 * one), so that exactly one slash separates them. `url` is `text` parsed.
 * @returns undefined when the URL has a query or fragment, which the client cannot join; an empty
 * one too (`http://host/api?`, `…/api#`), which `url` no longer shows: its text is read for them
 */
export function basePathOf(url: URL, text: string): string | undefined {
  // Outside the query and fragment, a URL holds `?` and `#` only percent-encoded.
  if (url.search !== '' || url.hash !== '' || text.includes('?') || text.includes('#')) return undefined;
  let end = url.pathname.length;
  while (end > 0 && url.pathname.charCodeAt(end - 1) === 47 /* / */) end--;
  return url.pathname.slice(0, end);
}
