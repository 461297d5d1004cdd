import { errorGuard, FerryError } from '../errors/ferry-error.js';

/**
 * The exchange Ferry publishes to (`ferry.events`, or the `exchange` option) already exists with
 * other properties than Ferry declares it with (a durable topic exchange): another type, not
 * durable, other arguments. The broker refuses the declare at once, and waiting cannot change that,
 * so the first connect rejects with this error instead of retrying until `connectTimeoutMs`.
 */
export class InequivalentExchangeError extends FerryError {
  readonly exchange: string;
  /** What the broker said (`PRECONDITION_FAILED - inequivalent arg 'type' …`). */
  readonly brokerMessage: string;
  constructor(exchange: string, brokerMessage: string, options: { cause?: unknown } = {}) {
    super(
      'INEQUIVALENT_EXCHANGE',
      `exchange ${exchange} already exists with other properties than Ferry needs, a durable topic exchange (${brokerMessage}): set the exchange option to another name, or delete that exchange (rabbitmqctl delete_exchange, or the management UI) so that Ferry can declare it`,
      options,
    );
    this.exchange = exchange;
    this.brokerMessage = brokerMessage;
  }
}

export const isInequivalentExchangeError = errorGuard<InequivalentExchangeError>('INEQUIVALENT_EXCHANGE');
