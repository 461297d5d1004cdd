import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { type Logger, stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import {
  type Bus,
  DEFAULT_SUBSCRIPTION_OPTIONS,
  type SubscribeOptions,
  type Subscription,
} from '../messaging/bus.js';
import type { Contracts, TypeOf } from '../messaging/contracts.js';
import type { Message } from '../messaging/envelope.js';
import type { HandlerUnitOfWork } from '../messaging/transactional.js';
import type { Outbox } from '../outbox/outbox.js';
import { namesNothing } from '../outbox/outbox-options.js';
import type { SagaRow, SagaStatus } from '../outbox/storage.js';
import type { UnitOfWork } from '../outbox/unit-of-work.js';
import { applySagaMessage, instanceIdOf, outboxMessageCheck } from './apply-message.js';
import type { SagaDefinition } from './define-saga.js';
import { instanceTurns } from './instance-turns.js';
import { parseSagaState, type StoredSagaState } from './saga-state.js';

/** Options of {@link startSaga}. */
export interface StartSagaOptions<BC extends Contracts> {
  /** The outbox whose store keeps the instances and whose units of work apply the messages. */
  readonly outbox: Outbox<BC>;
  /** The bus to subscribe on. @default the outbox's bus */
  readonly bus?: Bus<BC>;
  /** The subscription group, shared by every process running the saga. @default `saga-<name>` */
  readonly group?: string;
  /**
   * Options of the subscriptions (concurrency, maxAttempts, backoff, handlerTimeoutMs…). Errors the
   * saga raises on purpose (invalid transition, unknown or completed instance under `'dead-letter'`)
   * are dead-lettered at once whatever `maxAttempts` says.
   */
  readonly subscribe?: Omit<SubscribeOptions, 'group'>;
  /** Where ignored messages are logged (debug). @default warnings and errors to stderr */
  readonly logger?: Logger;
}

/**
 * Reruns of a message that lost the race on its instance (`SagaConcurrencyError`), each after a
 * jittered pause growing to 100 ms (the outbox's). Far more than the outbox's `maxRetries`: a lost race
 * on an instance means another message of it committed, so rerunning always makes progress, and under
 * sustained contention (many messages of one instance on several processes) a message may lose many
 * times in a row. The handler's time limit (`handlerTimeoutMs`) ends the reruns sooner: the attempt
 * then fails as any timed-out attempt does.
 */
const SAGA_CONFLICT_RETRIES = 1000;

/** A saga instance as stored. */
export interface SagaInstance<S extends string = string, D = unknown> {
  readonly id: string;
  readonly status: S;
  readonly data: D;
  /** Whether the instance is completed. */
  readonly completed: boolean;
  /** Names of its pending timeouts. */
  readonly timeouts: readonly string[];
  /** Names of its steps done and not compensated, oldest first. */
  readonly steps: readonly string[];
  /** 1 after the first message, + 1 per message that changed it. */
  readonly version: number;
  readonly updatedAt: Date;
}

/** A running saga, from {@link startSaga}. */
export interface RunningSaga<S extends string = string, D = unknown> {
  readonly name: string;
  /** One subscription per message type the saga handles. */
  readonly subscriptions: readonly Subscription[];
  /** Instances, least recently updated first, optionally only the active or completed ones. @default all, up to 100 */
  instances(options?: {
    readonly status?: SagaStatus;
    readonly limit?: number;
  }): Promise<SagaInstance<S, D>[]>;
  /** One instance, or `undefined`. */
  get(id: string): Promise<SagaInstance<S, D> | undefined>;
  /** Closes the subscriptions (waiting for the messages in flight). Idempotent. */
  close(): Promise<void>;
}

/** The names of the sagas started on each outbox (for the test harness's checks). */
const startedSagas = new WeakMap<object, Set<string>>();

/** @internal The names of the sagas `startSaga` started on `outbox`, in start order. */
export function sagasStartedOn(outbox: object): readonly string[] {
  return [...(startedSagas.get(outbox) ?? [])];
}

/**
 * Runs a saga: subscribes its group (`saga-<name>`) to every message type it handles, each message
 * applied in a unit of work of `outbox` (the transactional inbox: a redelivered message has no
 * effect), its instance loaded and saved with optimistic concurrency, its messages and timeouts
 * committed with its state. Two processes may run the same saga on one database: a message that
 * loses a race on an instance is run again by the outbox, up to 1000 times (with
 * pauses growing to 100 ms) within the handler's time limit (`handlerTimeoutMs`).
 *
 * @example
 * const outbox = await createOutbox({ store, bus });
 * const running = await startSaga(orderSaga, { outbox });
 * await bus.publish('order.placed', { orderId: 'o-1', total: 40 });
 * // later
 * await running.get('o-1'); // { status: 'charging', data: …, timeouts: ['payment'], … }
 */
export async function startSaga<
  BC extends Contracts,
  C extends Contracts,
  N extends string,
  Start extends TypeOf<C>,
  S extends string,
  D,
>(definition: SagaDefinition<C, N, Start, S, D>, options: StartSagaOptions<BC>): Promise<RunningSaga<S, D>> {
  // A misspelt `subscibe` or `grup` would be dropped for its default.
  checkOptions('startSaga', options, ['outbox', 'bus', 'group', 'subscribe', 'logger']);
  if (typeof definition !== 'object' || definition === null || !Array.isArray(definition.handledTypes)) {
    throw new InvalidOptionsError(
      `startSaga needs a saga definition (defineSaga), not ${describeValue(definition)}`,
    );
  }
  const { outbox } = options;
  if (outbox === undefined || typeof outbox.unitOfWork !== 'function') {
    throw new InvalidOptionsError('startSaga needs an outbox (createOutbox)');
  }
  const bus = options.bus ?? outbox.bus;
  const group = options.group ?? `saga-${definition.name}`;
  const logger = loggerOption('startSaga', options.logger) ?? stderrLogger;
  const now = () => outbox.clock.now();
  const check = outboxMessageCheck(outbox);
  if ((options.subscribe as { readonly group?: unknown } | undefined)?.group !== undefined) {
    // It was dropped for `saga-<name>` without a word.
    throw new InvalidOptionsError("startSaga's subscribe takes no group: give startSaga's own group option");
  }
  const attempts =
    options.subscribe?.maxAttempts ??
    bus.subscriptionDefaults?.maxAttempts ??
    DEFAULT_SUBSCRIPTION_OPTIONS.maxAttempts;
  const handle = async (
    message: Message,
    context: { readonly work: UnitOfWork<BC>; readonly signal: AbortSignal },
  ) => {
    // Each rerun after a lost race starts here: stop once the attempt timed out or lost its claim.
    const { signal, work } = context;
    if (signal.aborted) throw signal.reason;
    const outcome = await applySagaMessage(definition as never, work as never, message, now, check, attempts);
    if (outcome.kind === 'ignored') {
      logger.debug(
        `saga "${definition.name}" ignored message ${message.id} (${message.type}) for instance "${outcome.id}": ${outcome.reason}`,
      );
    }
  };
  const unitOfWork: HandlerUnitOfWork<UnitOfWork> = {
    runHandler: (consumer, messageId, run) =>
      (outbox as unknown as Outbox).runHandler(consumer, messageId, run, {
        maxRetries: SAGA_CONFLICT_RETRIES,
      }),
  };
  let closed = false;
  const oneAtATime = instanceTurns(
    outbox.storage,
    definition.name,
    (message) => {
      try {
        return instanceIdOf(definition as never, message);
      } catch {
        return undefined;
      }
    },
    // The runner's close, or its bus's, gave up on what still waits: handed back, not to be handled.
    () => closed || (bus as unknown as Bus).handlersGivenUp,
  );
  const mine = options.subscribe?.middleware;
  const subscriptions: Subscription[] = [];
  try {
    for (const type of definition.handledTypes) {
      subscriptions.push(
        await (bus as unknown as Bus).subscribe(type, handle as never, {
          ...options.subscribe,
          // Not a list: passed on as it is, for the bus to refuse (INVALID_OPTIONS).
          middleware: Array.isArray(mine) ? [oneAtATime, ...mine] : (mine ?? [oneAtATime]),
          group,
          unitOfWork,
        }),
      );
    }
  } catch (error) {
    await Promise.all(subscriptions.map((s) => s.close()));
    throw error;
  }
  // Only once started: a saga whose subscribe was refused has no instances to look for.
  startedSagas.set(outbox, (startedSagas.get(outbox) ?? new Set<string>()).add(definition.name));
  let closing: Promise<void> | undefined;
  const storage = outbox.storage;
  return {
    name: definition.name,
    subscriptions,
    async instances(query = {}) {
      checkOptions('instances', query, ['status', 'limit']);
      // 'bogus' (or 'Active') listed nothing, as if no instance had that status.
      if (query.status !== undefined && query.status !== 'active' && query.status !== 'completed') {
        throw new InvalidOptionsError(
          `status must be 'active' or 'completed' (or left out for both), not ${describeValue(query.status)}`,
        );
      }
      const limit = query.limit ?? 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
        throw new InvalidOptionsError('limit must be an integer from 1 to 10000');
      }
      const rows = await storage.sagas(definition.name, limit, query.status);
      return rows.map((row) => instanceOf<S, D>(row));
    },
    async get(id) {
      if (typeof id !== 'string') {
        throw new InvalidOptionsError(`a saga instance id is a string, not ${describeValue(id)}`);
      }
      // No instance has such an id (starting one refuses it), and PostgreSQL text cannot hold it.
      if (namesNothing(id)) return undefined;
      const row = await storage.transaction((tx) => tx.loadSaga(definition.name, id));
      return row === undefined ? undefined : instanceOf<S, D>(row);
    },
    close() {
      // Once closed, a message still waiting for its instance's turn was handed back: not handled.
      // Together: a message of one waiting for the turn a given-up handler of another held finds
      // them all closed (it was handled on memory, the turn freed before its subscription gave up).
      closing ??= (bus as unknown as Bus).closeSubscriptions(subscriptions).then(() => {
        closed = true;
      });
      return closing;
    },
  };
}

/** @internal Reads a stored row as an instance (also for `sagaSpec`). */
export function instanceOf<S extends string, D>(row: SagaRow): SagaInstance<S, D> {
  const state: StoredSagaState = parseSagaState(row.saga, row.id, row.state);
  return {
    id: row.id,
    status: state.status as S,
    data: state.data as D,
    completed: row.status === 'completed',
    timeouts: Object.keys(state.timeouts),
    steps: state.undo.map((u) => u.step),
    version: row.version,
    updatedAt: new Date(row.updatedAt),
  };
}
