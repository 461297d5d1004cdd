import { type Clock, systemClock } from '../time/clock.js';

/** Counts work in flight, and lets whoever closes wait, for a bounded time, until none is left. */
export class InFlight {
  #count = 0;
  #idle: (() => void) | undefined;

  get count(): number {
    return this.#count;
  }

  begin(): void {
    this.#count++;
  }

  end(): void {
    this.#count--;
    if (this.#count === 0) this.#idle?.();
  }

  /** Resolves once nothing is in flight, or after `timeoutMs` on `clock` whatever is left. */
  async idle(timeoutMs: number, clock: Clock = systemClock): Promise<void> {
    if (this.#count === 0) return;
    await new Promise<void>((resolve) => {
      const timer = clock.setTimeout(resolve, timeoutMs);
      this.#idle = () => {
        timer.cancel();
        resolve();
      };
    });
    this.#idle = undefined;
  }
}
