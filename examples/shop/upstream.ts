/**
 * A service as its callers see it: one or more instances (base URLs), each behind its own
 * ServiceClient (timeouts, retries of safe requests, a breaker per instance). Each request goes to
 * an instance that is answering, the one with the fewest requests under way (in turn among equals).
 * An instance is passed over while it seems stuck — requests under way and no answer for
 * `stallMs` (a frozen process, a long pause) — and for `coolDownMs` after a request of it got no
 * answer (timed out, connection failed), so that it does not take every n-th request until its
 * breaker opens; when every instance is passed over, the least busy is taken anyway. A request that
 * could not reach an instance (refused connection: it is restarting) moves on to the next one when
 * it is safe to repeat (a GET, or a POST with an idempotency key).
 */
import {
  isCircuitOpenError,
  isConnectionError,
  type RequestInit,
  ServiceClient,
  type ServiceResponse,
} from 'ferry';

export interface UpstreamOptions {
  /** Time limit of a call, ms, its retries included (each attempt's limit too). @default 10000 */
  readonly timeoutMs?: number;
  /** An instance with requests under way and no answer for this long is passed over, ms. @default 1000 */
  readonly stallMs?: number;
  /** An instance is passed over for this long after a request of it got no answer, ms. @default 2000 */
  readonly coolDownMs?: number;
}

/** What the upstream knows of how an instance is answering. */
interface InstanceLoad {
  /** Requests under way. */
  inFlight: number;
  /** When it last answered, or got a request while it had none under way (ms, `performance.now()`). */
  lastProgress: number;
  /** Passed over until then, after a request that got no answer. */
  coolUntil: number;
}

export class Upstream {
  readonly name: string;
  readonly #clients: ServiceClient[];
  readonly #load: InstanceLoad[];
  readonly #stallMs: number;
  readonly #coolDownMs: number;
  #next = 0;

  constructor(name: string, urls: readonly string[], options: UpstreamOptions = {}) {
    if (urls.length === 0) throw new Error(`service ${name} has no instance URL`);
    this.name = name;
    this.#clients = urls.map(
      (url, i) =>
        new ServiceClient(url, {
          // Numbered from 0, as the supervisor names the processes (orders#0, orders#1).
          name: urls.length === 1 ? name : `${name}#${i}`,
          // A caller waits this long at most: retries fit in what a failed attempt left, not after it.
          timeout: options.timeoutMs ?? 10_000,
          deadline: options.timeoutMs ?? 10_000,
          // Many callers at once (the gateway under load): keep a pool of connections per instance.
          connections: 64,
          // The gateway answers for the service: 4xx are the caller's business, not a failure here.
          breaker: { minimumVolume: 20, errorThresholdPercentage: 50, resetTimeoutMs: 2000 },
        }),
    );
    this.#load = urls.map(() => ({ inFlight: 0, lastProgress: 0, coolUntil: 0 }));
    this.#stallMs = options.stallMs ?? 1000;
    this.#coolDownMs = options.coolDownMs ?? 2000;
  }

  get urls(): string[] {
    return this.#clients.map((c) => c.origin);
  }

  /** Every instance's client, e.g. for health checks. */
  get clients(): readonly ServiceClient[] {
    return this.#clients;
  }

  breakers(): { name: string; state: string }[] {
    return this.#clients.flatMap((c) => c.breakers());
  }

  /** Any request; resolves the response whatever its status (see `ServiceClient.request`). */
  async request<T = unknown>(init: RequestInit): Promise<ServiceResponse<T>> {
    const repeatable = init.method === 'GET' || init.idempotencyKey !== undefined;
    const first = this.#leastBusy();
    for (let i = 0; ; i++) {
      const at = (first + i) % this.#clients.length;
      const client = this.#clients[at] as ServiceClient;
      const load = this.#load[at] as InstanceLoad;
      if (load.inFlight++ === 0) load.lastProgress = performance.now();
      try {
        const response = await client.request<T>(init);
        load.lastProgress = performance.now();
        load.coolUntil = 0;
        return response;
      } catch (error) {
        // No answer (an open breaker aside, which sent nothing): pass it over for a while.
        if (!isCircuitOpenError(error)) load.coolUntil = performance.now() + this.#coolDownMs;
        // A refused connection or an open breaker: nothing was sent, another instance may take it.
        const notSent = nothingWasSent(error);
        const unreachable = notSent || isConnectionError(error);
        if (!(notSent || (repeatable && unreachable)) || i + 1 >= this.#clients.length) throw error;
      } finally {
        load.inFlight--;
      }
    }
  }

  /**
   * The instance with the fewest requests under way among those answering (among all when none
   * is); among equals, each in turn (the turn goes round the equals only, so that one passed over
   * does not hand its share to the instance after it).
   */
  #leastBusy(): number {
    const n = this.#clients.length;
    if (n === 1) return 0;
    const now = performance.now();
    const answering = this.#load.map(
      (load) => now >= load.coolUntil && (load.inFlight === 0 || now - load.lastProgress < this.#stallMs),
    );
    const pool = answering.includes(true) ? answering : answering.map(() => true);
    let fewest = Number.POSITIVE_INFINITY;
    for (let at = 0; at < n; at++) {
      if (pool[at]) fewest = Math.min(fewest, (this.#load[at] as InstanceLoad).inFlight);
    }
    const equals: number[] = [];
    for (let at = 0; at < n; at++) {
      if (pool[at] && (this.#load[at] as InstanceLoad).inFlight === fewest) equals.push(at);
    }
    return equals[this.#next++ % equals.length] as number;
  }

  async close(): Promise<void> {
    await Promise.all(this.#clients.map((c) => c.close()));
  }
}

/** A refused connection or an open breaker: the request never reached the service. */
export function nothingWasSent(error: unknown): boolean {
  return (isConnectionError(error) && error.errorCode === 'ECONNREFUSED') || isCircuitOpenError(error);
}
