import type { FerryContext } from '../context/context.js';
import type { Message } from './envelope.js';

/**
 * The handler runs of a subscription without a time limit (`handlerTimeoutMs: 0`), so that their
 * signals abort when the subscription's close gives up on them. A run's signal is made only when its
 * handler asks for it (most never do), and only such runs are tracked until they end: one signal
 * shared by every run would do it for less, but Node 20 keeps an entry on a long-lived signal for
 * every `AbortSignal.any` joined to it (the inbox's, a handler's own) and never lets it go.
 */
export class UnlimitedRuns {
  /** Runs still pending whose signal was asked for. */
  readonly #watched = new Set<UnlimitedRun>();
  #reason: Error | undefined = undefined;

  start(message: Message): UnlimitedRun {
    return new UnlimitedRun(message, this);
  }

  /** Given up on: the signals of the runs still pending abort with `reason`, and of those to come. */
  abandon(reason: Error): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    for (const run of this.#watched) run.abort(reason);
    this.#watched.clear();
  }

  /** @internal */
  get reason(): Error | undefined {
    return this.#reason;
  }

  /** @internal */
  watch(run: UnlimitedRun): void {
    this.#watched.add(run);
  }

  /** @internal */
  unwatch(run: UnlimitedRun): void {
    this.#watched.delete(run);
  }
}

/** One run without a time limit: the ambient context its handler runs in. */
export class UnlimitedRun implements FerryContext {
  readonly correlationId: string;
  readonly messageId: string;
  readonly #runs: UnlimitedRuns;
  #controller: AbortController | undefined = undefined;
  #ended = false;

  constructor(message: Message, runs: UnlimitedRuns) {
    this.correlationId = message.correlationid;
    this.messageId = message.id;
    this.#runs = runs;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (!this.#ended) {
        const reason = this.#runs.reason;
        if (reason === undefined) this.#runs.watch(this);
        else this.#controller.abort(reason);
      }
    }
    return this.#controller.signal;
  }

  /** The handler ended: its signal no longer aborts. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#controller !== undefined) this.#runs.unwatch(this);
  }

  /** @internal */
  abort(reason: Error): void {
    this.#controller?.abort(reason);
  }
}
