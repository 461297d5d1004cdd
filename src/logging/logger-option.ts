import { describeValue } from '../errors/describe-value.js';
import { errorText } from '../errors/error-text.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

/**
 * A `logger` option, checked where it is given: undefined (the default's), or an object with a
 * function for each of `levels`; resolves it kept from throwing. A logger without one threw inside
 * Ferry at its first line (a relay or a subscription stopped by a `TypeError`, a close that rejected
 * with it), and so did one whose sink failed.
 * @throws InvalidOptionsError
 */
export function loggerOption<L>(
  where: string,
  logger: L | undefined,
  levels: readonly string[] = LEVELS,
): L | undefined {
  if (logger === undefined) return undefined;
  const missing =
    logger === null || (typeof logger !== 'object' && typeof logger !== 'function')
      ? levels
      : levels.filter((level) => typeof (logger as Record<string, unknown>)[level] !== 'function');
  if (missing.length > 0) {
    throw new InvalidOptionsError(
      `${where} logger must have ${levels.join(', ')} functions (console, a pino logger or silentLogger do); ${
        missing === levels ? describeValue(logger) : `it has no ${missing.join(', ')}`
      }`,
    );
  }
  // Already kept from throwing (createBus hands its checked logger to the Bus, which checks it again).
  if (GUARDED.has(logger as object)) return logger;
  return guarded(logger, levels);
}

/** The loggers `guarded` made, so that one is not wrapped again. */
const GUARDED = new WeakSet<object>();

/**
 * `logger` with each of `levels` kept from throwing: a logger whose sink failed (a closed stream, a
 * transport that throws) must not stop what was logging (a relay's round, a subscription's
 * dead-lettering). What it threw goes to stderr, once per level.
 */
function guarded<L>(logger: L, levels: readonly string[]): L {
  const target = logger as Record<string, (message: string, fields?: Record<string, unknown>) => void>;
  const reported = new Set<string>();
  const safe: Record<string, (message: string, fields?: Record<string, unknown>) => void> = {};
  for (const level of levels) {
    const failed = (error: unknown, message: string) => {
      if (reported.has(level)) return;
      reported.add(level);
      process.stderr.write(
        `ferry: the logger's ${level} threw (${errorText(error, 'a value with no text')}); its lines are lost while it does: ${message}\n`,
      );
    };
    safe[level] = (message, fields) => {
      try {
        // Fields only when there are some: console prints an undefined argument ("… undefined").
        const done: unknown =
          fields === undefined
            ? target[level]?.call(logger, message)
            : target[level]?.call(logger, message, fields);
        // An async logger: its rejection is no unhandled rejection either.
        if (typeof (done as PromiseLike<unknown> | undefined)?.then === 'function') {
          Promise.resolve(done).catch((error: unknown) => failed(error, message));
        }
      } catch (error) {
        failed(error, message);
      }
    };
  }
  GUARDED.add(safe);
  return safe as L;
}
