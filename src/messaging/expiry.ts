import { InvalidOptionsError } from '../errors/ferry-error.js';

/**
 * Message expiry: the `expiresat` extension attribute a publish asks for (`ttlMs` or `expiresAt`),
 * and whether a received message is past it.
 */

const RFC_3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;
/** The last instant a JavaScript Date can hold. */
const MAX_TIME_MS = 8.64e15;

/**
 * Epoch ms of an RFC 3339 time, NaN for anything else. Only RFC 3339 (a date, a time and an offset):
 * `Date.parse` also takes forms it reads in the process's own time zone ('2099-01-01T00:00:00'), and
 * rolls impossible dates over ('2999-02-30' becomes March 2nd). A leap second (`:60`) is read as the
 * instant after second 59.
 */
export function rfc3339ToMs(text: string): number {
  const m = RFC_3339.exec(text);
  if (m === null) return Number.NaN;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const offsetHours = m[8] === undefined ? 0 : Number(m[8]);
  const offsetMinutes = m[9] === undefined ? 0 : Number(m[9]);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth) return Number.NaN;
  if (hour > 23 || minute > 59 || second > 60 || offsetHours > 23 || offsetMinutes > 59) return Number.NaN;
  const leap = second === 60;
  // Date.parse is sure of the upper-case T and Z forms only.
  const normal = `${text.slice(0, 10)}T${text.slice(11, 17)}${leap ? '59' : text.slice(17, 19)}${text.slice(19).toUpperCase()}`;
  const ms = Date.parse(normal);
  return leap ? ms + 1000 : ms;
}

/**
 * The `expiresat` a publish asks for, as RFC 3339; throws `InvalidOptionsError` for a bad one. `now`
 * (epoch ms, the bus's clock) is where `ttlMs` counts from.
 */
export function expiryOf(
  options: { readonly expiresAt?: Date | string; readonly ttlMs?: number } | undefined,
  now: number = Date.now(),
): string | undefined {
  if (options?.expiresAt === undefined && options?.ttlMs === undefined) return undefined;
  if (options.expiresAt !== undefined && options.ttlMs !== undefined) {
    throw new InvalidOptionsError('give expiresAt or ttlMs, not both');
  }
  let ms: number;
  if (options.ttlMs !== undefined) {
    if (!Number.isFinite(options.ttlMs) || options.ttlMs < 0) {
      throw new InvalidOptionsError('ttlMs must be a finite number of ms, at least 0');
    }
    ms = now + options.ttlMs;
    if (ms > MAX_TIME_MS) {
      throw new InvalidOptionsError(`ttlMs must end before ${new Date(MAX_TIME_MS).toISOString()}`);
    }
  } else {
    const at = options.expiresAt!;
    ms = at instanceof Date ? at.getTime() : typeof at === 'string' ? rfc3339ToMs(at) : Number.NaN;
  }
  if (!Number.isFinite(ms) || Math.abs(ms) > MAX_TIME_MS) {
    throw new InvalidOptionsError('expiresAt must be a valid Date or RFC 3339 time');
  }
  return new Date(ms).toISOString();
}

/**
 * Whether `expiresat` is at or before `now` (epoch ms, the bus's clock). An `expiresat` that cannot be
 * read (a foreign producer's) never expires the message.
 */
export function isExpired(expiresat: string, now: number = Date.now()): boolean {
  const ms = Date.parse(expiresat);
  return !Number.isNaN(ms) && ms <= now;
}
