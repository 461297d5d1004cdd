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
});

/** `application/problem+json` (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
