import { isFerryError } from '../errors/ferry-error.js';
import { nameProblem } from '../eventstore/event-encoding.js';
import type { Bus, PublishOptions } from '../messaging/bus.js';
import type { Message } from '../messaging/envelope.js';
import type { SagaRow } from '../outbox/storage.js';
import type { UnitOfWork } from '../outbox/unit-of-work.js';
import type { SagaDefinition, SagaPolicy } from './define-saga.js';
import {
  SagaCompletedError,
  SagaDefinitionError,
  SagaTransitionError,
  SagaUnknownInstanceError,
} from './errors.js';
import { SagaContext } from './saga-context.js';
import {
  jsonProblem,
  parseSagaState,
  type StoredSagaState,
  type StoredTimeout,
  undoMessageId,
} from './saga-state.js';

/** Header of a timeout scheduled with a contract type: `["<saga>","<timeout name>"]`, to recognise it when it fires. */
export const TIMEOUT_HEADER = 'ferry-saga-timeout';

/** What handling one message did to a saga. */
export type SagaOutcome =
  | { readonly kind: 'started' | 'applied'; readonly id: string; readonly completed: boolean }
  | { readonly kind: 'ignored'; readonly id: string | undefined; readonly reason: SagaIgnoredReason };

/**
 * Why a message changed nothing: a start message for an existing instance (`duplicate-start`), a
 * timeout cancelled, replaced or late (`stale-timeout`), or a policy set to `'ignore'`
 * (`unknown-instance`, `completed`, `invalid-transition`).
 */
export type SagaIgnoredReason = (typeof SAGA_IGNORED_REASONS)[number];

/** Every {@link SagaIgnoredReason}. */
export const SAGA_IGNORED_REASONS = [
  'duplicate-start',
  'stale-timeout',
  'unknown-instance',
  'completed',
  'invalid-transition',
] as const;

/** The part of a unit of work a saga uses. */
export type SagaWork = Pick<UnitOfWork, 'tx' | 'publish' | 'schedule' | 'cancel'> & {
  /** True once the unit has ended (its attempt given up on): what it refuses then says nothing of the message. */
  readonly ended?: boolean;
};

/**
 * Checks a message as publishing it through the unit of work's bus would (`bus.envelopeOf`),
 * without sending it: rejects with the bus's error when it would be refused.
 */
export type SagaMessageCheck = (type: string, data: unknown, options: PublishOptions) => Promise<unknown>;

/** The check of what `outbox`'s units of work publish through (compensations included): its bus. */
export function outboxMessageCheck(outbox: { readonly bus: Pick<Bus, 'envelopeOf'> }): SagaMessageCheck {
  return (type, data, options) => outbox.bus.envelopeOf(type as never, data as never, options);
}

// biome-ignore lint/suspicious/noExplicitAny: the runtime serves every saga whatever its types
type AnySaga = SagaDefinition<any, string, any, string, any>;
type AnyContext = SagaContext<never, string, unknown>;
type AnyHandler = (saga: AnyContext, message: Message) => unknown;

/**
 * Applies `message` to its saga instance inside the unit of work `work`: finds the instance,
 * starts it, runs the status's handler, or applies the definition's policy; then carries out the
 * handler's effects (messages, timeouts) and saves the state against the version it loaded (a
 * concurrent change rejects with `SagaConcurrencyError`, and the outbox runs the unit again). The
 * undo messages of the steps the handler recorded are checked with `check` first. The one code path
 * of `startSaga` and `sagaSpec`.
 */
