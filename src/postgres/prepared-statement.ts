import { createHash } from 'node:crypto';

/** A statement the server keeps prepared on each connection that ran it once. */
export interface PreparedStatement {
  readonly name: string;
  readonly text: string;
}

/**
 * `text` as a statement the server parses and plans once per connection, named after the text (so
 * that two texts never share a name, whatever the schema, and a name stays within PostgreSQL's 63
 * bytes). Sent unnamed, a unit of work's short statements spent about as long being parsed and
 * planned as being run: about half of each one's time, measured here. Only for statements whose plan
 * does not hang on their parameters' values: PostgreSQL may settle on one plan for every value.
 */
export function preparedStatement(text: string): PreparedStatement {
  return { name: `ferry-${createHash('sha256').update(text).digest('hex').slice(0, 32)}`, text };
}

/** Whether the text of a statement (a string or pg's query config) may drop prepared statements. */
export function mayDropPrepared(statement: unknown): boolean {
  const text = typeof statement === 'string' ? statement : (statement as { text?: unknown } | null)?.text;
  return typeof text === 'string' && /\b(?:deallocate|discard)\b/i.test(text);
}

/**
 * Makes pg prepare its named statements again on `client`'s connection, at their next use: after the
 * caller's SQL ran `DEALLOCATE` in a unit of work, or once the server said one of them is gone
 * (`26000`), pg would otherwise go on sending them by name, and every later statement of that
 * connection failed. (pg keeps what it prepared in `connection.parsedStatements`.)
 */
export function forgetPrepared(client: unknown): void {
  const connection = (client as { connection?: { parsedStatements?: unknown } } | null)?.connection;
  if (connection !== undefined && typeof connection.parsedStatements === 'object') {
    connection.parsedStatements = {};
  }
}
