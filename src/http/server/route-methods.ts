/**
 * The methods an application's routes serve, by path pattern: what tells a 405 (a path served under
 * other methods) from a 404 (a path served under none), and what the 405's `Allow` header names.
 */
export class RouteMethods {
  readonly #routes = new Map<string, { readonly pattern: RegExp; readonly methods: Set<string> }>();
  readonly #caseSensitive: boolean;
  readonly #ignoreTrailingSlash: boolean;

  constructor(
    options: {
      readonly caseSensitive?: boolean | undefined;
      readonly ignoreTrailingSlash?: boolean | undefined;
    } = {},
  ) {
    this.#caseSensitive = options.caseSensitive ?? true;
    this.#ignoreTrailingSlash = options.ignoreTrailingSlash ?? false;
  }

  /** Records a route: its URL in the router's syntax (`/orders/:id`, `/files/*`) and its methods. */
  add(url: string, methods: string | readonly string[]): void {
    let route = this.#routes.get(url);
    if (route === undefined) {
      route = { pattern: pathPattern(url, this.#caseSensitive), methods: new Set() };
      this.#routes.set(url, route);
    }
    for (const method of typeof methods === 'string' ? [methods] : methods) {
      route.methods.add(method.toUpperCase());
      // The router answers HEAD for every GET route it exposes one for; Allow names it too.
      if (method.toUpperCase() === 'GET') route.methods.add('HEAD');
    }
  }

  /** The methods some route serves at this path (a query is ignored), sorted; empty when none does. */
  allowed(path: string): string[] {
    const query = path.indexOf('?');
    let bare = query < 0 ? path : path.slice(0, query);
    if (this.#ignoreTrailingSlash && bare.length > 1 && bare.endsWith('/')) bare = bare.slice(0, -1);
    const methods = new Set<string>();
    for (const route of this.#routes.values()) {
      if (route.pattern.test(bare)) for (const method of route.methods) methods.add(method);
    }
    return [...methods].sort();
  }
}

/**
 * A route URL as a regular expression over paths: `:name` (and `:name(regex)`, its regex not
 * checked) one non-empty segment or part of one, `*` anything, `::` a literal colon, the rest
 * literally.
 */
export function pathPattern(url: string, caseSensitive = true): RegExp {
  let source = '';
  for (let i = 0; i < url.length; ) {
    const char = url[i] as string;
    if (char === ':' && url[i + 1] === ':') {
      source += ':';
      i += 2;
    } else if (char === ':') {
      i++;
      while (i < url.length && /[\w$]/.test(url[i] as string)) i++;
      if (url[i] === '(') i = endOfGroup(url, i);
      // A parameter ends at the next slash, or at the literal character after it (`:from-:to`), as
      // in the router: no backtracking between two parameters of one segment.
      const next = url[i];
      source +=
        next === undefined || next === '/' || next === ':' || next === '*'
          ? '[^/]+'
          : `[^/${next.replace(/[\]\\^-]/g, '\\$&')}]+`;
    } else if (char === '*') {
      source += '.*';
      i++;
    } else {
      source += char.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      i++;
    }
  }
  return new RegExp(`^${source}$`, caseSensitive ? '' : 'i');
}

/** The index after the `)` closing the group that opens at `start`, nested groups counted. */
function endOfGroup(url: string, start: number): number {
  let depth = 0;
  for (let i = start; i < url.length; i++) {
    if (url[i] === '\\') i++;
    else if (url[i] === '(') depth++;
    else if (url[i] === ')' && --depth === 0) return i + 1;
  }
  return url.length;
}
