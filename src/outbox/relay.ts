import { describeThrown } from '../errors/describe-thrown.js';
import { FerryError, isFerryError } from '../errors/ferry-error.js';
import { uuidv7 } from '../ids/uuidv7.js';
import type { Logger } from '../logging/logger.js';
import type { Envelope } from '../messaging/envelope.js';
import type { TrackedPublish, Transport } from '../messaging/transport.js';
import type { Clock, ClockTimer } from '../time/clock.js';
import { keepingAlive } from '../time/keep-alive.js';
import { HeldRows } from './held-rows.js';
import type { RelayOptions } from './relay-options.js';
import type { OutboxRow, OutboxStorage } from './storage.js';

const MAX_RETRY_DELAY_MS = 60_000;
/** Publishes remembered at most by id (in flight, or confirmed after their attempt timed out). */
const MAX_REMEMBERED_SENDS = 10_000;
/** While the broker is unreachable: first delay, cap. */
const UNREACHABLE_DELAY_MS = 200;
const MAX_UNREACHABLE_DELAY_MS = 30_000;

/** Errors that say nothing about the message: the broker is not there (yet), or the bus is stopping. */
const TRANSIENT_CODES = new Set([
  'BROKER_UNAVAILABLE',
  'BROKER_CONNECTION_LOST',
  'BROKER_ACCESS_REFUSED',
  'BROKER_VHOST_NOT_FOUND',
  'BROKER_PERMISSION_DENIED',
  'BROKER_TLS_MISMATCH',
  'PUBLISH_NOT_CONFIRMED',
  'PUBLISH_BUFFER_FULL',
  'BUS_CLOSED',
  'OUTBOX_PUBLISH_TIMEOUT',
]);

function isTransient(error: unknown): boolean {
  return isFerryError(error) && (TRANSIENT_CODES.has(error.code) || error.code.startsWith('BROKER_'));
}

/**
 * Publishes committed outbox rows to the bus's transport, with confirms, in commit order per key,
 * deletes them once confirmed, and retries with backoff; sets aside as failed what the broker keeps
 * refusing. Several relays (instances of a service) may share one outbox: rows are leased.
 *
 * With a transport that holds messages in process memory only (`Transport.publishTracked`), a
 * confirmed row is held rather than deleted: it stays in the outbox, its lease renewed every third
 * of `leaseMs`, until the transport says its message was settled everywhere it was routed; the
 * settled rows are then deleted in batches at the start of a round. Rounds do not wait for
 * settlements. A held row no longer holds back its key: the next row of the key is published after
 * the confirm, as with a durable broker (the transport keeps them in order); if the process dies,
 * its held rows go out again, oldest first per key, once their lease ends.
 */
export class Relay {
  readonly owner = `relay-${uuidv7()}`;
  readonly #storage: OutboxStorage;
  readonly #transport: Transport;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #o: Required<RelayOptions>;
  /** Whether confirmed rows are held until settled. */
  readonly #holds: boolean;
  readonly #held: HeldRows;
  #running = false;
  #stopped = false;
  /** Stopped, and done with settlements: later ones are ignored. */
  #ended = false;
  #woken = false;
  #wake: (() => void) | undefined;
  #timer: ClockTimer | undefined;
  #loop: Promise<void> | undefined;
  #unwatch: (() => void) | undefined;
  /** Consecutive rounds where the broker could not be reached. */
  #unreachable = 0;
  /** Callers of `flush`, resolved when a round finds nothing due. */
  #idleWaiters: (() => void)[] = [];
  #delivered = 0;
  /**
   * Publishes still in flight, or held until settled, by row (see {@link #send}): by seq, not by message
   * id, since a later row may reuse the id of an earlier message (a deliberate re-publish), and must
   * be sent, and tracked, on its own.
   */
  readonly #sending = new Map<bigint, Promise<void>>();

