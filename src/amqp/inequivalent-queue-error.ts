import { errorGuard, FerryError } from '../errors/ferry-error.js';
import type { QueueType } from './topology.js';

/**
 * A queue Ferry declares already exists with other arguments (a maximum length, another TTL, …) than
 * Ferry gives it as either queue type: it was declared by something else. Declaring it again cannot
 * succeed, so the subscription fails instead of retrying. A queue that only has the other queue type
 * is not this error: it is used as it is, with a warning.
 */
export class InequivalentQueueError extends FerryError {
  readonly queue: string;
  /** The queue type the transport asked for. */
  readonly queueType: QueueType;
  /** What the broker said (`PRECONDITION_FAILED - inequivalent arg …`). */
  readonly brokerMessage: string;
  constructor(queue: string, queueType: QueueType, brokerMessage: string, options: { cause?: unknown } = {}) {
    super(
      'INEQUIVALENT_QUEUE',
      `queue ${queue} already exists with arguments Ferry does not give it (${brokerMessage}): it was declared by something else; move what it holds and delete it so that Ferry can declare it`,
      options,
    );
    this.queue = queue;
    this.queueType = queueType;
    this.brokerMessage = brokerMessage;
  }
}

export const isInequivalentQueueError = errorGuard<InequivalentQueueError>('INEQUIVALENT_QUEUE');