export async function applySagaMessage(
  definition: AnySaga,
  work: SagaWork,
  message: Message,
  now: () => number,
  check: SagaMessageCheck,
  /**
   * The subscription's attempts: a message for an unknown instance is tried again until the last of
   * them, since its start may not have committed yet. @default 1 (onUnknown applies at once)
   */
  attempts = 1,
): Promise<SagaOutcome> {
  const { name } = definition;
  const timeout = timeoutOf(definition, message);
  const id = instanceIdOf(definition, message);
  const row = await work.tx.loadSaga(name, id);
  const policy = (value: SagaPolicy | undefined, fallback: SagaPolicy) => value ?? fallback;

  if (row === undefined) {
    if (timeout !== undefined) return ignored(id, 'stale-timeout');
    if (!definition.startedBy.includes(message.type)) {
      // On PostgreSQL a reply published right after the start message (same key: it goes out once
      // the start is confirmed, not handled) was handled beside it, found no instance and was
      // dead-lettered, the instance left waiting for it for good.
      if (message.attempt < attempts) {
        throw new SagaUnknownInstanceError(name, id, message.type, { retryable: true });
      }
      if (policy(definition.onUnknown, 'dead-letter') === 'ignore') return ignored(id, 'unknown-instance');
      throw new SagaUnknownInstanceError(name, id, message.type);
    }
    const first = definition.initial(message);
    const state: StoredSagaState = {
      status: first?.status,
      data: first?.data,
      timeouts: {},
      undo: [],
      recorded: 0,
    };
    const saga = contextOf(definition, id, state);
    if (!Object.hasOwn(definition.states, state.status)) {
      throw new SagaDefinitionError(
        name,
        `initial() returned status "${String(state.status)}", not declared in states`,
      );
    }
    if (definition.started !== undefined) await runHandler(definition.started as AnyHandler, saga, message);
    await commit(definition, work, saga, {}, undefined, now, check);
    return { kind: 'started', id, completed: saga.completed };
  }

  const stored = parseSagaState(name, id, row.state);
  if (row.status === 'completed') {
    if (timeout !== undefined) return ignored(id, 'stale-timeout');
    if (policy(definition.onCompleted, 'ignore') === 'ignore') return ignored(id, 'completed');
    throw new SagaCompletedError(name, id, message.type);
  }
  const timeouts: Record<string, StoredTimeout> = { ...stored.timeouts };
  if (timeout !== undefined) {
    if (timeouts[timeout]?.id !== message.id) return ignored(id, 'stale-timeout');
    // It fired: no longer pending, whatever the status makes of it.
    delete timeouts[timeout];
  }
  const handlers = definition.states[stored.status] as Readonly<Record<string, AnyHandler>> | undefined;
  const handler =
    handlers !== undefined && Object.hasOwn(handlers, message.type) ? handlers[message.type] : undefined;
  const saga = contextOf(definition, id, { ...stored, timeouts });
  if (handler === undefined) {
    if (timeout !== undefined) {
      // A status that does not handle it: the saga moved on. Saved, so that it is no longer listed.
      await commit(definition, work, saga, timeouts, row, now, check);
      return ignored(id, 'stale-timeout');
    }
    if (definition.startedBy.includes(message.type)) return ignored(id, 'duplicate-start');
    if (policy(definition.onInvalid, 'dead-letter') === 'ignore') return ignored(id, 'invalid-transition');
    throw new SagaTransitionError(name, id, stored.status, message.type);
  }
  await runHandler(handler, saga, message);
  await commit(definition, work, saga, timeouts, row, now, check);
  return { kind: 'applied', id, completed: saga.completed };
}

/**
 * Runs a handler, then seals the saga's context: a `saga.*` call made after the handler returned (an
 * un-awaited helper, a timer) throws instead of being accepted and never applied.
 */
async function runHandler(handler: AnyHandler, saga: AnyContext, message: Message): Promise<void> {
  try {
    await handler(saga, message);
  } finally {
    saga.seal();
  }
}

function ignored(id: string | undefined, reason: SagaIgnoredReason): SagaOutcome {
  return { kind: 'ignored', id, reason };
}

function contextOf(definition: AnySaga, id: string, state: StoredSagaState): AnyContext {
  return new SagaContext(definition.name, id, new Set(Object.keys(definition.states)), state);
}

/** The name of the timeout `message` is, when it is one of this saga's timeouts. */
function timeoutOf(definition: AnySaga, message: Message): string | undefined {
  if (message.type === definition.timeoutType) {
    const name = (message.data as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') {
      throw new SagaDefinitionError(definition.name, `timeout message ${message.id} has no name`);
    }
    return name;
  }
  const header = message.headers?.[TIMEOUT_HEADER];
  if (header === undefined) return undefined;
  try {
    const [saga, name] = JSON.parse(header) as unknown[];
    return saga === definition.name && typeof name === 'string' ? name : undefined;
  } catch {
    return undefined;
  }
}

/** The id of the instance `message` belongs to; throws `SagaDefinitionError` when it has none. */
export function instanceIdOf(definition: AnySaga, message: Message): string {
  let id: unknown;
  if (message.type === definition.timeoutType) {
    id = (message.data as { sagaId?: unknown } | null)?.sagaId;
  } else {
    const correlate = (definition.id as Readonly<Record<string, (m: Message) => unknown>>)[message.type];
    if (correlate === undefined || !Object.hasOwn(definition.id, message.type)) {
      throw new SagaDefinitionError(definition.name, `no id for message type "${message.type}"`);
    }
    id = correlate(message);
  }
  // No NUL nor lone surrogate either: PostgreSQL refuses the one and turns the other into U+FFFD,
  // which would make two instances one.
  const problem = nameProblem(id, 500);
  if (problem !== undefined) {
    throw new SagaDefinitionError(
      definition.name,
      `the id of message ${message.id} ("${message.type}") must be a non-empty string of at most 500 characters, without NUL or lone surrogates: it ${problem}`,
    );
  }
  return id as string;
}

