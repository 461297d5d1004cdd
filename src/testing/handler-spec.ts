import { AssertionError } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions, refuseUnknownKeys } from '../errors/options-object.js';
import type { EventStore } from '../eventstore/store.js';
import type { EventData } from '../eventstore/types.js';
import type { HandlerContext, MessageFor, PublishOptions } from '../messaging/bus.js';
import type { Contracts, DataIn, NoContracts, TypeOf } from '../messaging/contracts.js';
import type { UnitOfWork } from '../outbox/unit-of-work.js';
import { checkHarnessMs, createTestHarness, type TestHarness, type TestHarnessParts } from './harness.js';
import type { MessageList } from './message-list.js';
import {
  assertDeepEqual,
  assertMatcher,
  describeMatcher,
  type ErrorMatcher,
  matches,
  show,
  showError,
} from './spec-assertions.js';

/** The handler under test: a transactional handler (`work` is its unit of work; a plain handler ignores it). */
export type SpecHandler<C extends Contracts> = (
  message: MessageFor<C, '#'>,
  context: HandlerContext & { readonly work: UnitOfWork<C> },
) => Promise<void> | void;

/** Options of {@link handlerSpec}. */
export interface HandlerSpecOptions<C extends Contracts> {
  /** @default 'handler-spec' */
  readonly service?: string;
  readonly contracts?: C;
  /**
   * Opens the event store of each run (closed after it): a SQLite one for a handler that runs its own
   * SQL through `work.query`, e.g. `() => createEventStore({ url: \`sqlite:${dir}/${randomUUID()}.db\` })`.
   * @default a new in-memory store
   */
  readonly store?: () => EventStore | Promise<EventStore>;
  /**
   * The harness's `stallMs`: a handler that records nothing for this long in real time is taken to
   * wait for the clock, and time moves on to its `handlerTimeoutMs`. Set it above the real I/O of
   * the handler under test (an HTTP call, a database), else that I/O fails with a `HandlerTimeoutError`.
   * @default 100
   */
  readonly stallMs?: number;
}

/** The state before the message: events by stream id, or a function that sets it up. */
export type HandlerSpecGiven<C extends Contracts> =
  | Readonly<Record<string, readonly EventData[]>>
  | ((parts: TestHarnessParts<C>) => Promise<void> | void);

/** The message the handler gets; published on the harness's bus, so contracts check it. */
export interface HandlerSpecMessage<C extends Contracts, K extends TypeOf<C>> {
  readonly type: K;
  readonly data: DataIn<C, K>;
  readonly options?: PublishOptions;
}

/** What the handler must have done. Each field left out is not checked. */
export interface HandlerSpecExpectation {
  /**
   * Exactly these messages published by the run (type and data, in order; outbox messages once
   * relayed): those whose causation id is the `when` message's.
   */
  readonly published?: readonly { readonly type: string; readonly data: unknown }[];
  /**
   * Exactly these events appended by the run (causation id the `when` message's), by stream id (type
   * and data, in order); `{}` for none.
   */
  readonly appended?: Readonly<Record<string, readonly { readonly type: string; readonly data: unknown }[]>>;
}

/** First step of a {@link handlerSpec}. */
export interface HandlerSpec<C extends Contracts> {
  /** The state before the message. Optional: `when` alone starts from an empty store. */
  given(state: HandlerSpecGiven<C>): HandlerSpecGivenStep<C>;
  when<K extends TypeOf<C>>(message: HandlerSpecMessage<C, K>): HandlerSpecWhen;
}

/** Second step of a {@link handlerSpec}. */
export interface HandlerSpecGivenStep<C extends Contracts> {
  when<K extends TypeOf<C>>(message: HandlerSpecMessage<C, K>): HandlerSpecWhen;
}

/** Last step of a {@link handlerSpec}: runs the handler once and rejects with an `AssertionError` when unmet. */
export interface HandlerSpecWhen {
  /** The handler succeeded and did what `expected` says. Await it; do not await the spec itself. */
  then(expected: HandlerSpecExpectation): Promise<void>;
  /** The handler threw an error matching `matcher` (its unit of work rolled back). */
  thenThrows(matcher: ErrorMatcher): Promise<void>;
}

/**
 * Tests one message handler given/when/then, in a {@link createTestHarness} of its own: given this
 * state, when this message, then these messages published and these events appended (or this
 * error). The handler runs once (no retries) in a unit of work of the harness's outbox.
 *
 * @example
 * await handlerSpec(({ store }) => onPaymentCaptured(store), { contracts })
 *   .given({ 'order-42': [{ type: 'OrderPlaced', data: { total: 5 } }] })
 *   .when({ type: 'payment.captured', data: { orderId: '42' } })
 *   .then({
 *     published: [{ type: 'order.confirmed', data: { orderId: '42' } }],
 *     appended: { 'order-42': [{ type: 'OrderConfirmed', data: {} }] },
 *   });
 */
