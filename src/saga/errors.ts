import { errorGuard, FerryError, type FerryErrorOptions } from '../errors/ferry-error.js';

/**
 * A message arrived for a saga instance whose current status has no handler for its type (an
 * invalid transition), and the definition's `onInvalid` is `'dead-letter'`. `retryable` is false:
 * the bus dead-letters the message at once, since running it again cannot succeed.
 *
 * @example
 * const [letter] = await bus.listDeadLetters({ group: 'saga-order' });
 * // letter.reason.message: saga "order" instance "o-1" in status "charging" has no handler for "stock.reserved"
 */
export class SagaTransitionError extends FerryError {
  readonly saga: string;
  readonly id: string;
  /** The instance's status when the message arrived. */
  readonly status: string;
  readonly messageType: string;
  /** Tells the bus to dead-letter the message without further attempts. */
  readonly retryable = false;
  constructor(saga: string, id: string, status: string, messageType: string) {
    super(
      'SAGA_INVALID_TRANSITION',
      `saga "${saga}" instance "${id}" in status "${status}" has no handler for "${messageType}"`,
    );
    this.saga = saga;
    this.id = id;
    this.status = status;
    this.messageType = messageType;
  }
}
/** True when `error` is a {@link SagaTransitionError}, from any copy of Ferry. */
export const isSagaTransitionError = errorGuard<SagaTransitionError>('SAGA_INVALID_TRANSITION');

/**
 * A message that does not start the saga arrived for an instance that does not exist. Its start may
 * not have committed yet (handled at the same moment on another subscription, or still on its way on
 * another queue): before the subscription's last attempt the error is `retryable` and the message
 * is tried again after the subscription's backoff; at the last one the definition's `onUnknown`
 * applies, and with `'dead-letter'` this error (`retryable` false) dead-letters the message.
 */
export class SagaUnknownInstanceError extends FerryError {
  readonly saga: string;
  readonly id: string;
  readonly messageType: string;
  /** False: the bus dead-letters the message without further attempts. */
  readonly retryable: boolean;
  constructor(saga: string, id: string, messageType: string, options: { readonly retryable?: boolean } = {}) {
    super('SAGA_UNKNOWN_INSTANCE', `saga "${saga}" has no instance "${id}" for a message "${messageType}"`);
    this.saga = saga;
    this.id = id;
    this.messageType = messageType;
    this.retryable = options.retryable ?? false;
  }
}
/** True when `error` is a {@link SagaUnknownInstanceError}, from any copy of Ferry. */
export const isSagaUnknownInstanceError = errorGuard<SagaUnknownInstanceError>('SAGA_UNKNOWN_INSTANCE');

/**
 * A message arrived for a completed saga instance and the definition's `onCompleted` is
 * `'dead-letter'`. Dead-lettered at once (`retryable` is false).
 */
export class SagaCompletedError extends FerryError {
  readonly saga: string;
  readonly id: string;
  readonly messageType: string;
  /** Tells the bus to dead-letter the message without further attempts. */
  readonly retryable = false;
  constructor(saga: string, id: string, messageType: string) {
    super(
      'SAGA_COMPLETED',
      `saga "${saga}" instance "${id}" is completed: a message "${messageType}" came too late`,
    );
    this.saga = saga;
    this.id = id;
    this.messageType = messageType;
  }
}
/** True when `error` is a {@link SagaCompletedError}, from any copy of Ferry. */
export const isSagaCompletedError = errorGuard<SagaCompletedError>('SAGA_COMPLETED');

/**
 * A saga handler asked for something its definition does not allow: a status not in `states`, a
 * step recorded with a malformed undo message (one its contract, or the bus, would refuse: `cause`
 * is that refusal), a state that does not survive a JSON round trip. A bug in the saga, not in the
 * message: dead-lettered at once (`retryable` is false).
 */
export class SagaDefinitionError extends FerryError {
  readonly saga: string;
  /** Tells the bus to dead-letter the message without further attempts. */
  readonly retryable = false;
  constructor(saga: string, message: string, options: FerryErrorOptions = {}) {
    super('SAGA_DEFINITION', `saga "${saga}": ${message}`, options);
    this.saga = saga;
  }
}
/** True when `error` is a {@link SagaDefinitionError}, from any copy of Ferry. */
export const isSagaDefinitionError = errorGuard<SagaDefinitionError>('SAGA_DEFINITION');