  constructor(
    storage: OutboxStorage,
    transport: Transport,
    clock: Clock,
    logger: Logger,
    options: Required<RelayOptions>,
  ) {
    this.#storage = storage;
    this.#transport = transport;
    this.#clock = clock;
    this.#logger = logger;
    this.#o = options;
    this.#holds = options.holdUntilSettled && typeof transport.publishTracked === 'function';
    this.#held = new HeldRows({
      storage,
      owner: this.owner,
      clock,
      logger,
      leaseMs: options.leaseMs,
      released: (seq) => this.#sending.delete(seq),
    });
  }

  /** Messages published and removed from the outbox by this relay. */
  get delivered(): number {
    return this.#delivered;
  }

  start(): void {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    this.#unwatch = this.#storage.watch(() => this.notify());
    this.#loop = this.#run();
  }

  /** Something was committed: look at once. */
  notify(): void {
    this.#woken = true;
    this.#wakeUp();
  }

  /**
   * Resolves once a round of the relay found nothing due (everything due was sent or set aside).
   * Held rows do not count: their messages were sent.
   */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    // The relay's timers keep no process alive, but a caller waiting for it must: without this, a
    // script's `await outbox.flush()` ended the process (exit 13) before the round it waited for.
    return keepingAlive(
      () =>
        new Promise<void>((resolve) => {
          this.#idleWaiters.push(resolve);
          this.notify();
        }),
    );
  }

  /**
   * Stops after the round in flight (its publishes confirmed or failed, their rows settled), then
   * waits up to `settleOnCloseMs` for the held rows' messages to be settled, deleting those rows. The
   * others stay in the outbox, leased until their lease ends, and go out again then.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unwatch?.();
    this.#timer?.cancel();
    this.notify();
    await this.#loop;
    try {
      await this.#awaitSettlements();
      await this.#removeSettled();
    } catch (error) {
      this.#logger.warn(
        `outbox relay: could not delete settled messages at stop (${describeThrown(error).message}); they go out again after the restart`,
      );
    }
    if (this.#held.size > 0) {
      this.#logger.warn(
        `outbox relay: ${this.#held.size} published message(s) not settled within ${this.#o.settleOnCloseMs} ms of close stay in the outbox; they go out again once their lease ends (within ${this.#o.leaseMs} ms), and consumers' inboxes drop what was handled`,
      );
    }
    this.#ended = true;
    this.#held.clear();
    this.#running = false;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  /**
   * At stop: until every held row's message is settled, or `settleOnCloseMs` passed (of the clock, or
   * of real time, whichever ends first: a virtual clock nobody moves must not keep close waiting),
   * deletes the settled rows as they come and renews the leases of the others.
   */
  async #awaitSettlements(): Promise<void> {
    const limit = this.#o.settleOnCloseMs;
    if (this.#held.size === 0 || limit === 0) return;
    let expired = false;
    const expire = () => {
      expired = true;
      this.#wakeUp();
    };
    const timer = this.#clock.setTimeout(expire, limit);
    const realTimer = setTimeout(expire, limit);
    try {
      for (;;) {
        await this.#removeSettled();
        if (this.#held.size === 0 || expired) return;
        await this.#held.renew();
        if (this.#held.size === 0 || this.#held.anySettled) continue;
        if (expired) return;
        await new Promise<void>((resolve) => {
          const renewal = this.#clock.setTimeout(
            () => this.#wakeUp(),
            Math.max(0, this.#held.renewAt - this.#clock.now()),
          );
          this.#wake = () => {
            renewal.cancel();
            resolve();
          };
        });
      }
    } finally {
      this.#wake = undefined;
      timer.cancel();
      clearTimeout(realTimer);
    }
  }

  #wakeUp(): void {
    const wake = this.#wake;
    if (wake !== undefined) {
      this.#wake = undefined;
      wake();
    }
  }

  async #run(): Promise<void> {
    let linger = false;
    while (!this.#stopped) {
      if (linger && this.#o.lingerMs > 0) await this.#linger();
      linger = true;
      this.#woken = false;
      let rows: OutboxRow[] = [];
      try {
        await this.#removeSettled();
        await this.#held.renew();
        rows = await this.#storage.claim(this.owner, this.#clock.now(), this.#o.batchSize, this.#o.leaseMs);
        if (rows.length > 0) await this.#publish(rows);
      } catch (error) {
        // The database: wait and try again (rows stay leased to us, or are taken over after the lease).
        this.#logger.warn(`outbox relay: ${describeThrown(error).message}; retrying`);
        await this.#sleep(Math.min(MAX_UNREACHABLE_DELAY_MS, this.#o.pollIntervalMs));
        continue;
      }
      if (this.#stopped) break;
      // Rows were settled: the next row of each key they held may now go. Idle only once a claim
      // finds nothing due.
      if (rows.length > 0 || this.#woken) {
        // A full batch: more wait, take them at once.
        if (rows.length >= this.#o.batchSize) linger = false;
        continue;
      }
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
      // Woken by a commit, or a timer: linger only after a wake-up (a due time is exact).
      linger = await this.#sleepUntilNext();
    }
  }

  /** A real pause, whatever the clock: it only lets commits gather. */
  #linger(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise((resolve) => setTimeout(resolve, this.#o.lingerMs).unref?.());
  }

  async #publish(rows: readonly OutboxRow[]): Promise<void> {
    const done: OutboxRow[] = [];
    let reachable = false;
    let unreachable: unknown;
    await Promise.all(
      rows.map(async (row) => {
        let envelope: Envelope;
        try {
          envelope = JSON.parse(row.envelope) as Envelope;
        } catch (error) {
          await this.#storage.fail(
            this.owner,
            row.seq,
            `stored envelope is not JSON: ${describeThrown(error).message}`,
          );
          return;
        }
        try {
          await this.#withTimeout(this.#send(row, envelope));
          done.push(row);
          reachable = true;
        } catch (error) {
          if (isTransient(error)) unreachable = error;
          else reachable = true;
          await this.#settleFailure(row, error);
        }
      }),
    );
    if (done.length > 0) {
      if (this.#holds) await this.#held.hold(done);
      else {
        this.#delivered += await this.#storage.delivered(
          this.owner,
          done.map((row) => row.seq),
        );
        for (const row of done) this.#sending.delete(row.seq);
      }
    }
    if (unreachable !== undefined && !reachable) {
      this.#unreachable++;
      if (this.#unreachable === 1 || this.#unreachable % 20 === 0) {
        this.#logger.warn(
          `outbox relay: the broker cannot take messages (${describeThrown(unreachable).message}); they stay in the outbox and are retried`,
        );
      }
    } else if (reachable) {
      if (this.#unreachable > 0) this.#logger.info('outbox relay: the broker takes messages again');
      this.#unreachable = 0;
    }
  }

  /** A held row's message was settled everywhere: its row goes at the start of the next round. */
  #onSettled(seq: bigint): void {
    // Also while stopping: stop() waits for the settlements of what this relay published.
    if (this.#ended) return;
    // Wakes a sleeping relay without making the round look at the outbox again and again: a
    // settlement changes nothing the claim could find.
    if (this.#held.settle(seq)) this.#wakeUp();
  }

  async #removeSettled(): Promise<void> {
    this.#delivered += await this.#held.removeSettled();
  }

  async #settleFailure(row: OutboxRow, error: unknown): Promise<void> {
    // Recorded as the row's error: every outbox storage keeps it as it can (storableText).
    const reason = describeThrown(error).message;
    const now = this.#clock.now();
    if (isTransient(error)) {
      const delay = Math.min(
        MAX_UNREACHABLE_DELAY_MS,
        UNREACHABLE_DELAY_MS * 2 ** Math.min(this.#unreachable, 10),
      );
      await this.#storage.retry(this.owner, row.seq, reason, now + jitter(delay), false);
      return;
    }
    const attempts = row.attempts + 1;
    if (attempts >= this.#o.maxAttempts) {
      this.#logger.error(
        `outbox: message ${row.id} (key ${row.key}) set aside as failed after ${attempts} attempts: ${reason}; later messages of its key wait until it is redriven or discarded`,
      );
      await this.#storage.fail(this.owner, row.seq, reason);
      return;
    }
    const delay = Math.min(MAX_RETRY_DELAY_MS, this.#o.retryDelayMs * 2 ** (attempts - 1));
    this.#logger.warn(
      `outbox: message ${row.id} refused (attempt ${attempts}): ${reason}; retrying in ${delay} ms`,
    );
    await this.#storage.retry(this.owner, row.seq, reason, now + jitter(delay), true);
  }

  /**
   * Publishes `envelope`, unless a publish of the same row by this relay is still in flight (a
   * transport holding it for re-sending after its attempt timed out here): then waits for that one,
   * so that a slow or unreachable broker does not collect one copy per retry.
   */
  #send(row: OutboxRow, envelope: Envelope): Promise<void> {
    const seq = row.seq;
    let sending = this.#sending.get(seq);
    if (sending === undefined) {
      if (this.#holds) {
        const tracked: TrackedPublish = this.#transport.publishTracked!(envelope);
        tracked.settled.then(() => this.#onSettled(seq));
        sending = tracked.confirmed;
      } else sending = this.#transport.publish(envelope);
      this.#sending.set(seq, sending);
      // A publish that failed is forgotten, so that the next attempt sends again. One that succeeded
      // is kept until its row is deleted: an attempt that timed out before the confirm came is then
      // settled by the next one without a second copy (nor is a held row this relay takes again
      // after a stall past its lease).
      sending.catch(() => this.#sending.delete(seq));
      if (this.#sending.size > MAX_REMEMBERED_SENDS) {
        const oldest = this.#sending.keys().next().value;
        if (oldest !== undefined) {
          this.#sending.delete(oldest);
          this.#held.forget(oldest);
        }
      }
    }
    return sending;
  }

  #withTimeout(publish: Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => {
        reject(new OutboxPublishTimeoutError(this.#o.publishTimeoutMs));
      }, this.#o.publishTimeoutMs);
      publish.then(
        () => {
          timer.cancel();
          resolve();
        },
        (error: unknown) => {
          timer.cancel();
          reject(error);
        },
      );
    });
  }

  /** Sleeps until woken, due or polled; resolves whether it was woken (by a commit or a settlement). */
  async #sleepUntilNext(): Promise<boolean> {
    let delay = this.#o.pollIntervalMs;
    if (this.#held.size > 0) delay = Math.max(0, Math.min(delay, this.#held.renewAt - this.#clock.now()));
    try {
      const now = this.#clock.now();
      const next = await this.#storage.nextDue(now);
      if (next !== undefined) delay = Math.max(0, Math.min(delay, next - this.#clock.now()));
    } catch {
      // Poll instead.
    }
    // A settlement that came meanwhile is deleted at once.
    if (this.#woken || this.#stopped || this.#held.anySettled) return true;
    return this.#sleep(delay);
  }

  /** Resolves `true` when woken before `ms`, `false` at the timer. */
  #sleep(ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      if (this.#woken || this.#stopped) {
        resolve(true);
        return;
      }
      this.#wake = () => resolve(true);
      this.#timer = this.#clock.setTimeout(() => {
        this.#wake = undefined;
        resolve(false);
      }, ms);
      this.#timer.unref?.();
    }).finally(() => {
      this.#timer?.cancel();
      this.#timer = undefined;
    });
  }
}

/** Between half and all of `ms`, so that relays retrying the same broker spread out. */
function jitter(ms: number): number {
  return Math.round(ms / 2 + (Math.random() * ms) / 2);
}

/** A publish from the outbox was not confirmed in time; the message stays in the outbox and is retried. */
export class OutboxPublishTimeoutError extends FerryError {
  constructor(ms: number) {
    super('OUTBOX_PUBLISH_TIMEOUT', `the broker did not confirm the publish within ${ms} ms`);
  }
}
