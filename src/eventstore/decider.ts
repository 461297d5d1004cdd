/** An event as a decider sees it: a type and its data, without the store's bookkeeping. */
export interface DeciderEvent {
  readonly type: string;
  readonly data?: unknown;
}

/**
 * The business logic of one aggregate as three pure functions (Emmett's decider): `decide` turns a
 * command and the current state into events, `evolve` applies one event to a state, and
 * `initialState` is the state before any event. It knows nothing of storage: `CommandHandler` runs it
 * against an `EventStore`, and `deciderSpec` tests it given/when/then without one.
 *
 * Keep all three pure: `decide` may throw domain errors (nothing is appended then), and `evolve`
 * should return a new state rather than mutate the one it gets, because states and events may be
 * shared with the store (the memory backend hands out the objects it holds).
 *
 * @example
 * const counter: Decider<{ type: 'Add'; by: number }, { type: 'Added'; data: { by: number } }, number> = {
 *   initialState: () => 0,
 *   evolve: (total, event) => total + event.data.by,
 *   decide: (command) => ({ type: 'Added', data: { by: command.by } }),
 * };
 */
export interface Decider<Command, Event extends DeciderEvent, State> {
  /** The state of a stream with no events. A function, so that no state object is ever shared. */
  readonly initialState: () => State;
  /** The state after `event`. Pure: return a new state. */
  evolve(state: State, event: Event): State;
  /** The events `command` causes in `state`: one, several, or none (an empty array). May throw domain errors. */
  decide(command: Command, state: State): Event | readonly Event[];
}

/**
 * Applies `events` in order with `evolve`, starting from `state`, or from `initialState()` when no
 * state is given.
 *
 * @example
 * const total = fold(counter, [{ type: 'Added', data: { by: 2 } }, { type: 'Added', data: { by: 3 } }]); // 5
 */
export function fold<Event extends DeciderEvent, State>(
  decider: Pick<Decider<never, Event, State>, 'evolve' | 'initialState'>,
  events: Iterable<Event>,
  state: State = decider.initialState(),
): State {
  let current = state;
  for (const event of events) current = decider.evolve(current, event);
  return current;
}

/** Runs `decide` and returns what it decided as an array, whether it returned one event or several. */
export function decideEvents<Command, Event extends DeciderEvent, State>(
  decider: Pick<Decider<Command, Event, State>, 'decide'>,
  command: Command,
  state: State,
): readonly Event[] {
  const decided = decider.decide(command, state);
  return isEventArray(decided) ? decided : [decided];
}

// Array.isArray does not narrow readonly arrays out of a union.
function isEventArray<Event>(value: Event | readonly Event[]): value is readonly Event[] {
  return Array.isArray(value);
}
