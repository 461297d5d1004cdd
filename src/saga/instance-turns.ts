import { currentContext } from '../context/context.js';
import type { Message } from '../messaging/envelope.js';
import { HandlerRun } from '../messaging/handler-timeouts.js';
import type { HandlerMiddleware } from '../messaging/middleware.js';

/**
 * Messages of one saga instance handled one at a time in this process, in the order they reached
 * their handler: a subscription middleware (innermost, around the unit of work), shared by every
 * subscription of one running saga. On SQLite and memory units of work run one at a time anyway; on
 * PostgreSQL two start messages of one instance ran side by side and whichever committed first won,
 * so the later one published could start the instance and the first be ignored as the duplicate.
 * `keyOf` gives the instance's id, or `undefined` (the message is handled without waiting, and its
 * unit of work reports what is wrong with it). The wait for a turn does not count against the
 * handler's time limit.
 */
export function instanceTurns(keyOf: (message: Message) => string | undefined): HandlerMiddleware {
  /** The last turn asked for, by instance: it ends when that message's unit of work has. */
  const tails = new Map<string, Promise<void>>();
  return (next) => async (message) => {
    const key = keyOf(message);
    if (key === undefined) return next(message);
    const before = tails.get(key);
    let end!: () => void;
    const mine = new Promise<void>((resolve) => {
      end = resolve;
    });
    tails.set(key, mine);
    try {
      if (before !== undefined) {
        const context = currentContext();
        const timed = context instanceof HandlerRun ? context : undefined;
        timed?.pauseLimit();
        await before;
        timed?.resumeLimit();
      }
      await next(message);
    } finally {
      end();
      if (tails.get(key) === mine) tails.delete(key);
    }
  };
}
