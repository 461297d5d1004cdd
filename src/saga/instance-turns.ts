import { currentContext } from '../context/context.js';
import type { Message } from '../messaging/envelope.js';
import { HandlerRun } from '../messaging/handler-timeouts.js';
import { KeyedTurns } from '../messaging/keyed-turns.js';
import type { HandlerMiddleware } from '../messaging/middleware.js';
import { untilAborted } from '../messaging/until-aborted.js';

/**
 * The turns of the runners of sagas on one store's outbox storage (one per store object): two runners
 * of one saga on it share an instance's. Two store objects on one database are two processes' own.
 */
const turnsByStorage = new WeakMap<object, KeyedTurns>();

/** Why a message that waited for its instance's turn was not handled: its saga had been closed. */
export class SagaClosedBeforeTurnError extends Error {
  constructor(saga: string) {
    super(
      `saga "${saga}" was closed while this message waited for its instance's turn: it was handed back, not handled`,
    );
    this.name = 'SagaClosedBeforeTurnError';
  }
}

/**
 * Messages of one saga instance handled one at a time, in the order they reached the saga's
 * subscriptions, by every runner of saga `name` on `storage` (an outbox's: one per store object)
 * in this process: a subscription middleware, put before the subscription's own. On SQLite and memory
 * units of work run one at a time anyway; on PostgreSQL two start messages of one instance ran side by
 * side and whichever committed first won, so the later one published could start the instance and the
 * first be ignored as the duplicate. `idOf` gives the instance's id, or `undefined` (the message is
 * handled without waiting, and its unit of work reports what is wrong with it). The wait for a turn
 * does not count against the handler's time limit, and the turn ends with that limit. A message whose
 * turn comes once `closed()` says its runner or bus is closed (its close gave up on it and handed it
 * back) is not handled.
 */
export function instanceTurns(
  storage: object,
  name: string,
  idOf: (message: Message) => string | undefined,
  closed: () => boolean,
): HandlerMiddleware {
  let turns = turnsByStorage.get(storage);
  if (turns === undefined) {
    turns = new KeyedTurns();
    turnsByStorage.set(storage, turns);
  }
  const ofStorage = turns;
  return (next) => (message) => {
    const id = idOf(message);
    if (id === undefined) return next(message);
    const context = currentContext();
    const timed = context instanceof HandlerRun ? context : undefined;
    timed?.pauseLimit();
    return ofStorage.run(JSON.stringify([name, id]), () => {
      timed?.resumeLimit();
      if (closed()) return Promise.reject(new SagaClosedBeforeTurnError(name));
      // The turn ends with the attempt's limit, even if what runs inside ignores its signal (a
      // subscription middleware stuck on a call without a timeout held the instance for good, and with
      // its waiting messages the subscription's slots). A run that goes on past it finds its unit of
      // work rolled back, and the saga refuses to start on an aborted signal.
      return timed === undefined ? next(message) : untilAborted(next(message), timed.signal);
    });
  };
}
