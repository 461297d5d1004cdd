import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { positiveIntegerOption } from '../errors/integer-option.js';
import { checkOptions, refuseUnknownKeys } from '../errors/options-object.js';
import { assertStorableKey } from '../errors/storable-text.js';
import { EventStoreClosedError } from '../eventstore/errors.js';
import { pauseAfterLostRace } from '../eventstore/lost-race-pause.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { insideUnitOf, openUnits } from '../eventstore/open-units.js';
import { prepareAppend } from '../eventstore/prepare-append.js';
import type { EventStore } from '../eventstore/store.js';
import type {
  AppendOptions,
  AppendResult,
  EventData,
  ExpectedVersion,
  PreparedEvent,
} from '../eventstore/types.js';
import { nameUuid } from '../ids/name-uuid.js';
import { type Logger, stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts, NoContracts } from '../messaging/contracts.js';
import type { HandlerUnitOfWork } from '../messaging/transactional.js';
import { assertClock, type Clock, type ClockTimer, systemClock } from '../time/clock.js';
import { keepingAlive } from '../time/keep-alive.js';
import { OutboxClosedError, OutboxUnhealthyError, UnitOfWorkUnsupportedError } from './errors.js';
import { callFailed, doomedBy, guarded, lostRace, passedOn } from './guarded-transaction.js';
import { InFlight } from './in-flight.js';
import { MemoryOutboxStorage } from './memory-outbox-storage.js';
import {
  checkLimit,
  DEFAULT_OUTBOX_OPTIONS,
  lookupIds,
  namesNothing,
  type OutboxOptions,
  relayOptions,
} from './outbox-options.js';
import {
  type FailedOutboxMessage,
  type OutboxBacklogReport,
  type OutboxMessage,
  parseEnvelope,
  type ScheduledOutboxMessage,
} from './outbox-reports.js';
import { outboxRow } from './outbox-row.js';
import { Relay } from './relay.js';
import type { RelayOptions } from './relay-options.js';
import { isOutboxCapable, type OutboxInsert, type OutboxStorage } from './storage.js';
import { UnitOfWork } from './unit-of-work.js';

export { DEFAULT_OUTBOX_OPTIONS, type OutboxOptions } from './outbox-options.js';
export type {
  FailedOutboxMessage,
  OutboxBacklogReport,
  OutboxMessage,
  ScheduledOutboxMessage,
} from './outbox-reports.js';

/** Options of one {@link Outbox.unitOfWork} (or {@link Outbox.runHandler}) call. */
export interface UnitOfWorkOptions {
  /**
   * Reruns of the unit of work when it loses a race, from 0 to 10000: for work that knows a lost race
   * means another writer made progress (a saga instance under contention).
   * @default the outbox's `maxRetries`
   */
  readonly maxRetries?: number;
}

/** Bound of {@link UnitOfWorkOptions.maxRetries}: each rerun pauses up to 100 ms, so about 8 minutes at most. */
const MAX_RETRIES_PER_CALL = 10_000;

/** How often marks past retention are deleted, and how many per statement. */
const PRUNE_INTERVAL_MS = 60_000;
const PRUNE_BATCH = 500;

/**
 * The transactional outbox of a service: units of work that change state and publish messages in one
 * database transaction, and a relay that publishes what they committed. Create it with
 * {@link createOutbox}.
 *
 * @example
 * const outbox = await createOutbox({ store, bus });
 * await outbox.unitOfWork(async (work) => {
 *   await work.append(`order-${id}`, [{ type: 'OrderPlaced', data }], { expectedVersion: 'no_stream' });
 *   await work.publish('order.placed', { orderId: id }, { key: id });
 * });
 */
export class Outbox<C extends Contracts = NoContracts> implements HandlerUnitOfWork<UnitOfWork<C>> {
  readonly storage: OutboxStorage;
  readonly bus: Bus<C>;
  readonly clock: Clock;
  readonly #store: EventStore;
  readonly #relay: Relay | undefined;
  readonly #maxRetries: number;
  readonly #retentionMs: number;
  readonly #logger: Logger;
  #pruneTimer: ClockTimer | undefined;
  #pruning: Promise<void> | undefined;
  #pruneAgain = false;
  #closing: Promise<void> | undefined;
  /** Units of work and appends under way: close() waits for them. */
  readonly #inFlight = new InFlight();

