/** Longest a Node timer waits (2^31-1 ms): the interval below never fires in practice. */
const FOREVER_MS = 2_147_483_647;

const noop = (): void => {};

/**
 * Keeps the process alive while work is in flight: a subscription's handlers without a time limit on
 * the embedded broker, which has no connection to do it (a process awaiting what such a handler holds
 * exited with the await unsettled). One timer, made at the first hold, kept alive (ref'd) while any
 * hold is out and let go once none is, or for good once {@link release}d.
 */
export class KeepAlive {
  #holds = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #released = false;

  hold(): void {
    if (this.#holds++ > 0 || this.#released) return;
    if (this.#timer === undefined) this.#timer = setInterval(noop, FOREVER_MS);
    else this.#timer.ref();
  }

  letGo(): void {
    if (this.#holds > 0 && --this.#holds === 0) this.#timer?.unref();
  }

  /** No longer keeps the process alive, whatever is still held (the subscription is closed). */
  release(): void {
    this.#released = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
