/** Where Ferry reports what happens to connections and messages. Compatible with console and pino-style objects. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const noop = (): void => {};

/** Discards everything. */
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

function write(level: string, message: string, fields?: Record<string, unknown>): void {
  const tail = fields && Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
  process.stderr.write(`ferry ${level}: ${message}${tail}\n`);
}

/**
 * The default logger: warnings and errors to stderr, one readable line each, so that a lost broker
 * connection or a dead-lettered message is never silent.
 */
export const stderrLogger: Logger = Object.freeze({
  debug: noop,
  info: noop,
  warn: (message: string, fields?: Record<string, unknown>) => write('warn', message, fields),
  error: (message: string, fields?: Record<string, unknown>) => write('error', message, fields),
});