/** Carries out the handler's effects in order, cancels what completion leaves pending, saves the state. */
async function commit(
  definition: AnySaga,
  work: SagaWork,
  saga: AnyContext,
  loaded: Readonly<Record<string, StoredTimeout>>,
  row: SagaRow | undefined,
  now: () => number,
  check: SagaMessageCheck,
): Promise<void> {
  const { name } = definition;
  for (const undo of saga.recordedHere) {
    try {
      // As the compensation will send it: a refusal then would be retried and dead-lettered, and
      // the step never undone.
      await check(undo.type, undo.data, { id: undoMessageId(name, saga.id, undo.step, undo.recording) });
    } catch (error) {
      // Only what Ferry refuses on purpose; anything else (a schema that threw) fails as it would in `send`.
      if (!isFerryError(error)) throw error;
      throw new SagaDefinitionError(
        name,
        `instance "${saga.id}": the undo message of step "${undo.step}" could not be sent: ${error.message}`,
        { cause: error },
      );
    }
  }
  const { status, data } = saga.state;
  const problem = jsonProblem(data, 'data');
  if (problem !== undefined) {
    throw new SagaDefinitionError(name, `the state of instance "${saga.id}" must survive JSON: ${problem}`);
  }
  const timeouts: Record<string, StoredTimeout> = { ...loaded };
  const cancel = async (timeout: string) => {
    const pending = timeouts[timeout];
    if (pending === undefined) return;
    delete timeouts[timeout];
    // A row already leased by a relay is not cancelled: it fires, and is then ignored as stale.
    await work.cancel([pending.id]);
  };
  for (const effect of saga.effects) {
    if (effect.kind === 'publish') {
      await work
        .publish(effect.type as never, effect.data as never, { key: saga.id, ...effect.options })
        .catch((error: unknown) =>
          unsendable(work, name, saga.id, `message "${String(effect.type)}"`, error),
        );
    } else if (effect.kind === 'cancel') {
      await cancel(effect.name);
    } else {
      await cancel(effect.name);
      const type = effect.type ?? definition.timeoutType;
      const data = effect.type === undefined ? { sagaId: saga.id, name: effect.name } : effect.data;
      // Its own key: a scheduled row would hold back every later row of the instance's key.
      const options =
        effect.type === undefined
          ? {}
          : { headers: { [TIMEOUT_HEADER]: JSON.stringify([name, effect.name]) } };
      const when = 'at' in effect.when ? { at: effect.when.at } : { delayMs: effect.when.delayMs };
      const messageId = await work
        .schedule(type as never, data as never, { ...options, ...when })
        .catch((error: unknown) =>
          unsendable(work, name, saga.id, `the message of timeout "${effect.name}"`, error),
        );
      timeouts[effect.name] = { id: messageId, type };
    }
  }
  if (saga.completed) for (const timeout of Object.keys(timeouts)) await cancel(timeout);
  const state: StoredSagaState = { status, data, timeouts, undo: saga.undo, recorded: saga.recorded };
  const version = row?.version ?? 0;
  await work.tx.saveSaga(
    {
      saga: name,
      id: saga.id,
      state: JSON.stringify(state),
      version: version + 1,
      status: saga.completed ? 'completed' : 'active',
      updatedAt: now(),
    },
    version,
  );
}

/**
 * What a saga asked to send and the bus refuses for the message itself: the same handler run again
 * would ask for it again, so it is a definition error, dead-lettered at once, not retried.
 */
const UNSENDABLE_CODES: ReadonlySet<string> = new Set([
  'MESSAGE_INVALID',
  'INVALID_TOPIC',
  'MESSAGE_NOT_SERIALIZABLE',
  'MESSAGE_TOO_LARGE',
  'INVALID_OPTIONS',
]);

/**
 * Rethrows `error`, as a `SagaDefinitionError` when the message itself could not be sent; not when
 * the unit of work had ended (its attempt timed out): that refusal says nothing of the message.
 */
function unsendable(work: SagaWork, saga: string, id: string, what: string, error: unknown): never {
  if (isFerryError(error) && UNSENDABLE_CODES.has(error.code) && !work.ended) {
    throw new SagaDefinitionError(saga, `instance "${id}": ${what} could not be sent: ${error.message}`, {
      cause: error,
    });
  }
  throw error;
}
