import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { assertOptionsObject, refuseUnknownKeys } from '../errors/options-object.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { EVENT_LIMITS, nameProblem } from './event-encoding.js';
import { isCount } from './prepare-append.js';
import type { EventSubscriptionOptions } from './subscription.js';

/** Most tries per event before it is parked: the retry delays are computed up front. */
export const MAX_SUBSCRIPTION_ATTEMPTS = 10_000;

/** What {@link EventStore.subscribe} reads. */
export const EVENT_SUBSCRIPTION_OPTION_NAMES = [
  'name',
  'from',
  'types',
  'batchSize',
  'maxAttempts',
  'backoff',
  'idlePollMs',
  'exclusive',
  'leaseMs',
  'handlerTimeoutMs',
] as const satisfies readonly (keyof EventSubscriptionOptions)[];

/**
 * Checks what {@link EventStore.subscribe} is given before anything starts, alike on every backend:
 * `INVALID_OPTIONS` naming the option. Without it a `batchSize` of 0 spun the event loop (memory,
 * SQLite) or hung close (PostgreSQL), a `leaseMs` past a timer's range renewed the lease in a tight
 * loop here and was refused by PostgreSQL's integer column there, and a handler that is not a
 * function parked every event.
 */
export function assertSubscriptionOptions(options: unknown, handler: unknown): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidOptionsError(
      `subscribe options must be an object with a name, not ${describeValue(options)}`,
    );
  }
  assertOptionsObject('subscribe', options);
  if (typeof handler !== 'function') {
    throw new InvalidOptionsError(`subscribe needs a handler function, not ${describeValue(handler)}`);
  }
  // A misspelt key (`batchsize`, `handlerTimeout`) would otherwise be dropped for its default.
  refuseUnknownKeys('subscribe', options, EVENT_SUBSCRIPTION_OPTION_NAMES);
  const o = options as Record<string, unknown>;
  if (o.from !== undefined && o.from !== 'start' && o.from !== 'end') {
    throw new InvalidOptionsError(`from must be 'start' or 'end', not ${describeValue(o.from)}`);
  }
  if (o.types !== undefined) assertEventTypes(o.types);
  if (o.batchSize !== undefined && !(isCount(o.batchSize) && o.batchSize >= 1)) {
    throw new InvalidOptionsError(
      `batchSize must be a positive safe integer, not ${describeValue(o.batchSize)}`,
    );
  }
  integerIn('maxAttempts', o.maxAttempts, 1, MAX_SUBSCRIPTION_ATTEMPTS);
  integerIn('idlePollMs', o.idlePollMs, 1, MAX_TIMER_MS);
  integerIn('leaseMs', o.leaseMs, 100, MAX_TIMER_MS);
  integerIn('handlerTimeoutMs', o.handlerTimeoutMs, 1, MAX_TIMER_MS);
  if (o.exclusive !== undefined && typeof o.exclusive !== 'boolean') {
    throw new InvalidOptionsError(`exclusive must be true or false, not ${describeValue(o.exclusive)}`);
  }
  if (o.backoff !== undefined && (typeof o.backoff !== 'object' || o.backoff === null)) {
    throw new InvalidOptionsError(`backoff must be an object, not ${describeValue(o.backoff)}`);
  }
}

/** `types` of a read or a subscription: an array of valid event types. */
export function assertEventTypes(types: unknown): void {
  if (!Array.isArray(types)) {
    throw new InvalidOptionsError(`types must be an array of event types, not ${describeValue(types)}`);
  }
  for (const type of types) {
    const problem = nameProblem(type, EVENT_LIMITS.typeLength);
    if (problem !== undefined)
      throw new InvalidOptionsError(`the type ${describeValue(type)} in types ${problem}`);
  }
}

function integerIn(name: string, value: unknown, min: number, max: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidOptionsError(
      `${name} must be an integer from ${min} to ${max}, not ${describeValue(value)}`,
    );
  }
}
