/**
 * Calls under way (units of work, appends) and a wait for none to be: what a close() waits for
 * before it lets go of what they use.
 */
export class InFlight {
  #count = 0;
  #idleWaiters: (() => void)[] = [];

  /** Runs `work`, counted until it settles. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    const leave = this.enter();
    try {
      return await work();
    } finally {
      leave();
    }
  }

  /** Counts one call from now; the function returned ends it (once, however often it is called). */
  enter(): () => void {
    this.#count++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.#count === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
    };
  }

  /** Resolves once no call is under way (at once when none is). */
  async idle(): Promise<void> {
    while (this.#count > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }
}
