import { AssertionError, deepStrictEqual } from 'node:assert';
import { inspect } from 'node:util';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions, refuseUnknownKeys } from '../errors/options-object.js';
import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { Bus } from '../messaging/bus.js';
import type { Contracts, DataIn, TypeOf } from '../messaging/contracts.js';
import type { Message } from '../messaging/envelope.js';
import { MemoryBroker } from '../messaging/memory/memory-broker.js';
import { MemoryTransport } from '../messaging/memory/memory-transport.js';
import { createOutbox, type Outbox } from '../outbox/outbox.js';
import { parseEnvelope } from '../outbox/outbox-reports.js';
import type { UnitOfWork } from '../outbox/unit-of-work.js';
import {
  applySagaMessage,
  outboxMessageCheck,
  SAGA_IGNORED_REASONS,
  type SagaIgnoredReason,
  type SagaOutcome,
  type SagaWork,
} from '../saga/apply-message.js';
import type { SagaDefinition } from '../saga/define-saga.js';
import { parseSagaState } from '../saga/saga-state.js';
import { instanceOf, type SagaInstance } from '../saga/start-saga.js';
import { VirtualClock } from '../time/clock.js';
import { assertMatcher, describeMatcher, type ErrorMatcher, matches } from './spec-assertions.js';

/**
 * One message of a {@link sagaSpec}: a contract message (`id` optional), or `{ timeout: name }` for
 * the named timeout of the instance as it was scheduled (the virtual clock moves to its due time).
 */
export type SagaSpecMessage<C extends Contracts> =
  | { [K in TypeOf<C>]: { readonly type: K; readonly data: DataIn<C, K>; readonly id?: string } }[TypeOf<C>]
  | { readonly timeout: string };

/** A message the saga published or scheduled during `when`. */
export interface SagaSpecSent {
  readonly type: string;
  /** As consumers receive it: its JSON form (a Date as its ISO string, undefined members left out). */
  readonly data: unknown;
}

/** What {@link SagaSpecWhen.then} checks; every field is optional and compared with deep strict equality. */
export interface SagaSpecExpectation<S extends string, D> {
  /** The instance's status after `when`. */
  readonly status?: S;
  readonly data?: D;
  readonly completed?: boolean;
  /** The messages published during `when`, in order (compensations included). */
  readonly published?: readonly SagaSpecSent[];
  /** The messages scheduled during `when`, in order (timeouts). */
  readonly scheduled?: readonly SagaSpecSent[];
  /** The names of the instance's pending timeouts after `when`. */
  readonly timeouts?: readonly string[];
  /** The names of its steps done and not compensated, oldest first. */
  readonly steps?: readonly string[];
}

/** First step of a {@link sagaSpec}: the messages the saga already handled. */
export interface SagaSpec<C extends Contracts, S extends string, D> {
  /** Messages applied in order before `when` (each must be applied or ignored; an error fails the setup). */
  given(messages: readonly SagaSpecMessage<C>[]): SagaSpecGiven<C, S, D>;
}

/** Second step of a {@link sagaSpec}. */
export interface SagaSpecGiven<C extends Contracts, S extends string, D> {
  /** The message under test. */
  when(message: SagaSpecMessage<C>): SagaSpecWhen<S, D>;
}

/** Last step of a {@link sagaSpec}: the expectation. Each resolves, or rejects with an `AssertionError`. */
export interface SagaSpecWhen<S extends string, D> {
  /** The message is applied and the instance, and what it sent, are as `expected`. */
  then(expected: SagaSpecExpectation<S, D>): Promise<void>;
  /** Handling the message throws an error matching `matcher` (a class, a guard, a message pattern). */
  thenThrows(matcher: ErrorMatcher): Promise<void>;
  /** The message changes nothing and sends nothing (for this `reason`, when given). */
  thenIgnored(reason?: SagaIgnoredReason): Promise<void>;
}

