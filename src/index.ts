export type { FerryContext } from './context/context.js';
export { currentContext, runWithContext } from './context/context.js';
export type { FerryErrorOptions } from './errors/ferry-error.js';
export {
  FerryError,
  InvalidOptionsError,
  isFerryError,
  isInvalidOptionsError,
} from './errors/ferry-error.js';
export type { EventStoreBackend, ParkedEvent, ReadAfterResult, Snapshot } from './eventstore/backend.js';
export {
  CommandHandler,
  type CommandHandlerOptions,
  type CommandHandlerSnapshotOptions,
  type CommandResult,
  DEFAULT_COMMAND_HANDLER_OPTIONS,
  type HandleOptions,
  type LoadResult,
} from './eventstore/command-handler.js';
export { type CreateEventStoreOptions, createEventStore } from './eventstore/create.js';
export { type Decider, type DeciderEvent, decideEvents, fold } from './eventstore/decider.js';
export {
  ConcurrencyError,
  DuplicateEventIdError,
  EventStoreClosedError,
  InvalidEventError,
  isConcurrencyError,
  isDuplicateEventIdError,
  isEventStoreClosedError,
  isInvalidEventError,
} from './eventstore/errors.js';
export { MemoryEventStoreBackend } from './eventstore/memory/memory-backend.js';
export { EventStore, type EventStoreOptions } from './eventstore/store.js';
export {
  DEFAULT_EVENT_SUBSCRIPTION_OPTIONS,
  type EventHandler,
  EventSubscription,
  type EventSubscriptionOptions,
  type SubscriptionLag,
} from './eventstore/subscription.js';
export type {
  AppendOptions,
  AppendResult,
  EventData,
  ExpectedVersion,
  PreparedEvent,
  ReadAllOptions,
  ReadStreamOptions,
  RecordedEvent,
} from './eventstore/types.js';
export type {
  BusOptions,
  MessageFor,
  PublishOptions,
  SubscribeOptions,
  Subscription,
  SubscriptionDefaults,
} from './messaging/bus.js';
export { Bus, createBus, DEFAULT_SUBSCRIPTION_OPTIONS } from './messaging/bus.js';
export type {
  Contracts,
  DataIn,
  DataOut,
  MatchingTypes,
  NoContracts,
  TypeOf,
} from './messaging/contracts.js';
export type { Envelope, Message } from './messaging/envelope.js';
export type { ValidationIssue } from './messaging/errors.js';
export {
  BrokerConnectionError,
  BusClosedError,
  InvalidTopicError,
  isBrokerConnectionError,
  isBusClosedError,
  isInvalidTopicError,
  isMalformedMessageError,
  isMessageValidationError,
  isPublishBufferFullError,
  isPublishNackedError,
  isPublishNotConfirmedError,
  isUnroutableError,
  MalformedMessageError,
  MessageValidationError,
  PublishBufferFullError,
  PublishNackedError,
  PublishNotConfirmedError,
  UnroutableError,
} from './messaging/errors.js';
export type { Inbox, InboxClaim, MemoryInboxOptions } from './messaging/inbox.js';
export { DEFAULT_MEMORY_INBOX_OPTIONS, MemoryInbox } from './messaging/inbox.js';
export { DEFAULT_DURABLE_INBOX_OPTIONS, type DurableInboxOptions } from './messaging/lease.js';
export type { Logger } from './messaging/logger.js';
export { silentLogger, stderrLogger } from './messaging/logger.js';
export type { MemoryBrokerOptions } from './messaging/memory/memory-broker.js';
export { DEFAULT_MEMORY_BROKER_OPTIONS, MemoryBroker } from './messaging/memory/memory-broker.js';
export type { MemoryTransportOptions } from './messaging/memory/memory-transport.js';
export { MemoryTransport } from './messaging/memory/memory-transport.js';
export type { HandlerMiddleware, MessageHandler, SubscriptionInfo } from './messaging/middleware.js';
export { idempotent } from './messaging/middleware.js';
export type { StandardSchemaV1 } from './messaging/standard-schema.js';
export type {
  DeadLetter,
  DeadLetterReason,
  Delivery,
  DeliveryHandler,
  Outcome,
  ReplayOptions,
  SubscriptionSpec,
  Transport,
  TransportSubscription,
} from './messaging/transport.js';
export type { WireMessage } from './messaging/wire.js';
export type { ExponentialBackoffOptions } from './resilience/backoff.js';
export { DEFAULT_EXPONENTIAL_BACKOFF } from './resilience/backoff.js';
