export { createBus } from './connect/create-bus.js';
export { type CreateEventStoreOptions, createEventStore } from './connect/create-event-store.js';
export {
  type CreateIdempotencyStoreOptions,
  createIdempotencyStore,
  type OpenIdempotencyStore,
} from './connect/create-idempotency-store.js';
export type { FerryContext } from './context/context.js';
export { currentContext, runWithContext } from './context/context.js';
export type { LinkedSignal } from './context/linked-signal.js';
export { linkSignals, withLinkedSignal } from './context/linked-signal.js';
export type { FerryErrorOptions } from './errors/ferry-error.js';
export {
  FerryError,
  InvalidOptionsError,
  isFerryError,
  isInvalidOptionsError,
} from './errors/ferry-error.js';
export type {
  EventStoreBackend,
  HorizonOptions,
  ParkedEvent,
  ReadAfterResult,
  Snapshot,
} from './eventstore/backend.js';
export {
  CommandHandler,
  type CommandHandlerOptions,
  type CommandHandlerSnapshotOptions,
  type CommandResult,
  DEFAULT_COMMAND_HANDLER_OPTIONS,
  type EventAppender,
  type HandleOptions,
  type LoadResult,
  type PendingCommandResult,
} from './eventstore/command-handler.js';
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
  isStoreUnavailableError,
  StoreUnavailableError,
} from './eventstore/errors.js';
export { isReadHeldBackError, type OpenTransaction, ReadHeldBackError } from './eventstore/held-back.js';
export { MemoryEventStoreBackend } from './eventstore/memory/memory-backend.js';
export {
  isSnapshotNotSerializableError,
  SnapshotNotSerializableError,
} from './eventstore/snapshot-errors.js';
export { EventStore, type EventStoreOptions } from './eventstore/store.js';
export {
  DEFAULT_EVENT_SUBSCRIPTION_OPTIONS,
  type EventHandler,
  type EventHandlerContext,
  EventSubscription,
  type EventSubscriptionOptions,
  type SubscriptionLag,
} from './eventstore/subscription.js';
export type {
  AppendOptions,
  AppendResult,
  EventData,
  ExpectedVersion,
  PendingEvent,
  PreparedEvent,
  ReadAllOptions,
  ReadStreamOptions,
  RecordedEvent,
} from './eventstore/types.js';
export {
  type CallOptions,
  ClientClosedError,
  type ClientRetryOptions,
  DEFAULT_SERVICE_CLIENT_OPTIONS,
  isClientClosedError,
  isIdempotentMethod,
  parseRetryAfter,
  type RequestInit,
  ServiceClient,
  type ServiceClientOptions,
  type ServiceResponse,
} from './http/client.js';
export type { ClientEventMap } from './http/client-events.js';
export { ResponseTooLargeError } from './http/collect-response.js';
export {
  ConnectionError,
  HttpError,
  InvalidRequestError,
  InvalidResponseBodyError,
  isConnectionError,
  isHttpError,
  isInvalidRequestError,
  isInvalidResponseBodyError,
  isRequestBodyNotSerializableError,
  type ProblemDetails,
  RequestBodyNotSerializableError,
} from './http/errors.js';
export { HTTP_HEADER, PROBLEM_CONTENT_TYPE } from './http/headers.js';
export { isValidIdempotencyKey, unquotedIdempotencyKey } from './http/outgoing-headers.js';
export {
  DEFAULT_DURABLE_IDEMPOTENCY_STORE_OPTIONS,
  type DurableIdempotencyStoreOptions,
} from './http/server/durable-idempotency.js';
export { headerLines } from './http/server/header-lines.js';
export {
  type BreakerSource,
  createHealth,
  DEFAULT_HEALTH_OPTIONS,
  DEFAULT_HEALTH_PATH,
  type Health,
  type HealthCheck,
  type HealthCheckResult,
  type HealthOptions,
  type HealthReport,
  type HealthRouteOptions,
} from './http/server/health.js';
export {
  DEFAULT_IDEMPOTENT_METHODS,
  DEFAULT_MAX_HELD_BODY_BYTES,
  DEFAULT_MAX_STORED_BODY_BYTES,
  DEFAULT_MEMORY_IDEMPOTENCY_STORE_OPTIONS,
  DEFAULT_REPLAYED_HEADERS,
  type IdempotencyBeginResult,
  type IdempotencyDecision,
  IdempotencyGuard,
  type IdempotencyOptions,
  type IdempotencyStore,
  type IdempotentRequest,
  isReplayableStatus,
  jsonBodySha256,
  MemoryIdempotencyStore,
  type MemoryIdempotencyStoreOptions,
  parseIdempotencyKey,
  type ResponseHeaders,
  requestFingerprint,
  type StoredResponse,
  sha256Hex,
  storedBody,
} from './http/server/idempotency.js';
export {
  HttpProblemError,
  type HttpProblemInit,
  isHttpProblemError,
  isRequestValidationError,
  type Problem,
  type ProblemExtra,
  type ProblemLogger,
  type ProblemOptions,
  type ProblemRequest,
  type ProblemResponse,
  problem,
  problemFromError,
  RequestValidationError,
  renderProblem,
  stderrProblemLogger,
  validateRequest,
} from './http/server/problem.js';
export {
  ClientDisconnectedError,
  childTraceparent,
  DEFAULT_REQUEST_CONTEXT_OPTIONS,
  DeadlineExceededError,
  type DeadlineOptions,
  deadlinePassed,
  isClientDisconnectedError,
  isDeadlineExceededError,
  isValidCorrelationId,
  newTraceparent,
  openRequestScope,
  type ParsedRequestHeaders,
  parseDeadlineMs,
  parseRequestHeaders,
  parseTraceparent,
  type RequestContext,
  type RequestContextOptions,
  type RequestHeaderOptions,
  type RequestScope,
  requestContextOptionsOf,
  type Traceparent,
} from './http/server/request-context.js';
export { nameUuid } from './ids/name-uuid.js';
export { ClaimLostError, isClaimLostError } from './inbox/claim-lost-error.js';
export type { Inbox, InboxClaim, MemoryInboxOptions } from './inbox/inbox.js';
export { DEFAULT_MEMORY_INBOX_OPTIONS, MemoryInbox } from './inbox/inbox.js';
export { DEFAULT_DURABLE_INBOX_OPTIONS, type DurableInboxOptions } from './inbox/lease.js';
export type { Logger } from './logging/logger.js';
export { silentLogger, stderrLogger } from './logging/logger.js';
export type {
  BusOptions,
  HandlerContext,
  MessageFor,
  PublishOptions,
  SubscribeOptions,
  Subscription,
  SubscriptionDefaults,
  TransactionalSubscribeOptions,
} from './messaging/bus.js';
export { Bus, DEFAULT_SUBSCRIPTION_OPTIONS } from './messaging/bus.js';
export type {
  Contracts,
  DataIn,
  DataOut,
  MatchingTypes,
  NoContracts,
  TypeOf,
} from './messaging/contracts.js';
export type { Envelope, Message } from './messaging/envelope.js';
export {
  BrokerConnectionError,
  BusClosedError,
  describeThrown,
  InvalidTopicError,
  isBrokerConnectionError,
  isBusClosedError,
  isInvalidTopicError,
  isMalformedMessageError,
  isMessageNotSerializableError,
  isMessageTooLargeError,
  isMessageValidationError,
  isPublishBufferFullError,
  isPublishNackedError,
  isPublishNotConfirmedError,
  isSubscriptionInUseError,
  isUnroutableError,
  MalformedMessageError,
  MessageNotSerializableError,
  MessageTooLargeError,
  MessageValidationError,
  PublishBufferFullError,
  PublishNackedError,
  PublishNotConfirmedError,
  SubscriptionInUseError,
  UnroutableError,
} from './messaging/errors.js';
export { HandlerTimeoutError, isHandlerTimeoutError } from './messaging/handler-timeouts.js';
export type { MemoryBrokerOptions } from './messaging/memory/memory-broker.js';
export { DEFAULT_MEMORY_BROKER_OPTIONS, MemoryBroker } from './messaging/memory/memory-broker.js';
export type { MemoryTransportOptions } from './messaging/memory/memory-transport.js';
export { MemoryTransport } from './messaging/memory/memory-transport.js';
export type { HandlerMiddleware, MessageHandler, SubscriptionInfo } from './messaging/middleware.js';
export { idempotent } from './messaging/middleware.js';
export type { HandlerUnitOfWork } from './messaging/transactional.js';
export type {
  DeadLetter,
  DeadLetterReason,
  Delivery,
  DeliveryHandler,
  DeliveryResult,
  Outcome,
  PendingOutcome,
  ReplayOptions,
  SubscriptionSpec,
  TrackedPublish,
  Transport,
  TransportSubscription,
} from './messaging/transport.js';
export { whenDecided } from './messaging/transport.js';
export type { WireMessage } from './messaging/wire.js';
export {
  DuplicateMessageIdError,
  isDuplicateMessageIdError,
  isOutboxClosedError,
  isOutboxUnhealthyError,
  isSagaConcurrencyError,
  isUnitOfWorkOutcomeUnknownError,
  isUnitOfWorkRolledBackError,
  isUnitOfWorkUnsupportedError,
  OutboxClosedError,
  OutboxUnhealthyError,
  SagaConcurrencyError,
  UnitOfWorkOutcomeUnknownError,
  UnitOfWorkRolledBackError,
  UnitOfWorkUnsupportedError,
} from './outbox/errors.js';
export { MemoryOutboxStorage } from './outbox/memory-outbox-storage.js';
export {
  createOutbox,
  DEFAULT_OUTBOX_OPTIONS,
  type FailedOutboxMessage,
  Outbox,
  type OutboxBacklogReport,
  type OutboxMessage,
  type OutboxOptions,
  type ScheduledOutboxMessage,
  type UnitOfWorkOptions,
} from './outbox/outbox.js';
export { OutboxPublishTimeoutError } from './outbox/relay.js';
export { DEFAULT_HELD_LEASE_MS, DEFAULT_RELAY_OPTIONS, type RelayOptions } from './outbox/relay-options.js';
export {
  isOutboxCapable,
  type OutboxBacklog,
  type OutboxCapable,
  type OutboxInsert,
  type OutboxRow,
  type OutboxStorage,
  type SagaRow,
  type SagaStatus,
  type StorageAppendResult,
  type StorageTransaction,
} from './outbox/storage.js';
export {
  type OutboxPublishOptions,
  type ScheduleOptions,
  UnitOfWork,
  type UnitOfWorkAppendResult,
} from './outbox/unit-of-work.js';
export type {
  Backoff,
  DecorrelatedJitterOptions,
  ExponentialBackoffOptions,
  ExponentialBackoffStrategyOptions,
} from './resilience/backoff.js';
export {
  constantBackoff,
  DEFAULT_DECORRELATED_JITTER,
  DEFAULT_EXPONENTIAL_BACKOFF,
  DEFAULT_EXPONENTIAL_BACKOFF_STRATEGY,
  decorrelatedJitter,
  exponentialBackoff,
  exponentialDelays,
} from './resilience/backoff.js';
export type { RetryBudgetOptions, RetryBudgetStats } from './resilience/budget.js';
export { DEFAULT_RETRY_BUDGET, RetryBudget } from './resilience/budget.js';
export type { BulkheadOptions, BulkheadStats } from './resilience/bulkhead.js';
export { Bulkhead, bulkhead, DEFAULT_BULKHEAD } from './resilience/bulkhead.js';
export type {
  CircuitBreakerOptions,
  CircuitBreakerSnapshot,
  CircuitBreakerStats,
  CircuitState,
  CircuitStateChange,
} from './resilience/circuit-breaker.js';
export { CircuitBreaker, circuitBreaker, DEFAULT_CIRCUIT_BREAKER } from './resilience/circuit-breaker.js';
export { compose, noop } from './resilience/compose.js';
export {
  BulkheadFullError,
  CircuitOpenError,
  isBulkheadFullError,
  isCircuitOpenError,
  isRetryBudgetExhaustedError,
  isTimeoutError,
  RetryBudgetExhaustedError,
  TimeoutError,
} from './resilience/errors.js';
export type { ExecuteOptions, Policy, PolicyContext } from './resilience/policy.js';
export type { RetryBudgetLike, RetryInfo, RetryOptions } from './resilience/retry.js';
export { DEFAULT_RETRY, defaultShouldRetry, RetryPolicy, retry } from './resilience/retry.js';
export type { TimeoutOptions } from './resilience/timeout.js';
export { TimeoutPolicy, timeout } from './resilience/timeout.js';
export type { SagaIgnoredReason, SagaOutcome } from './saga/apply-message.js';
export {
  defineSaga,
  type SagaDefinition,
  type SagaHandler,
  type SagaMessage,
  type SagaOptions,
  type SagaPolicy,
  type SagaStateHandlers,
  type SagaTimeoutData,
  type SagaTimeoutType,
} from './saga/define-saga.js';
export {
  isSagaCompletedError,
  isSagaDefinitionError,
  isSagaTransitionError,
  isSagaUnknownInstanceError,
  SagaCompletedError,
  SagaDefinitionError,
  SagaTransitionError,
  SagaUnknownInstanceError,
} from './saga/errors.js';
export {
  SagaContext,
  type SagaPublishOptions,
  type SagaState,
  type SagaTimeoutWhen,
} from './saga/saga-context.js';
export {
  type RunningSaga,
  type SagaInstance,
  type StartSagaOptions,
  startSaga,
} from './saga/start-saga.js';
export {
  type Clock,
  type ClockTimer,
  DEFAULT_VIRTUAL_CLOCK_OPTIONS,
  isVirtualClockRunawayError,
  systemClock,
  VirtualClock,
  type VirtualClockOptions,
  VirtualClockRunawayError,
} from './time/clock.js';
export { redactUrl } from './url/redact-url.js';
export type { StandardSchemaV1 } from './validation/standard-schema.js';
export type { ValidationIssue } from './validation/validation-issue.js';
