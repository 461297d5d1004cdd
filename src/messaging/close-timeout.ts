import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';

/**
 * Throws `INVALID_OPTIONS` unless `value` is a close timeout: a finite number of milliseconds from 0
 * to {@link MAX_TIMER_MS}. Anything else broke the bound silently: a negative, `NaN` or longer one
 * armed a timer of 1 ms, and a string was added to a time as text.
 */
export function assertCloseTimeout(value: unknown, name = 'closeTimeoutMs'): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new InvalidOptionsError(
      `${name} must be a finite number of ms from 0 to ${MAX_TIMER_MS}, not ${describeValue(value)}`,
    );
  }
}
