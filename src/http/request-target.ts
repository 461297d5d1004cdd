import { InvalidRequestError } from './errors.js';

/** A call's query parameters (`CallOptions.query`); `undefined` values are left out. */
export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

/**
 * The path of a call as sent, without its `#fragment` (never sent, as browsers and fetch do not
 * send it), so that a query appended to it lands before the fragment would have been.
 * @throws InvalidRequestError when the path does not start with `/` (a relative path or an absolute
 * URL, which would be joined to the base path as nonsense or sent to this origin for another)
 */
export function pathOfCall(path: string, request: string): string {
  if (path.charCodeAt(0) !== 47 /* / */) {
    throw new InvalidRequestError(
      request,
      `the path must start with "/", not ${JSON.stringify(path.slice(0, 80))}`,
    );
  }
  const fragment = path.indexOf('#');
  return fragment < 0 ? path : path.slice(0, fragment);
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
  return `${path}${path.includes('?') ? '&' : '?'}${text}`;
}

/**
 * The path prefix of a client's base URL, without its trailing `/` (`''` for none): `/api` for
 * `http://host/api/`, joined before every call's path.
 * @returns undefined when the URL has a query or fragment, which the client cannot join
 */
export function basePathOf(url: URL): string | undefined {
  if (url.search !== '' || url.hash !== '') return undefined;
  return url.pathname.endsWith('/') ? url.pathname.slice(0, -1) : url.pathname;
}
