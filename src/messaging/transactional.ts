/**
 * Runs a handler inside a unit of work of a store, with the inbox mark in the same transaction (the
 * transactional inbox). The outbox implements it; the bus only calls it.
 */
export interface HandlerUnitOfWork<W> {
  /**
   * Runs `handle` in a unit of work whose first write marks `messageId` handled by `consumer`.
   * Resolves `false`, running nothing, when the mark was already committed. `settled` waits for the
   * calls the handler made on `work` and did not await (and those their continuations make), so that
   * the handler's time limit covers them too. `end` ends the unit for its handler at once: every later
   * call on `work` is refused (the bus calls it as the handler's signal aborts, before the handler
   * hears of it), and the unit rolls back once `handle` rejects.
   */
  runHandler(
    consumer: string,
    messageId: string,
    handle: (work: W, settled: () => Promise<unknown>, end: () => void) => Promise<void>,
  ): Promise<boolean>;
}
