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
 * Errors that say the server's prepared statements and pg's record of them disagree: one is gone
 * (`26000`: the caller's SQL ran `DEALLOCATE`), one of that name exists already (`42P05`: pg had
 * forgotten it, or the caller prepared one under a `ferry-` name), or one's result type changed under
 * it (`0A000`: a column's type changed), which PostgreSQL never plans again by itself.
 */
export const PREPARED_OUT_OF_STEP = new Set(['26000', '42P05', '0A000']);

/**
 * Drops every `ferry-` statement the connection has prepared (DEALLOCATE, one round trip; allowed
 * inside a transaction, and not undone by a rollback).
 */
const DEALLOCATE_FERRY_STATEMENTS = `DO $ferry$ DECLARE n text; BEGIN
  FOR n IN SELECT name FROM pg_prepared_statements WHERE name LIKE 'ferry-%' LOOP
    EXECUTE format('DEALLOCATE %I', n);
  END LOOP;
END $ferry$`;

/** Forgets pg's record of the `ferry-` statements it prepared on `client`'s connection (`connection.parsedStatements`). */
function forgetFerryPrepared(client: unknown): void {
  const parsed = (client as { connection?: { parsedStatements?: Record<string, unknown> } } | null)
    ?.connection?.parsedStatements;
  if (parsed === undefined || parsed === null || typeof parsed !== 'object') return;
  for (const name of Object.keys(parsed)) if (name.startsWith('ferry-')) delete parsed[name];
}

/** Connections whose `ferry-` statements are dropped and prepared again at the start of their next unit of work. */
const outOfStep = new WeakSet<object>();

/** `client`'s prepared statements may disagree with pg's record of them: set right at its next unit of work. */
export function markPreparedOutOfStep(client: object): void {
  outOfStep.add(client);
}

/** Whether `client` was marked by {@link markPreparedOutOfStep}; the mark is taken. */
export function takePreparedOutOfStep(client: object): boolean {
  return outOfStep.delete(client);
}

/**
 * Drops `client`'s `ferry-` statements on the server with `run` (a statement of the unit of work on
 * that connection) and pg's record of them, so that each is prepared again at its next use. If that
 * fails, the connection is marked ({@link markPreparedOutOfStep}) and the error thrown.
 */
export async function prepareFerryStatementsAgain(
  client: object,
  run: (sql: string) => Promise<unknown>,
): Promise<void> {
  try {
    await run(DEALLOCATE_FERRY_STATEMENTS);
  } catch (error) {
    markPreparedOutOfStep(client);
    throw error;
  }
  forgetFerryPrepared(client);
}
