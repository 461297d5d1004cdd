/** Header names shared by Ferry's HTTP client and server middleware. */
export const HTTP_HEADER = Object.freeze({
  correlationId: 'x-correlation-id',
  /** W3C trace context. */
  traceparent: 'traceparent',
  /**
   * Milliseconds left of the caller's deadline when the request was sent. Relative rather than a
   * timestamp, so that clock skew between hosts does not matter (gRPC's `grpc-timeout` does the same).
   */
  deadline: 'x-deadline-ms',
  idempotencyKey: 'idempotency-key',
  /** Set on a response replayed from the idempotency store. */
  idempotentReplay: 'idempotent-replayed',
  /**
   * Set (to `1`) on an answer that reports a failed call to another service, after the service's own
   * client already retried it (or chose not to): callers must not retry it, so that only the layer
   * next to the failure retries and load does not multiply along a chain of services.
   * `ServiceClient` never retries an answer carrying it.
   */
  noRetry: 'x-ferry-no-retry',
});

/** `application/problem+json` (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
