/**
 * The settlement of one tracked publish (`Transport.publishTracked`): one copy per queue the message
 * was routed to, each settled once (acked, dead-lettered, dropped with its queue); `settled`
 * resolves with the last.
 */
export class Settlement {
  readonly settled: Promise<void>;
  #copies: number;
  #resolve!: () => void;

  constructor(copies: number) {
    this.#copies = copies;
    this.settled = new Promise<void>((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** One queue is done with its copy. */
  copySettled(): void {
    if (this.#copies > 0 && --this.#copies === 0) this.#resolve();
  }
}