/**
 * Tests a saga given/when/then: given these messages, when this one, then this status, data and
 * these messages sent (or this error, or nothing). Runs the same code as `startSaga` (each message
 * in a unit of work of an outbox on a memory store, with a `VirtualClock`), without a relay.
 *
 * @example
 * await sagaSpec(orderSaga)
 *   .given([{ type: 'order.placed', data: { orderId: 'o-1', total: 40 } }, { type: 'stock.reserved', data: { orderId: 'o-1' } }])
 *   .when({ timeout: 'payment' })
 *   .then({ status: 'cancelled', completed: true, published: [{ type: 'stock.release', data: { orderId: 'o-1' } }, …] });
 */
export function sagaSpec<C extends Contracts, N extends string, Start extends TypeOf<C>, S extends string, D>(
  definition: SagaDefinition<C, N, Start, S, D>,
): SagaSpec<C, S, D> {
  return {
    given: (history) => {
      if (!Array.isArray(history)) {
        throw new InvalidOptionsError(
          `sagaSpec given takes an array of messages, not ${describeValue(history)}`,
        );
      }
      history.forEach((message, i) => {
        assertSpecMessage(`sagaSpec given[${i}]`, message);
      });
      return {
        when: (message) => {
          assertSpecMessage('sagaSpec when', message);
          return new SagaSpecRun<C, S, D>(definition as never, history, message);
        },
      };
    },
  };
}

const EXPECTATION_NAMES = ['status', 'data', 'completed', 'published', 'scheduled', 'timeouts', 'steps'];

/** A message `{ type, data, id? }` or `{ timeout }`: a misspelt `id` was dropped, and a new one used. */
function assertSpecMessage(call: string, message: unknown): void {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new InvalidOptionsError(
      `${call} takes a message { type, data, id? } or { timeout }, not ${describeValue(message)}`,
    );
  }
  if ('timeout' in message) refuseUnknownKeys(call, message, ['timeout']);
  else refuseUnknownKeys(call, message, ['type', 'data', 'id']);
}

interface Result {
  readonly outcome: SagaOutcome;
  readonly instance: SagaInstance | undefined;
  readonly published: SagaSpecSent[];
  readonly scheduled: SagaSpecSent[];
}

class SagaSpecRun<C extends Contracts, S extends string, D> implements SagaSpecWhen<S, D> {
  readonly #definition: SagaDefinition;
  readonly #history: readonly SagaSpecMessage<C>[];
  readonly #message: SagaSpecMessage<C>;

  constructor(
    definition: SagaDefinition,
    history: readonly SagaSpecMessage<C>[],
    message: SagaSpecMessage<C>,
  ) {
    this.#definition = definition;
    this.#history = history;
    this.#message = message;
  }

  // biome-ignore lint/suspicious/noThenProperty: given/when/then is the point; `await` on a spec is caught below.
  then(expected: SagaSpecExpectation<S, D>, ...rest: unknown[]): Promise<void> {
    if (typeof expected !== 'object' || expected === null) {
      // `await spec.when(…)` calls then(resolve, reject): reject, or the await would never settle.
      const error = new TypeError(
        'a saga spec is not a promise: end it with .then({ status, … }) instead of awaiting it',
      );
      if (typeof rest[0] === 'function') (rest[0] as (e: unknown) => void)(error);
      const rejected = Promise.reject(error);
      rejected.catch(() => {});
      return rejected;
    }
    return this.#then(expected);
  }

