export { VirtualClock, type VirtualClockOptions } from '../time/clock.js';
export { onLines, spawnFixture } from './child-process.js';
export {
  type DeciderSpec,
  type DeciderSpecGiven,
  type DeciderSpecWhen,
  deciderSpec,
  type ErrorMatcher,
} from './decider-spec.js';
export { type EventStoreHarness, testEventStore } from './event-store-contract.js';
export { FaultProxy } from './fault-proxy.js';
export {
  type Fault,
  type FaultProblem,
  FaultServer,
  type FaultServerOptions,
  type RecordedRequest,
} from './fault-server.js';
export {
  type HandlerSpec,
  type HandlerSpecExpectation,
  type HandlerSpecGiven,
  type HandlerSpecGivenStep,
  type HandlerSpecMessage,
  type HandlerSpecOptions,
  type HandlerSpecWhen,
  handlerSpec,
  type SpecHandler,
} from './handler-spec.js';
export {
  type ConsumedRecord,
  createTestHarness,
  DEFAULT_TEST_HARNESS_OPTIONS,
  type DeadLetteredRecord,
  type FailedRecord,
  HarnessStalledError,
  type PublishedRecord,
  type SagaInstanceRecord,
  TestHarness,
  type TestHarnessOptions,
  type TestHarnessParts,
} from './harness.js';
export {
  type IdempotencyStoreContractOptions,
  type IdempotencyStoreHarness,
  type IdempotencyStoreUnderTest,
  testIdempotencyStore,
} from './idempotency-store-contract.js';
export { type InboxHarness, type InboxUnderTest, testInbox } from './inbox-contract.js';
export {
  DEFAULT_SELECT_OPTIONS,
  isSelectTimeoutError,
  MessageList,
  type Recorded,
  type RecordFilter,
  type SelectOptions,
  SelectTimeoutError,
} from './message-list.js';
export { type OutboxHarness, testOutbox } from './outbox-contract.js';
export {
  type OutboxStorageHarness,
  type OutboxStorageUnderTest,
  testOutboxStorage,
} from './outbox-storage-contract.js';
export { dropSchemas, postgresTestUrl, testSchemaName } from './postgres.js';
export { createTestVhost, rabbitmqBaseUrl, type TestVhost } from './rabbitmq.js';
export {
  type SagaSpec,
  type SagaSpecExpectation,
  type SagaSpecGiven,
  type SagaSpecMessage,
  type SagaSpecSent,
  type SagaSpecWhen,
  sagaSpec,
} from './saga-spec.js';
export { type TransportFeatures, type TransportHarness, testTransport } from './transport-contract.js';
export { sleep, waitFor } from './wait.js';