export function handlerSpec<C extends Contracts = NoContracts>(
  build: (parts: TestHarnessParts<C>) => SpecHandler<C>,
  options: HandlerSpecOptions<C> = {},
): HandlerSpec<C> {
  // Checked as every Ferry call checks its options: a misspelt key would be dropped without a word.
  if (typeof build !== 'function') {
    throw new InvalidOptionsError(`handlerSpec needs a build(parts) function, not ${describeValue(build)}`);
  }
  checkOptions('handlerSpec', options, ['service', 'contracts', 'store', 'stallMs']);
  if (options.stallMs !== undefined) checkHarnessMs('handlerSpec stallMs', options.stallMs);
  if (options.store !== undefined && typeof options.store !== 'function') {
    throw new InvalidOptionsError(
      `handlerSpec store must be a function that opens a store for each run, not ${describeValue(options.store)}`,
    );
  }
  const when =
    (given: HandlerSpecGiven<C> | undefined) =>
    <K extends TypeOf<C>>(message: HandlerSpecMessage<C, K>): HandlerSpecWhen => {
      if (typeof message !== 'object' || message === null || typeof message.type !== 'string') {
        throw new InvalidOptionsError(
          `handlerSpec when needs a message { type, data, options? }, not ${describeValue(message)}`,
        );
      }
      refuseUnknownKeys('handlerSpec when', message, ['type', 'data', 'options']);
      return new HandlerSpecRun(build, options, given, message);
    };
  return {
    given: (state) => {
      assertGiven(state);
      return { when: when(state) };
    },
    when: when(undefined),
  };
}

/** `given` is a setup function or events by stream id: anything else was taken as no events at all. */
function assertGiven(state: unknown): void {
  if (typeof state === 'function') return;
  if (typeof state !== 'object' || state === null || Array.isArray(state)) {
    throw new InvalidOptionsError(
      `handlerSpec given takes events by stream id or a setup function, not ${describeValue(state)}`,
    );
  }
  for (const [streamId, events] of Object.entries(state)) {
    if (!Array.isArray(events)) {
      throw new InvalidOptionsError(
        `handlerSpec given: the events of stream ${describeValue(streamId)} must be an array, not ${describeValue(events)}`,
      );
    }
  }
}

interface Outcome {
  readonly error?: { readonly thrown: unknown };
  readonly published: { type: string; data: unknown }[];
  readonly appended: Record<string, { type: string; data: unknown }[]>;
}

class HandlerSpecRun<C extends Contracts, K extends TypeOf<C>> implements HandlerSpecWhen {
  readonly #build: (parts: TestHarnessParts<C>) => SpecHandler<C>;
  readonly #options: HandlerSpecOptions<C>;
  readonly #given: HandlerSpecGiven<C> | undefined;
  readonly #message: HandlerSpecMessage<C, K>;

  constructor(
    build: (parts: TestHarnessParts<C>) => SpecHandler<C>,
    options: HandlerSpecOptions<C>,
    given: HandlerSpecGiven<C> | undefined,
    message: HandlerSpecMessage<C, K>,
  ) {
    this.#build = build;
    this.#options = options;
    this.#given = given;
    this.#message = message;
  }

  // biome-ignore lint/suspicious/noThenProperty: given/when/then is the point; `await` on a spec is caught below.
  then(expected: HandlerSpecExpectation): Promise<void> {
    // `await spec.when(message)` would call this with resolve and reject: throwing at once rejects
    // that await (a rejected promise returned to it would be ignored, and the await would hang).
    if (typeof expected !== 'object' || expected === null) {
      throw new TypeError(
        'a handler spec is not a promise: end it with `await ….then({ published, appended })`',
      );
    }
    return this.#then(expected);
  }

