export {
  AmqpTransport,
  type AmqpTransportOptions,
  DEFAULT_AMQP_TRANSPORT_OPTIONS,
} from './amqp-transport.js';
export { assertAmqpUrl } from './amqp-url.js';
export { MessageEncodingError } from './codec.js';
export {
  BrokerAccessRefusedError,
  BrokerPermissionDeniedError,
  BrokerTlsMismatchError,
  BrokerVhostNotFoundError,
  isBrokerAccessRefusedError,
  isBrokerPermissionDeniedError,
  isBrokerTlsMismatchError,
  isBrokerVhostNotFoundError,
} from './connection-refusal.js';
export { DEAD_LETTER_HEADER } from './dead-letters.js';
export {
  InequivalentExchangeError,
  isInequivalentExchangeError,
} from './inequivalent-exchange-error.js';
export { InequivalentQueueError, isInequivalentQueueError } from './inequivalent-queue-error.js';
export { isMessageTooLargeError, MessageTooLargeError } from './message-too-large-error.js';
export type { QueueType } from './topology.js';
