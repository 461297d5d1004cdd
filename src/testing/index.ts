export { FaultProxy } from './fault-proxy.js';
export { createTestVhost, rabbitmqBaseUrl, type TestVhost } from './rabbitmq.js';
export { type TransportFeatures, type TransportHarness, testTransport } from './transport-contract.js';
export { sleep, waitFor } from './wait.js';
