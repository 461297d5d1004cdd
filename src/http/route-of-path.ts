const ID_SEGMENT = /^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,})$/i;

/** The route of a path for per-route breakers: no query, and `:id` for segments that look like ids. */
export function routeOfPath(path: string): string {
  const query = path.indexOf('?');
  const segments = (query < 0 ? path : path.slice(0, query)).split('/');
  for (let i = 0; i < segments.length; i++) {
    if (ID_SEGMENT.test(segments[i]!)) segments[i] = ':id';
  }
  return segments.join('/');
}
