/**
 * A `LIMIT` taken from bound parameter `param` (`?`, or a name such as `@limit`), written so that
 * SQLite runs the statement as prepared. A bare parameter in `LIMIT` is read by SQLite's planner
 * (3.47 and later) and marks the statement to be prepared again whenever that parameter is bound
 * anew, which better-sqlite3 does at every run: 7 µs more a run for a stream read, 20 µs for an
 * outbox claim's, measured here. As an expression (`? + 0`) it is only evaluated when the statement
 * runs. The value means what it does in a bare `LIMIT`: a negative one is no limit.
 */
export const boundLimit = (param = '?'): string => `LIMIT ${param} + 0`;
