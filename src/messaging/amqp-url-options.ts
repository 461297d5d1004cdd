/**
 * Options of the RabbitMQ transport that {@link BusOptions.amqp} passes on when `url` selects it.
 * The bus names only plain types here, never the adapter's module: a service that uses the memory
 * transport then type-checks without amqplib installed. The adapter's `AmqpTransportOptions` extends
 * it with `url` and `logger`; `src/connect/adapter-options.test.ts` checks that nothing else differs.
 */
export interface AmqpUrlOptions {
  /** The topic exchange every message is published to. @default 'ferry.events' */
  readonly exchange?: string;
  /**
   * Type of subscription, delay and dead-letter queues: `'quorum'` or `'classic'` (nothing else).
   * Quorum queues (RabbitMQ's choice for data that matters) are durable, replicated on a cluster,
   * and their delay queues dead-letter at least once; classic queues dead-letter at most once. A
   * queue that already exists as the other type (for instance from an older Ferry, whose default was
   * classic) is used as it is, with one warning that says how to migrate it. @default 'quorum'
   */
  readonly queueType?: 'classic' | 'quorum';
  /** Most publishes awaiting a broker confirm at once. @default 1000 */
  readonly publishWindow?: number;
  /** Most publishes held in memory (in flight plus waiting, e.g. during an outage). @default 100000 */
  readonly maxBufferedPublishes?: number;
  /**
   * Largest encoded body (the JSON of `data`) a publish sends; a larger one rejects at once with
   * `MESSAGE_TOO_LARGE`. Keep it at most the broker's `max_message_size` (RabbitMQ 3.8+: 128 MiB by
   * default): a body the broker refuses closes the publishing channel. If it does, the limit the
   * broker states is learned and used from then on. @default 134217728
   */
  readonly maxMessageBytes?: number;
  /** A publish not confirmed within this time rejects with `PUBLISH_NOT_CONFIRMED`. @default 30000 */
  readonly confirmTimeoutMs?: number;
  /** How long `connect` keeps trying before it fails with `BROKER_UNAVAILABLE`. @default 30000 */
  readonly connectTimeoutMs?: number;
  /** Reconnect backoff: first delay, doubling up to `maxDelayMs`, with full jitter. @default { initialDelayMs: 100, maxDelayMs: 5000 } */
  readonly reconnect?: { readonly initialDelayMs?: number; readonly maxDelayMs?: number };
  /**
   * A message delivered again after its consumer stopped while holding it (crashed, was killed, or
   * lost its connection) is tried again alone, counted; past this many such redeliveries in a row it
   * goes to the dead-letter queue (reason `redelivered`), so a message that crashes every consumer
   * cannot crash them forever. @default 5
   */
  readonly maxRedeliveries?: number;
  /** AMQP heartbeat in seconds (0 turns it off): how fast a dead peer is noticed. @default 10 */
  readonly heartbeatSeconds?: number;
  /** Shown in the RabbitMQ management UI. @default 'ferry' */
  readonly connectionName?: string;
}
