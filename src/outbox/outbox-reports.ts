import type { Contracts, DataIn, NoContracts, TypeOf } from '../messaging/contracts.js';
import type { Envelope } from '../messaging/envelope.js';
import type { OutboxRow } from './storage.js';
import type { OutboxPublishOptions } from './unit-of-work.js';

/** A message for {@link Outbox.append}: a contract type, its data, and publish options. */
export type OutboxMessage<C extends Contracts = NoContracts> = {
  [K in TypeOf<C>]: {
    readonly type: K;
    readonly data: DataIn<C, K>;
    readonly options?: OutboxPublishOptions;
  };
}[TypeOf<C>];

/** A message the relay set aside: the broker kept refusing it. */
export interface FailedOutboxMessage {
  readonly id: string;
  readonly key: string;
  readonly type: string;
  readonly attempts: number;
  /** The last refusal. */
  readonly error: string;
  readonly createdAt: Date;
  readonly envelope: Envelope;
}

/** A scheduled message not yet due. */
export interface ScheduledOutboxMessage {
  readonly id: string;
  readonly key: string;
  readonly type: string;
  readonly dueAt: Date;
  readonly envelope: Envelope;
}

/** What waits in the outbox, for health checks and metrics. */
export interface OutboxBacklogReport {
  /** Messages due and not yet published, or waiting for a retry. */
  readonly pending: number;
  /**
   * Messages published and kept until their consumers settle them (handled, dead-lettered): with a
   * transport that holds messages in process memory only (the memory transport), the outbox keeps
   * each row until then, so that a crash loses nothing (`RelayOptions.holdUntilSettled`). Always 0
   * with a durable broker.
   */
  readonly awaitingSettlement: number;
  /** Messages set aside after the broker kept refusing them (see `failed()`). */
  readonly failed: number;
  /** Messages scheduled for later (`work.schedule`), not yet due. */
  readonly scheduled: number;
  /**
   * How long the longest-waiting message pending or failed has waited, in ms (a scheduled message
   * from its due time, any other from its creation); 0 when there is none. Messages awaiting
   * settlement do not count: they were published.
   */
  readonly oldestAgeMs: number;
}

/** The envelope of a stored row; an unreadable one is shown as its text. */
export function parseEnvelope(row: OutboxRow): Envelope {
  try {
    return JSON.parse(row.envelope) as Envelope;
  } catch {
    return { id: row.id, type: '(unreadable)', data: row.envelope } as unknown as Envelope;
  }
}