  async #then(expected: SagaSpecExpectation<S, D>): Promise<void> {
    // A misspelt key expected to be undefined (`{ complted: undefined }`) passed whatever ran.
    checkOptions('sagaSpec then', expected, EXPECTATION_NAMES);
    const result = await this.#run();
    if (!result.ok) throw unexpected(result.error, `the instance ${show(expected)}`, 'then');
    const { outcome, instance, published, scheduled } = result.value;
    if (outcome.kind === 'ignored') {
      throw new AssertionError({
        message: `expected the message to be applied, but the saga ignored it (${outcome.reason})`,
        actual: outcome,
        expected,
        operator: 'then',
      });
    }
    const actual: Record<string, unknown> = {
      status: instance?.status,
      data: instance?.data,
      completed: instance?.completed,
      published,
      scheduled,
      timeouts: instance?.timeouts,
      steps: instance?.steps,
    };
    const picked = Object.fromEntries(Object.keys(expected).map((key) => [key, actual[key]]));
    assertDeepEqual(picked, { ...expected }, 'the saga is not as expected', 'then');
  }

  async thenThrows(matcher: ErrorMatcher): Promise<void> {
    assertMatcher(matcher);
    const result = await this.#run();
    if (result.ok) {
      throw new AssertionError({
        message: `expected the saga to throw an error matching ${describeMatcher(matcher)}, but it ${
          result.value.outcome.kind === 'ignored'
            ? `ignored the message (${result.value.outcome.reason})`
            : 'applied the message'
        }`,
        actual: result.value.outcome,
        expected: matcher,
        operator: 'thenThrows',
      });
    }
    if (!matches(result.error, matcher)) {
      const failure = new AssertionError({
        message: `the saga threw ${showError(result.error)}, which does not match ${describeMatcher(matcher)}`,
        actual: result.error,
        expected: matcher,
        operator: 'thenThrows',
      });
      failure.cause = result.error;
      throw failure;
    }
  }

  async thenIgnored(reason?: SagaIgnoredReason): Promise<void> {
    // A reason no saga gives (a typo) failed as an unmet expectation, as if the saga were wrong.
    if (reason !== undefined && !(SAGA_IGNORED_REASONS as readonly unknown[]).includes(reason)) {
      throw new InvalidOptionsError(
        `thenIgnored takes one of ${SAGA_IGNORED_REASONS.join(', ')} (or nothing), not ${describeValue(reason)}`,
      );
    }
    const result = await this.#run();
    if (!result.ok) throw unexpected(result.error, 'the message to be ignored', 'thenIgnored');
    const { outcome, published, scheduled } = result.value;
    if (outcome.kind !== 'ignored' || (reason !== undefined && outcome.reason !== reason)) {
      throw new AssertionError({
        message: `expected the saga to ignore the message${reason === undefined ? '' : ` (${reason})`}, but it ${
          outcome.kind === 'ignored' ? `ignored it (${outcome.reason})` : 'applied it'
        }`,
        actual: outcome,
        expected: reason,
        operator: 'thenIgnored',
      });
    }
    assertDeepEqual(
      { published, scheduled },
      { published: [], scheduled: [] },
      'an ignored message sent messages',
      'thenIgnored',
    );
  }

  async #run(): Promise<{ ok: true; value: Result } | { ok: false; error: unknown }> {
    const clock = new VirtualClock({ start: Date.now() });
    const bus = new Bus(new MemoryTransport({ broker: new MemoryBroker({ clock }) }), {
      service: 'saga-spec',
      contracts: this.#definition.contracts,
      logger: silentLogger,
      clock,
    });
    const store = new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger });
    const outbox = await createOutbox({ store, bus, relay: false, clock, logger: silentLogger });
    const state = { lastId: undefined as string | undefined };
    try {
      for (const message of this.#history) await this.#apply(outbox, clock, message, state);
      let value: Result;
      try {
        value = await this.#apply(outbox, clock, this.#message, state);
      } catch (error) {
        return { ok: false, error };
      }
      return { ok: true, value };
    } finally {
      await outbox.close();
      await bus.close();
      await store.close();
    }
  }

  async #apply(
    outbox: Outbox<Contracts>,
    clock: VirtualClock,
    step: SagaSpecMessage<C>,
    state: { lastId: string | undefined },
  ): Promise<Result> {
    const message = await this.#messageOf(outbox, clock, step, state.lastId);
    const published: SagaSpecSent[] = [];
    const scheduled: SagaSpecSent[] = [];
    const outcome = await outbox.unitOfWork((work) =>
      applySagaMessage(
        this.#definition as never,
        recording(work, published, scheduled),
        message,
        () => clock.now(),
        outboxMessageCheck(outbox),
      ),
    );
    if (outcome.id !== undefined) state.lastId = outcome.id;
    const row =
      outcome.id === undefined
        ? undefined
        : await outbox.storage.transaction((tx) => tx.loadSaga(this.#definition.name, outcome.id as string));
    return { outcome, instance: row === undefined ? undefined : instanceOf(row), published, scheduled };
  }

  async #messageOf(
    outbox: Outbox<Contracts>,
    clock: VirtualClock,
    step: SagaSpecMessage<C>,
    lastId: string | undefined,
  ): Promise<Message> {
    if (!('timeout' in step)) {
      const envelope = await outbox.bus.envelopeOf(
        step.type,
        step.data as never,
        step.id === undefined ? {} : { id: step.id },
      );
      return { ...envelope, attempt: 1 };
    }
    const name = this.#definition.name;
    const row =
      lastId === undefined ? undefined : await outbox.storage.transaction((tx) => tx.loadSaga(name, lastId));
    const pending =
      row === undefined ? undefined : parseSagaState(name, row.id, row.state).timeouts[step.timeout];
    if (row === undefined) {
      throw new Error(`saga spec: no instance of "${name}" to time out ("${step.timeout}")`);
    }
    if (pending === undefined) {
      // A timeout that arrives after the saga moved on (cancelled, or fired already): delivered as
      // the saga's own timeout message, which the saga ignores, as the runner does.
      const envelope = await outbox.bus.envelopeOf(
        this.#definition.timeoutType as never,
        { sagaId: row.id, name: step.timeout } as never,
      );
      return { ...envelope, attempt: 1 };
    }
    // Due or not: one scheduled with `delayMs: 0` (or an `at` past) is due at once, yet pending.
    const rows = await outbox.storage.scheduled(Number.MIN_SAFE_INTEGER, 10_000);
    const scheduled = rows.find((r) => r.id === pending.id);
    if (scheduled === undefined)
      throw new Error(`saga spec: the timeout "${step.timeout}" is not in the outbox`);
    // Time passes until it is due, as it would before the relay sent it.
    await clock.advance(Math.max(0, scheduled.dueAt - clock.now()));
    return { ...parseEnvelope(scheduled), attempt: 1 };
  }
}