  /** Use {@link createOutbox}, which checks the options. */
  constructor(storage: OutboxStorage, options: OutboxOptions<C>) {
    this.storage = storage;
    this.bus = options.bus;
    this.#store = options.store;
    this.clock = options.clock ?? systemClock;
    this.#logger = loggerOption('createOutbox', options.logger) ?? stderrLogger;
    // `=== undefined`, not `??`: null is refused, as for every other option.
    const maxRetries =
      options.maxRetries === undefined ? DEFAULT_OUTBOX_OPTIONS.maxRetries : options.maxRetries;
    if (!Number.isInteger(maxRetries) || maxRetries < 0 || maxRetries > 100) {
      throw new InvalidOptionsError('maxRetries must be an integer from 0 to 100');
    }
    this.#maxRetries = maxRetries;
    this.#retentionMs = positiveIntegerOption(
      'inboxRetentionMs',
      options.inboxRetentionMs,
      DEFAULT_OUTBOX_OPTIONS.inboxRetentionMs,
    );
    // Every option is checked before the store learns of this outbox: one refused leaves nothing behind.
    const relay =
      options.relay === false
        ? undefined
        : relayOptions(options.relay ?? {}, typeof options.bus.transport.publishTracked === 'function');
    // Closing the store closes this outbox first: the units of work called before (their retries
    // too) end on an open store, and the relay stops rather than retrying on a closed one.
    options.store.closeWith({
      refuseClose: () =>
        insideUnitOf(storage)
          ? new UnitOfWorkUnsupportedError(
              'store.close() cannot be called inside a unit of work on the same store: it waits for the units of work called before it to end, that one too',
            )
          : undefined,
      close: () => this.close(),
    });
    if (relay !== undefined) {
      this.#relay = new Relay(storage, options.bus.transport, this.clock, this.#logger, relay);
    }
  }

  /** @internal Starts the relay and the inbox retention. */
  start(): void {
    this.#relay?.start();
    this.#schedulePrune(0);
  }

  /**
   * Runs `work` in one database transaction: what it appends (`work.append`), writes with its own SQL
   * (`work.query`) and publishes (`work.publish`, `work.schedule`) commits together when it resolves,
   * and none of it when it throws (the error is rethrown). Messages are published by the relay after
   * the commit, never before. A unit of work that lost a race (`ConcurrencyError`,
   * `SagaConcurrencyError`) runs again, in a new transaction, up to `maxRetries` times (the outbox's,
   * or this call's `options.maxRetries`), after a jittered pause growing to at most 100 ms: keep
   * `work` free of side effects outside the transaction. Resolves what `work` resolves.
   *
   * On SQLite and memory, units of work of one process run one at a time (SQLite has one writer);
   * keep them short and do not wait inside them for other I/O.
   */
  async unitOfWork<T>(
    work: (work: UnitOfWork<C>) => Promise<T>,
    options: UnitOfWorkOptions = {},
  ): Promise<T> {
    this.#assertOpen();
    this.#assertNotNested('a unit of work');
    if (typeof work !== 'function') {
      throw new InvalidOptionsError(`unitOfWork needs a function (work) => …, not ${describeValue(work)}`);
    }
    checkOptions('unitOfWork', options, ['maxRetries']);
    const maxRetries = options.maxRetries ?? this.#maxRetries;
    if (!Number.isInteger(maxRetries) || maxRetries < 0 || maxRetries > MAX_RETRIES_PER_CALL) {
      throw new InvalidOptionsError(`maxRetries must be an integer from 0 to ${MAX_RETRIES_PER_CALL}`);
    }
    const leave = this.#inFlight.enter();
    try {
      for (let attempt = 0; ; attempt++) {
        let enqueued = 0;
        try {
          const result = await this.storage.transaction(async (tx) => {
            let failure: { readonly error: unknown } | undefined;
            const unit = new UnitOfWork<C>(
              guarded(tx, (error) => {
                failure ??= { error };
              }),
              this.bus,
              this.clock,
            );
            const frame = { storage: this.storage, backend: this.#store.backend, open: true };
            try {
              let value: T;
              try {
                value = await openUnits.run(frame, () => work(unit));
                const failed = await unit.untilCallsSettled();
                // The first call to fail is the cause (not a write's failure that came after one of
                // Ferry's own checks refused a call: a lost race then would run the unit again, hopelessly),
                // unless the store failed under the unit (passed on as it is, below).
                if (failed !== undefined && !(failure !== undefined && passedOn(failure.error))) {
                  throw failed.error === failure?.error ? doomedBy(failed.error) : callFailed(failed.error);
                }
              } catch (error) {
                // Its own SQL ended the transaction: throwing no longer undoes what came before. Or
                // the store failed under it: that, not what the work made of it, is the outcome.
                if (failure !== undefined && passedOn(failure.error)) throw failure.error;
                throw error;
              }
              // One rule on every backend: a write that failed dooms the unit of work, even if the
              // work caught its error (PostgreSQL would roll it back at commit anyway).
              if (failure !== undefined) throw doomedBy(failure.error);
              enqueued = unit.enqueued;
              return value;
            } finally {
              frame.open = false;
              unit.end();
            }
          });
          // Scheduled rows too: the relay sets its next wake-up from the earliest due row.
          if (enqueued > 0) this.#relay?.notify();
          return result;
        } catch (error) {
          if (!lostRace(error) || attempt >= maxRetries) {
            throw error;
          }
          await pauseAfterLostRace(attempt);
        }
      }
    } finally {
      leave();
    }
  }

  /**
   * Appends events to one stream and writes messages about them to the outbox, atomically: the fast
   * path of a unit of work that does only that (an event-sourced command and its integration events).
   * On SQLite and PostgreSQL concurrent calls share commits with each other and with `store.append`
   * (group commit), each append's expected version checked on its own: a refused append
   * (`ConcurrencyError`) writes and publishes nothing, and is not retried here. Re-appending events
   * whose ids are all stored (a retry) writes nothing and publishes nothing. Messages are checked and
   * built as `work.publish` builds them. Resolves the append's result and the message ids.
   *
   * @example
   * await outbox.append(`order-${id}`, [{ type: 'OrderPlaced', data: order }], {
   *   expectedVersion: 'no_stream',
   *   messages: [{ type: 'order.placed', data: { orderId: id }, options: { key: id } }],
   * });
   */
  async append(
    streamId: string,
    events: readonly EventData[],
    options: AppendOptions & { readonly messages?: readonly OutboxMessage<C>[] } = {},
  ): Promise<AppendResult & { readonly messageIds: readonly string[] }> {
    this.#assertOpen();
    this.#assertNotNested('outbox.append');
    // Counted as a unit of work: close() (the store's too) waits for it.
    return this.#inFlight.run(() => this.#append(streamId, events, options));
  }

  async #append(
    streamId: string,
    events: readonly EventData[],
    options: AppendOptions & { readonly messages?: readonly OutboxMessage<C>[] },
  ): Promise<AppendResult & { readonly messageIds: readonly string[] }> {
    checkOptions('outbox.append', options, ['expectedVersion', 'messages']);
    const prepared = prepareAppend(streamId, events, options.expectedVersion);
    const messages = options.messages ?? [];
    if (!Array.isArray(messages)) throw new InvalidOptionsError('messages must be an array');
    const now = this.clock.now();
    const rows: OutboxInsert[] = [];
    // Message ids follow from the events' (unless given): a retry of a stored append (same event ids)
    // names the messages its first call wrote, rather than new ones that are never sent.
    const eventIds = prepared.events.map((e) => e.id).join(',');
    for (const [index, message] of messages.entries()) {
      if (typeof message !== 'object' || message === null) {
        throw new InvalidOptionsError('each message must be an object { type, data, options? }');
      }
      refuseUnknownKeys(`outbox.append messages[${index}]`, message, ['type', 'data', 'options']);
      const options = message.options ?? {};
      const id = options.id ?? nameUuid('ferry-outbox-append', streamId, eventIds, String(index));
      rows.push(await outboxRow(this.bus, message.type, message.data, { ...options, id }, now, now));
    }
    const result =
      this.storage.appendWithMessages === undefined
        ? await this.#appendInTransaction(streamId, prepared.events, prepared.expected, rows)
        : await this.storage.appendWithMessages(streamId, prepared.events, prepared.expected, rows);
    if (rows.length > 0) this.#relay?.notify();
    return { ...result, messageIds: rows.map((row) => row.id) };
  }

  /**
   * Refuses a transaction opened inside a unit of work on the same storage: on SQLite and memory it
   * would wait forever for the outer one; on PostgreSQL it would commit on its own, whatever the
   * outer one does.
   */
  /** Refuses a write once its store is closing it (on every backend alike), or this outbox is closing. */
  #assertOpen(): void {
    this.#assertStoreOpen();
    if (this.#closing !== undefined) throw new OutboxClosedError();
  }

  #assertStoreOpen(): void {
    if (this.#store.refusing) throw new EventStoreClosedError();
  }

  #assertNotNested(what: string): void {
    if (insideUnitOf(this.storage)) {
      throw new UnitOfWorkUnsupportedError(
        `${what} cannot be opened inside a unit of work on the same store: use the work object you have (in a handler subscribed with unitOfWork, context.work)`,
      );
    }
  }

  /**
   * Refuses, alike on every backend, a call that writes apart from the unit of work it is called in,
   * or waits for the relay: on SQLite it would wait for the write lock that unit holds (flush forever,
   * redrive and discard until STORE_BUSY), where PostgreSQL and memory went on.
   */
  #assertOutsideUnit(what: string): void {
    if (insideUnitOf(this.storage)) {
      throw new UnitOfWorkUnsupportedError(
        `${what} cannot be called inside a unit of work on the same store: it would wait for that unit to end (SQLite's write lock); call it after the unit of work`,
      );
    }
  }

  /** {@link append} on a storage without a fast path: a transaction of its own. */
  async #appendInTransaction(
    streamId: string,
    events: readonly PreparedEvent[],
    expected: ExpectedVersion,
    rows: readonly OutboxInsert[],
  ): Promise<AppendResult> {
    // A retry of a stored append enqueues nothing (the messages were enqueued with it).
    const stored = await this.#store.readStream(streamId);
    const found = events.map((e) => stored.find((r) => r.id === e.id));
    if (found.every((r) => r !== undefined)) {
      const last = found[found.length - 1]!;
      return { nextExpectedVersion: last.version, position: last.position };
    }
    return this.storage.transaction(async (tx) => {
      const appended = await tx.append(streamId, events, expected);
      if (rows.length > 0) await tx.enqueue(rows);
      return appended;
    });
  }

  /**
   * The transactional inbox (used by `bus.subscribe(…, { unitOfWork: outbox })`): runs `handle` in a
   * unit of work whose first write marks `messageId` handled by `consumer`. A message already marked
   * runs nothing and resolves `false`; otherwise the mark, the handler's changes and its messages
   * commit together. `options` as {@link unitOfWork}'s.
   */
  runHandler(
    consumer: string,
    messageId: string,
    handle: (work: UnitOfWork<C>, settled: () => Promise<unknown>, end: () => void) => Promise<void>,
    options: UnitOfWorkOptions = {},
  ): Promise<boolean> {
    try {
      assertStorableKey('a consumer name', consumer);
      assertStorableKey('a message id', messageId);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.unitOfWork(async (work) => {
      if (!(await work.tx.markHandled(consumer, messageId, this.clock.now()))) return false;
      await handle(
        work,
        () => work.untilCallsSettled(),
        () => work.end(),
      );
      return true;
    }, options);
  }

  /**
   * Messages waiting, awaiting settlement, failed and scheduled, and the age of the oldest waiting: for
   * health checks and metrics.
   */
  async backlog(): Promise<OutboxBacklogReport> {
    this.#assertStoreOpen();
    const now = this.clock.now();
    const b = await this.storage.backlog(now);
    return {
      pending: b.pending,
      awaitingSettlement: b.held,
      failed: b.failed,
      scheduled: b.scheduled,
      oldestAgeMs: b.oldestWaitingSince === undefined ? 0 : Math.max(0, now - b.oldestWaitingSince),
    };
  }

  /**
   * A readiness check for the server's health middleware (`checks: { outbox: outbox.healthCheck() }`):
   * fails while more than `maxFailed` messages are set aside as failed, or while the oldest message
   * due has waited longer than `maxAgeMs` (the relay is stuck or the broker has been unreachable).
   * Messages published and awaiting settlement by their consumers (memory transport) do not count.
   */
  healthCheck(
    options: { readonly maxAgeMs?: number; readonly maxFailed?: number } = {},
  ): () => Promise<void> {
    checkOptions('outbox.healthCheck', options, ['maxAgeMs', 'maxFailed']);
    const maxAgeMs = options.maxAgeMs === undefined ? 60_000 : options.maxAgeMs;
    const maxFailed = options.maxFailed === undefined ? 0 : options.maxFailed;
    if (!Number.isInteger(maxAgeMs) || maxAgeMs < 1)
      throw new InvalidOptionsError('maxAgeMs must be a positive integer');
    if (!Number.isInteger(maxFailed) || maxFailed < 0)
      throw new InvalidOptionsError('maxFailed must be an integer ≥ 0');
    return async () => {
      const backlog = await this.backlog();
      if (backlog.failed > maxFailed) {
        throw new OutboxUnhealthyError(
          `${backlog.failed} outbox message(s) failed and set aside: see outbox.failed()`,
          backlog,
        );
      }
      if (backlog.oldestAgeMs > maxAgeMs) {
        throw new OutboxUnhealthyError(
          `the oldest outbox message has waited ${backlog.oldestAgeMs} ms (${backlog.pending} pending): is the relay running and the broker reachable?`,
          backlog,
        );
      }
    };
  }

  /** Messages the relay set aside (the broker kept refusing them), oldest first. */
  async failed(limit = 100): Promise<FailedOutboxMessage[]> {
    this.#assertStoreOpen();
    checkLimit(limit);
    const rows = await this.storage.failed(limit);
    return rows.map((row) => {
      const envelope = parseEnvelope(row);
      return {
        id: row.id,
        key: row.key,
        type: envelope.type,
        attempts: row.attempts,
        error: row.lastError ?? '',
        createdAt: new Date(row.createdAt),
        envelope,
      };
    });
  }

  /**
   * Sends failed messages again (as new: attempts from 0). Resolves how many were failed and are now
   * pending. Not inside a unit of work on the same store (`UNIT_OF_WORK_UNSUPPORTED`).
   */
  async redrive(ids: readonly string[]): Promise<number> {
    this.#assertOpen();
    this.#assertOutsideUnit('outbox.redrive()');
    const count = await this.storage.redrive(lookupIds('redrive', ids), this.clock.now());
    if (count > 0) this.#relay?.notify();
    return count;
  }

  /**
   * Deletes failed messages for good (logged), letting the messages of their keys behind them go. Not
   * inside a unit of work on the same store (`UNIT_OF_WORK_UNSUPPORTED`).
   */
  async discard(ids: readonly string[]): Promise<number> {
    this.#assertOpen();
    this.#assertOutsideUnit('outbox.discard()');
    const count = await this.storage.discard(lookupIds('discard', ids));
    if (count > 0) {
      this.#logger.warn(`outbox: discarded ${count} failed message(s): ${ids.join(', ')}`);
      this.#relay?.notify();
    }
    return count;
  }

  /** Scheduled messages not yet due, soonest first; optionally of one key. */
  async scheduled(
    options: { readonly key?: string; readonly limit?: number } = {},
  ): Promise<ScheduledOutboxMessage[]> {
    this.#assertStoreOpen();
    checkOptions('outbox.scheduled', options, ['key', 'limit']);
    const limit = options.limit === undefined ? 100 : options.limit;
    checkLimit(limit);
    const key = options.key;
    if (key !== undefined && typeof key !== 'string') {
      throw new InvalidOptionsError(`scheduled key must be a string, not ${describeValue(key)}`);
    }
    if (key !== undefined && namesNothing(key)) return [];
    const rows = await this.storage.scheduled(this.clock.now(), limit, key);
    return rows.map((row) => {
      const envelope = parseEnvelope(row);
      return { id: row.id, key: row.key, type: envelope.type, dueAt: new Date(row.dueAt), envelope };
    });
  }

  /**
   * Resolves once this process's relay has found nothing due: every message committed before the call
   * and due is published, set aside as failed, or waiting for a retry after a refusal (retry delays
   * are not waited out: see `backlog().pending`), or leased by another process's relay (or behind
   * one of its key that is: that relay publishes it, or this one once the lease ends; also counted
   * in `backlog().pending`). For tests and orderly shutdown; resolves at once
   * without a relay. Published is published: a message held until its consumers settle it (memory
   * transport, see `backlog().awaitingSettlement`) is not waited for. Called inside a unit of work on
   * the same store, it rejects with `UNIT_OF_WORK_UNSUPPORTED` (on SQLite it would wait for that unit).
   */
  flush(): Promise<void> {
    if (this.#store.refusing) return Promise.reject(new EventStoreClosedError());
    try {
      this.#assertOutsideUnit('outbox.flush()');
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#relay?.idle() ?? Promise.resolve();
  }

  /** Messages this process's relay published. */
  get delivered(): number {
    return this.#relay?.delivered ?? 0;
  }

  /**
   * Waits for units of work in flight, then stops the relay after its round in flight (what it
   * published is marked; what it did not stays in the outbox for the next start). With the memory
   * transport it then waits up to `relay.settleOnCloseMs` for the messages it published to be settled
   * by their consumers, deleting their rows; those still unsettled stay in the outbox (logged), and go
   * out again once their lease ends (`leaseMs`). Does not close the store or the bus. Idempotent.
   */
  close(): Promise<void> {
    // It would wait for the very unit of work it is called from to end: forever.
    if (insideUnitOf(this.storage)) {
      return Promise.reject(
        new UnitOfWorkUnsupportedError(
          'outbox.close() cannot be called inside a unit of work of the same outbox: it waits for units of work in flight to end, that one too',
        ),
      );
    }
    this.#closing ??= keepingAlive(async () => {
      this.#pruneTimer?.cancel();
      await this.#pruning;
      await this.#inFlight.idle();
      await this.#relay?.stop();
    });
    return this.#closing;
  }

  #schedulePrune(delayMs: number): void {
    if (this.#closing !== undefined) return;
    this.#pruneTimer = this.clock.setTimeout(() => {
      // The next run is armed before this one starts (a fixed cadence, also under a virtual clock
      // advanced past several periods at once); a run still going when the next is due is followed by
      // one more, not doubled.
      this.#schedulePrune(PRUNE_INTERVAL_MS);
      if (this.#pruning !== undefined) {
        this.#pruneAgain = true;
        return;
      }
      this.#pruning = (async () => {
        do {
          this.#pruneAgain = false;
          await this.#prune();
        } while (this.#pruneAgain && this.#closing === undefined);
      })().finally(() => {
        this.#pruning = undefined;
      });
    }, delayMs);
    this.#pruneTimer.unref?.();
  }

  async #prune(): Promise<void> {
    try {
      const before = this.clock.now() - this.#retentionMs;
      // Small batches, each its own short statement: no long lock on the table.
      while (
        this.#closing === undefined &&
        (await this.storage.pruneHandled(before, PRUNE_BATCH)) === PRUNE_BATCH
      ) {}
    } catch (error) {
      this.#logger.warn(`outbox: could not delete old inbox marks: ${(error as Error).message}`);
    }
  }
}

