import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

/**
 * A `logger` option as given, checked where it is given: undefined (the default's), or an object with
 * a function for each of `levels`. A logger without one threw inside Ferry at its first line (a
 * relay or a subscription stopped by a `TypeError`, a close that rejected with it).
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
  return logger;
}
