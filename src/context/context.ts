import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * What travels implicitly with a unit of work: set by the bus around a message handler (and by the
 * HTTP middleware around a request), read by anything that publishes or calls out.
 */
export interface FerryContext {
  /** Ties together every message and call that stems from one original request. */
  readonly correlationId: string;
  /** Id of the message being handled; becomes the causation id of messages published meanwhile. */
  readonly messageId?: string;
  /**
   * Epoch ms by which the work must be done: set from an incoming request's deadline, honoured by
   * outgoing calls. One that is not a finite number (`NaN`, `Infinity`) is no deadline.
   */
  readonly deadline?: number;
  /** W3C trace context of the current request (`00-<trace-id>-<parent-id>-<flags>`). */
  readonly traceparent?: string;
  /** Aborted when the current request is cancelled or its deadline passes. */
  readonly signal?: AbortSignal;
}

const storage = new AsyncLocalStorage<FerryContext>();

/** The context of the current asynchronous execution, if any. */
export function currentContext(): FerryContext | undefined {
  return storage.getStore();
}

/**
 * Runs `fn` with `context` as the ambient context; everything `fn` awaits sees it.
 *
 * @example
 * await runWithContext({ correlationId: req.headers['x-correlation-id'] }, () => bus.publish(...));
 */
export function runWithContext<A extends unknown[], R>(
  context: FerryContext,
  fn: (...args: A) => R,
  ...args: A
): R {
  return storage.run(context, fn, ...args);
}
