import { AssertionError } from 'node:assert';
import { type Decider, type DeciderEvent, decideEvents, fold } from '../eventstore/decider.js';
import {
  assertDeepEqual,
  assertMatcher,
  describeMatcher,
  type ErrorMatcher,
  matches,
  show,
  showError,
} from './spec-assertions.js';

export type { ErrorMatcher } from './spec-assertions.js';

/** First step of a {@link deciderSpec}: the history of the stream. */
export interface DeciderSpec<C, E extends DeciderEvent, S> {
  /** The events already in the stream, folded with `evolve` from `initialState()`. Pass `[]` for a new stream. */
  given(events: readonly E[]): DeciderSpecGiven<C, E, S>;
}

/** Second step of a {@link deciderSpec}: the command. */
export interface DeciderSpecGiven<C, E extends DeciderEvent, S> {
  /** The command to decide in the given state. */
  when(command: C): DeciderSpecWhen<E, S>;
}

/** Last step of a {@link deciderSpec}: the expectation, which runs `decide` and throws an `AssertionError` when unmet. */
export interface DeciderSpecWhen<E extends DeciderEvent, S> {
  /**
   * `decide` returns exactly these events (deep strict equality, in order); `[]` when it must decide
   * nothing. Synchronous: do not `await` the spec.
   */
  then(expected: readonly E[]): void;
  /** `decide` throws an error matching `matcher`. */
  thenThrows(matcher: ErrorMatcher): void;
  /** The state after the given events and the decided ones equals `expected` (deep strict equality). */
  thenState(expected: S): void;
}

/**
 * Tests a {@link Decider} given/when/then, without an event store: given these events, when this
 * command, then these events (or this error, or this state). A failed expectation throws an
 * `AssertionError` from `node:assert`, which every test runner reports with a diff.
 *
 * @example
 * deciderSpec(orderDecider)
 *   .given([{ type: 'OrderPlaced', data: { customerId: 'c-1' } }])
 *   .when({ type: 'Confirm' })
 *   .thenThrows(/no items/);
 */
export function deciderSpec<C, E extends DeciderEvent, S>(decider: Decider<C, E, S>): DeciderSpec<C, E, S> {
  return {
    given: (history) => ({
      when: (command) => new DeciderSpecRun(decider, history, command),
    }),
  };
}

type Outcome<E> =
  | { readonly ok: true; readonly events: readonly E[] }
  | { readonly ok: false; readonly error: unknown };

class DeciderSpecRun<C, E extends DeciderEvent, S> implements DeciderSpecWhen<E, S> {
  readonly #decider: Decider<C, E, S>;
  readonly #history: readonly E[];
  readonly #command: C;

  constructor(decider: Decider<C, E, S>, history: readonly E[], command: C) {
    this.#decider = decider;
    this.#history = history;
    this.#command = command;
  }

  // biome-ignore lint/suspicious/noThenProperty: given/when/then is the point; `await` on a spec is caught below.
  then(expected: readonly E[]): void {
    // `then` makes the spec a thenable: `await spec.when(command)` would call it with resolve and reject.
    if (!Array.isArray(expected)) {
      throw new TypeError(
        'a decider spec is not a promise: end it with .then([...events]) instead of awaiting it',
      );
    }
    const { outcome } = this.#run();
    if (!outcome.ok) throw unexpectedThrow(outcome.error, `the events ${show(expected)}`, 'then');
    assertDeepEqual(outcome.events, expected, 'decide returned other events than expected', 'then');
  }

  thenThrows(matcher: ErrorMatcher): void {
    assertMatcher(matcher);
    const { outcome } = this.#run();
    if (outcome.ok) {
      throw new AssertionError({
        message: `expected decide to throw an error matching ${describeMatcher(matcher)}, but it returned ${show(outcome.events)}`,
        actual: outcome.events,
        expected: matcher,
        operator: 'thenThrows',
      });
    }
    if (!matches(outcome.error, matcher)) {
      const failure = new AssertionError({
        message: `decide threw ${showError(outcome.error)}, which does not match ${describeMatcher(matcher)}`,
        actual: outcome.error,
        expected: matcher,
        operator: 'thenThrows',
      });
      failure.cause = outcome.error;
      throw failure;
    }
  }

  thenState(expected: S): void {
    const { state, outcome } = this.#run();
    if (!outcome.ok) throw unexpectedThrow(outcome.error, `the state ${show(expected)}`, 'thenState');
    const actual = fold(this.#decider, outcome.events, state);
    assertDeepEqual(actual, expected, 'the state after decide is not the expected one', 'thenState');
  }

  #run(): { state: S; outcome: Outcome<E> } {
    // Folding the history is the setup, not the test: an evolve that throws here propagates as is.
    const state = fold(this.#decider, this.#history);
    try {
      return { state, outcome: { ok: true, events: decideEvents(this.#decider, this.#command, state) } };
    } catch (error) {
      return { state, outcome: { ok: false, error } };
    }
  }
}

function unexpectedThrow(error: unknown, wanted: string, operator: string): AssertionError {
  const failure = new AssertionError({
    message: `expected ${wanted}, but decide threw ${showError(error)}`,
    actual: error,
    operator,
  });
  failure.cause = error;
  return failure;
}
