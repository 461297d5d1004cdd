import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * An open transaction holding the store's horizon back: positions above the horizon cannot be read
 * in global order until it ends (PostgreSQL; memory and SQLite never hold reads back).
 */
export interface OpenTransaction {
  /** Its transaction id. */
  readonly xid: bigint;
  /** Server process id (`pg_terminate_backend(pid)` ends it); undefined when not visible (a prepared transaction). */
  readonly pid: number | undefined;
  /** Time since the transaction began, in ms; undefined when not visible. */
  readonly ageMs: number | undefined;
  /** `application_name` of its connection ('' when unset). */
  readonly applicationName: string | undefined;
  /** `state` of its connection: `'idle in transaction'` is a transaction someone forgot to end. */
  readonly state: string | undefined;
}

/**
 * A read in global order could not pass an open transaction within the wait allowed: events up to
 * `position` exist, but a commit of that transaction may still come before some of them, so they are
 * not final yet. Try again once it has ended (`transaction.pid` says whose it is). Never thrown by
 * the memory and SQLite backends.
 */
export class ReadHeldBackError extends FerryError {
  /** The end the read was waiting for: every event committed before the read is at or below it. */
  readonly position: bigint;
  /** The oldest open transaction, when it could be found. */
  readonly transaction: OpenTransaction | undefined;
  /** How long the read waited for the transaction, in ms. */
  readonly waitedMs: number;
  constructor(position: bigint, transaction: OpenTransaction | undefined, waitedMs: number) {
    super(
      'READ_HELD_BACK',
      `the global order is held back at position ${position}: waited ${waitedMs} ms for ${describeTransaction(transaction)} to end`,
    );
    this.position = position;
    this.transaction = transaction;
    this.waitedMs = waitedMs;
  }
}
export const isReadHeldBackError = errorGuard<ReadHeldBackError>('READ_HELD_BACK');

/** `transaction 812 (pid 4242, "billing", idle in transaction, open for 63 s)`, for logs and errors. */
export function describeTransaction(t: OpenTransaction | undefined): string {
  if (t === undefined) return 'an open transaction';
  const details = [
    t.pid === undefined ? 'not a session (prepared?)' : `pid ${t.pid}`,
    ...(t.applicationName ? [`"${t.applicationName}"`] : []),
    ...(t.state ? [t.state] : []),
    ...(t.ageMs === undefined ? [] : [`open for ${Math.round(t.ageMs / 1000)} s`]),
  ];
  return `transaction ${t.xid} (${details.join(', ')})`;
}