/**
 * The unit of work, recording what the saga publishes and schedules as consumers receive it: the
 * outbox stores and the transport carries the JSON form of the data (a Date as its ISO string,
 * undefined members left out), which is also what `createTestHarness` records.
 */
function recording(
  work: UnitOfWork<Contracts>,
  published: SagaSpecSent[],
  scheduled: SagaSpecSent[],
): SagaWork {
  return {
    tx: work.tx,
    publish: (type, data, options) => {
      published.push({ type, data: wireForm(data) });
      return work.publish(type, data, options);
    },
    schedule: (type, data, options) => {
      scheduled.push({ type, data: wireForm(data) });
      return work.schedule(type, data, options);
    },
    cancel: (ids) => work.cancel(ids),
  };
}

/** `data` after a JSON round trip; as it is when JSON cannot carry it (the publish then rejects). */
function wireForm(data: unknown): unknown {
  try {
    const json = JSON.stringify(data);
    return json === undefined ? data : JSON.parse(json);
  } catch {
    return data;
  }
}

function assertDeepEqual(actual: unknown, expected: unknown, summary: string, operator: string): void {
  try {
    deepStrictEqual(actual, expected);
  } catch (error) {
    const diff = error instanceof Error ? error.message : String(error);
    throw new AssertionError({ message: `${summary}\n${diff}`, actual, expected, operator });
  }
}

function unexpected(error: unknown, wanted: string, operator: string): AssertionError {
  const failure = new AssertionError({
    message: `expected ${wanted}, but the saga threw ${showError(error)}`,
    actual: error,
    operator,
  });
  failure.cause = error;
  return failure;
}

function showError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : show(error);
}

function show(value: unknown): string {
  return inspect(value, { depth: 6, breakLength: Number.POSITIVE_INFINITY });
}
