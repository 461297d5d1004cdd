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
