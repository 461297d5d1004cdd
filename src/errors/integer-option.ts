import { describeValue } from './describe-value.js';
import { InvalidOptionsError } from './ferry-error.js';

/**
 * An integer option from `min` to `max`; `undefined` (given or left out) means `fallback`.
 * @throws InvalidOptionsError for anything else, naming the option and its range.
 */
export function integerOption(
  name: string,
  value: number | undefined,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`;
    throw new InvalidOptionsError(`${name} must be an integer ${range}, not ${describeValue(value)}`);
  }
  return value;
}

/** A positive integer option, at most `max`; `undefined` means `fallback`. @throws InvalidOptionsError */
export function positiveIntegerOption(
  name: string,
  value: number | undefined,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  return integerOption(name, value, fallback, 1, max);
}