  async #then(expected: HandlerSpecExpectation): Promise<void> {
    // A misspelt expectation (`publshed`) was not checked at all, and the spec passed whatever ran.
    checkOptions('handlerSpec then', expected, ['published', 'appended']);
    if (expected.published !== undefined && !Array.isArray(expected.published)) {
      throw new InvalidOptionsError(
        `handlerSpec then: published must be an array of { type, data }, not ${describeValue(expected.published)}`,
      );
    }
    const { appended } = expected;
    if (
      appended !== undefined &&
      (typeof appended !== 'object' || appended === null || Array.isArray(appended))
    ) {
      throw new InvalidOptionsError(
        `handlerSpec then: appended must be events by stream id ({} for none), not ${describeValue(appended)}`,
      );
    }
    const outcome = await this.#run();
    if (outcome.error !== undefined) {
      const failure = new AssertionError({
        message: `expected the handler to succeed, but it threw ${showError(outcome.error.thrown)}`,
        actual: outcome.error.thrown,
        operator: 'then',
      });
      failure.cause = outcome.error.thrown;
      throw failure;
    }
    if (expected.published !== undefined) {
      assertDeepEqual(outcome.published, expected.published, 'the handler published other messages', 'then');
    }
    if (expected.appended !== undefined) {
      assertDeepEqual(outcome.appended, expected.appended, 'the handler appended other events', 'then');
    }
  }

  async thenThrows(matcher: ErrorMatcher): Promise<void> {
    assertMatcher(matcher);
    const outcome = await this.#run();
    if (outcome.error === undefined) {
      throw new AssertionError({
        message: `expected the handler to throw an error matching ${describeMatcher(matcher)}, but it succeeded and published ${show(outcome.published)}`,
        expected: matcher,
        operator: 'thenThrows',
      });
    }
    if (!matches(outcome.error.thrown, matcher)) {
      const failure = new AssertionError({
        message: `the handler threw ${showError(outcome.error.thrown)}, which does not match ${describeMatcher(matcher)}`,
        actual: outcome.error.thrown,
        expected: matcher,
        operator: 'thenThrows',
      });
      failure.cause = outcome.error.thrown;
      throw failure;
    }
  }

  async #run(): Promise<Outcome> {
    const type = this.#message.type;
    const id = this.#message.options?.id ?? randomUUID();
    let harness: TestHarness<C> | undefined;
    let store: EventStore | undefined;
    try {
      store = await this.#options.store?.();
      harness = await createTestHarness<C>({
        ...(store === undefined ? {} : { store }),
        service: this.#options.service ?? 'handler-spec',
        ...(this.#options.stallMs === undefined ? {} : { stallMs: this.#options.stallMs }),
        ...(this.#options.contracts === undefined ? {} : { contracts: this.#options.contracts }),
        setup: async (parts) => {
          if (typeof this.#given === 'function') await this.#given(parts);
          else {
            for (const [streamId, events] of Object.entries(this.#given ?? {})) {
              await parts.store.append(streamId, events);
            }
          }
          const handler = this.#build(parts);
          // The handler runs once, on the spec's message: not again on a message of its type it
          // publishes (a follow-up), nor on one that `given` sent.
          const once: SpecHandler<C> = (message, context) =>
            message.id === id ? handler(message, context) : undefined;
          await parts.bus.subscribe(type, once as never, { unitOfWork: parts.outbox, maxAttempts: 1 });
        },
      });
      const h = harness;
      // What `given` set off is part of the state, not of the outcome.
      await h.settle();
      let from = 0n;
      for await (const event of h.store.readAll()) from = event.position + 1n;
      // A record of the when message: its type and id (another subscription's run on a message
      // of the handler that reuses the id has another type; undecodable bytes have no message).
      const ours = (record: {
        readonly type: string;
        readonly message?: { readonly id: string } | undefined;
      }) => record.type === type && record.message?.id === id;
      await h.bus.publish(type, this.#message.data, { ...this.#message.options, id });
      const done = (
        list: MessageList<{ readonly type: string; readonly message?: { readonly id: string } | undefined }>,
      ) => list.count(ours) > 0;
      await h.eventually(() => done(h.consumed) || done(h.failed) || done(h.deadLettered), {
        what: `a run of the handler of ${type}`,
      });
      if (!done(h.consumed) && !done(h.failed)) {
        // Expired (a ttlMs, an expiresAt past) or refused before any handler ran: it said only
        // that no run came within the wait.
        const [letter] = h.deadLettered.all(ours);
        throw new InvalidOptionsError(
          `handlerSpec: the when message (${type}) was dead-lettered before the handler ran (${letter?.reason.kind}: ${letter?.reason.message})`,
        );
      }
      await h.settle();
      // The handler's own work is what the when message caused (the ambient causation id its
      // publishes and appends carry): not a timer `given` set that fell due meanwhile, nor what
      // another subscription did in reply. A message of the handler reusing the when id counts too.
      const caused = (causation: unknown) => causation === id;
      const appended: Record<string, { type: string; data: unknown }[]> = {};
      for await (const event of h.store.readAll({ fromPosition: from })) {
        if (!caused(event.metadata.causationId)) continue;
        const stream = appended[event.streamId] ?? [];
        stream.push({ type: event.type, data: event.data });
        appended[event.streamId] = stream;
      }
      const [failed] = h.failed.all(ours);
      return {
        ...(failed === undefined ? {} : { error: { thrown: failed.error } }),
        published: h.published
          .all((p) => caused(p.message.causationid))
          .map((p) => ({ type: p.type, data: p.message.data })),
        appended,
      };
    } finally {
      await harness?.close();
      await store?.close();
    }
  }
}