/** What {@link createOutbox} and its `relay` read. */
const OUTBOX_OPTION_NAMES = [
  'store',
  'bus',
  'relay',
  'maxRetries',
  'inboxRetentionMs',
  'clock',
  'logger',
] as const satisfies readonly (keyof OutboxOptions)[];
const RELAY_OPTION_NAMES = [
  'batchSize',
  'leaseMs',
  'publishTimeoutMs',
  'pollIntervalMs',
  'maxAttempts',
  'retryDelayMs',
  'holdUntilSettled',
  'lingerMs',
  'settleOnCloseMs',
] as const satisfies readonly (keyof RelayOptions)[];

/**
 * Opens the outbox of `store` for `bus` and starts its relay. The store must be on a backend with an
 * outbox: memory, SQLite or PostgreSQL (else `UNIT_OF_WORK_UNSUPPORTED`).
 */
export async function createOutbox<C extends Contracts = NoContracts>(
  options: OutboxOptions<C>,
): Promise<Outbox<C>> {
  // A misspelt key (`relay: { batchsize }`, `maxRetry`) would be dropped for its default.
  checkOptions('createOutbox', options, OUTBOX_OPTION_NAMES);
  if (options === undefined) throw new InvalidOptionsError('createOutbox needs options: { store, bus }');
  // Checked here: left out, they failed with a TypeError from deep inside.
  if (typeof options.store?.backend !== 'object' || typeof options.store.closeWith !== 'function') {
    throw new InvalidOptionsError(
      `createOutbox needs store: an event store (createEventStore), not ${describeValue(options.store)}`,
    );
  }
  if (typeof options.bus?.transport?.publish !== 'function') {
    throw new InvalidOptionsError(
      `createOutbox needs bus: a bus (createBus), not ${describeValue(options.bus)}`,
    );
  }
  if (options.relay !== undefined && options.relay !== false) {
    // `relay: true` was taken as the defaults; a string or a number as well.
    checkOptions('createOutbox relay', options.relay, RELAY_OPTION_NAMES);
  }
  // The relay and the inbox retention arm their timers with it: a clock without setTimeout started
  // the relay, then failed with a TypeError, and the relay's next round ended the process.
  if (options.clock !== undefined) assertClock(options.clock);
  const backend = options.store.backend;
  let storage: OutboxStorage;
  if (isOutboxCapable(backend)) storage = backend.outboxStorage();
  else if (backend instanceof MemoryEventStoreBackend) storage = MemoryOutboxStorage.of(backend);
  else throw new UnitOfWorkUnsupportedError(`the ${backend.name} event store backend has no outbox`);
  const outbox = new Outbox(storage, options);
  outbox.start();
  return outbox;
}
