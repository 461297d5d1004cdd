/**
 * Errors that say a service's own database or broker cannot do its work just now — down, behind, or
 * out of room — rather than that the request or message is at fault. The server middleware answers
 * them 503 or 507 ("try again later"), and the bus retries a message that failed with one without
 * counting the attempt, so that an outage never dead-letters what would succeed once it is over.
 */

/**
 * Codes of a database or broker that cannot be reached: the event store's connection failed on
 * every attempt, the broker connection was lost for good.
 */
const OUTAGE_CODES = new Set(['STORE_UNAVAILABLE', 'BROKER_UNAVAILABLE']);

/**
 * What a request may be answered 503 for: an outage, too many publishes waiting for the broker
 * (which a message's own handler may cause, publishing too much at once: the bus counts that one),
 * or a SQLite file another connection kept locked longer than the store waits (`STORE_BUSY`: the
 * write never began).
 */
const UNAVAILABLE_CODES = new Set([...OUTAGE_CODES, 'PUBLISH_BUFFER_FULL', 'STORE_BUSY']);

/**
 * Codes that say a write failed for want of room: SQLite's `SQLITE_FULL` (better-sqlite3's
 * `code`), the file system's `ENOSPC` and `EDQUOT`, PostgreSQL's `53100` (disk_full).
 */
const STORAGE_FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT', '53100']);

/** How many causes deep a code is looked for: wrapping is usual, a long chain is not ours. */
const MAX_CAUSE_DEPTH = 5;

/** `error`, or one of its causes (a few deep), failed for want of room on the disk. */
export function isStorageFull(error: unknown): boolean {
  return hasCode(error, STORAGE_FULL_CODES);
}

/** `error`, or one of its causes (a few deep), says the database or broker cannot be reached. */
export function isBackendOutage(error: unknown): boolean {
  return hasCode(error, OUTAGE_CODES);
}

/**
 * The code of `error` itself when it says the database or broker is unavailable and nothing was
 * done; `undefined` too for a store failure whose outcome is unknown (`outcomeUnknown`: it may have
 * been kept, so "try again later" would mislead).
 */
export function backendUnavailableCode(error: unknown): string | undefined {
  const code = codeOf(error);
  if (code === undefined || !UNAVAILABLE_CODES.has(code)) return undefined;
  try {
    return (error as { outcomeUnknown?: unknown }).outcomeUnknown === true ? undefined : code;
  } catch {
    return undefined;
  }
}

/**
 * `error`, or one of its causes (a few deep), is a write whose outcome is unknown: it may have been
 * kept (`UNIT_OF_WORK_OUTCOME_UNKNOWN`, or a store failure with `outcomeUnknown`, the connection
 * broken as it committed).
 */
export function isOutcomeUnknown(error: unknown): boolean {
  return someCause(error, (current, code) => {
    if (code === 'UNIT_OF_WORK_OUTCOME_UNKNOWN') return true;
    return (
      code !== undefined &&
      UNAVAILABLE_CODES.has(code) &&
      (current as { outcomeUnknown?: unknown }).outcomeUnknown === true
    );
  });
}

function hasCode(error: unknown, codes: ReadonlySet<string>): boolean {
  return someCause(error, (_current, code) => code !== undefined && codes.has(code));
}

/**
 * Whether `test` holds for `error` or one of its causes (a few deep), given each with its code; a
 * getter that throws (on `cause`, or in `test`) ends the search: not ours to read further.
 */
function someCause(error: unknown, test: (current: object, code: string | undefined) => boolean): boolean {
  let current = error;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && typeof current === 'object' && current !== null; depth++) {
    try {
      if (test(current, codeOf(current))) return true;
      current = (current as { cause?: unknown }).cause;
    } catch {
      return false;
    }
  }
  return false;
}

/** A string `code`, never throwing whatever was thrown. */
function codeOf(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  try {
    const { code } = error as { code?: unknown };
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}
