/**
 * A service as its callers see it: one or more instances (base URLs), each behind its own
 * ServiceClient (timeouts, retries of safe requests, a breaker per instance). Each request goes to
 * an instance that is answering, the one with the fewest requests under way (in turn among equals).
 * An instance is passed over while it seems stuck — requests under way and no answer for
 * `stallMs` (a frozen process, a long pause) — and, once a request of it got no answer (timed out,
 * connection failed), until it answers `GET /health/live` again: that probe, not a caller's request,
 * finds out whether it is back (at once, then every `coolDownMs`, calls or none), so that a frozen instance takes
 * no caller's request while others answer. When every instance is passed over, the least busy is
 * taken anyway (and one instance alone always is). A request that
 * could not reach an instance (refused connection: it is restarting) moves on to the next one when
 * it is safe to repeat (a GET, or a POST with an idempotency key); such a request left unanswered by
 * an instance that has answered nothing for `stallMs` is sent to another one as well.
 */
import {
  isCircuitOpenError,
  isConnectionError,
  isHttpError,
  isIdempotentMethod,
  type RequestInit,
  ServiceClient,
  type ServiceResponse,
} from 'ferry';

export interface UpstreamOptions {
  /** Time limit of a call, ms, its retries included (each attempt's limit too). @default 10000 */
  readonly timeoutMs?: number;
  /** An instance with requests under way and no answer for this long is passed over, ms. @default 1000 */
  readonly stallMs?: number;
  /**
   * After a request of an instance got no answer, it is passed over until it answers a probe (`GET
   * /health/live`, limited to `stallMs`), sent at once and then this often while it does not answer
   * (calls or none), ms. @default 2000
   */
  readonly coolDownMs?: number;
}

/**
 * A service refusing work while it is behind (`POST /orders`' 503 `ORDERS_BACKED_UP`) is answering as
 * it should: counted as a failure, it would open the route's breaker, and the gateway would then
 * answer every order, a replay or a malformed one included, with a 503 of its own.
 */
function isShedding(error: unknown): boolean {
  return isHttpError(error) && error.status === 503 && error.problem?.code === 'ORDERS_BACKED_UP';
}

/** What the probe asks: any answer says the instance is back. Every Ferry service answers it. */
export const PROBE_PATH = '/health/live';

/** What the upstream knows of how an instance is answering. */
interface InstanceLoad {
  /** Requests under way. */
  inFlight: number;
  /** When it last answered, or got a request while it had none under way (ms, `performance.now()`). */
  lastProgress: number;
  /** A request of it got no answer: passed over until a probe is answered. */
  suspect: boolean;
  /** The next probe, while one is due. */
  probeTimer: NodeJS.Timeout | undefined;
  /** A probe is under way. */
  probing: boolean;
}

export class Upstream {
  readonly name: string;
  readonly #clients: ServiceClient[];
  readonly #load: InstanceLoad[];
  readonly #stallMs: number;
  readonly #coolDownMs: number;
  readonly #timeoutMs: number;
  #next = 0;
  /** Aborts the probes under way: close() does not wait for them. */
  readonly #closing = new AbortController();

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
          breaker: {
            minimumVolume: 20,
            errorThresholdPercentage: 50,
            resetTimeoutMs: 2000,
            isIgnored: isShedding,
          },
        }),
    );
    this.#load = urls.map(() => ({
      inFlight: 0,
      lastProgress: 0,
      suspect: false,
      probeTimer: undefined,
      probing: false,
    }));
    this.#stallMs = options.stallMs ?? 1000;
    this.#coolDownMs = options.coolDownMs ?? 2000;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
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

  /**
   * Any request; resolves the response whatever its status (see `ServiceClient.request`). The
   * time limit (`timeoutMs`, or the call's `deadline`) covers the whole call: a request moved on to
   * another instance has what is left of it.
   */
  async request<T = unknown>(init: RequestInit): Promise<ServiceResponse<T>> {
    const started = performance.now();
    const limit = init.deadline ?? this.#timeoutMs;
    const safe = isIdempotentMethod(init.method) || init.idempotencyKey !== undefined;
    // A POST without the caller's Idempotency-Key is not retried: an attempt that got no answer may
    // have been carried out, and the key the client would add is one the caller cannot send again
    // to learn the outcome. (The gateway gives a key to every POST that creates something.)
    const base: RequestInit = safe ? init : { ...init, retry: false };
    // A request with an Idempotency-Key too: the services take what its key names once, however many
    // copies reach them (the shop's keyed POSTs: a copy finds what the first created).
    const hedge =
      (init.method === 'GET' || init.method === 'HEAD' || init.idempotencyKey !== undefined) &&
      this.#clients.length > 1;
    const first = this.#leastBusy();
    // The error of an instance the request may have reached: the call fails with it, not with a
    // later instance's refusal, so that no caller reads "nothing was sent" into it.
    let reached: unknown;
    for (let i = 0; ; i++) {
      const at = (first + i) % this.#clients.length;
      const left = limit - (performance.now() - started);
      const call = i === 0 ? base : { ...base, deadline: Math.max(1, left) };
      try {
        return await (hedge ? this.#hedged<T>(at, call, started, limit) : this.#send<T>(at, call));
      } catch (error) {
        // A refused connection or an open breaker: nothing was sent, another instance may take it.
        const notSent = nothingWasSent(error);
        const unreachable = notSent || isConnectionError(error);
        const moveOn = notSent || (safe && unreachable);
        const timeLeft = limit - (performance.now() - started) > 0;
        if (!notSent) reached ??= error;
        if (!moveOn || !timeLeft || i + 1 >= this.#clients.length) throw reached ?? error;
      }
    }
  }

  /** One request to the instance `at`, counted in its load. */
  async #send<T>(at: number, init: RequestInit): Promise<ServiceResponse<T>> {
    const client = this.#clients[at] as ServiceClient;
    const load = this.#load[at] as InstanceLoad;
    if (load.inFlight++ === 0) load.lastProgress = performance.now();
    try {
      const response = await client.request<T>(init);
      load.lastProgress = performance.now();
      load.suspect = false;
      return response;
    } catch (error) {
      // No answer: pass it over until a probe is answered. Not for an open breaker (nothing was
      // sent) nor a call aborted by its caller or by the hedge that answered first.
      if (!isCircuitOpenError(error) && init.signal?.aborted !== true) this.#suspect(at);
      throw error;
    } finally {
      load.inFlight--;
    }
  }

  /**
   * A GET (or a request with an Idempotency-Key) to the instance `at`; when it is unanswered and
   * that instance has answered nothing for `stallMs` (a frozen process), the same request goes to
   * the least busy other instance answering as well, the first answer is taken and the other call
   * aborted. The silent instance is passed over until a probe is answered. Only GETs (and HEADs) and
   * keyed requests: a POST without a key sent twice could be taken twice.
   */
  #hedged<T>(at: number, init: RequestInit, started: number, limit: number): Promise<ServiceResponse<T>> {
    return new Promise((resolve, reject) => {
      const calls: AbortController[] = [];
      let pending = 0;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (winner?: AbortController) => {
        settled = true;
        clearTimeout(timer);
        for (const call of calls) if (call !== winner) call.abort();
      };
      const start = (target: number) => {
        const call = new AbortController();
        calls.push(call);
        const signal = init.signal === undefined ? call.signal : AbortSignal.any([init.signal, call.signal]);
        // The hedge has what is left of the call's time limit, not a limit of its own.
        const left = Math.max(1, limit - (performance.now() - started));
        pending++;
        this.#send<T>(target, { ...init, signal, ...(calls.length > 1 ? { deadline: left } : {}) }).then(
          (response) => {
            if (settled) return;
            finish(call);
            resolve(response);
          },
          (error: unknown) => {
            // The other call (or the hedge still to come) may yet answer; the last to fail says why.
            if (--pending > 0 || settled) return;
            finish();
            reject(error);
          },
        );
      };
      const check = () => {
        if (settled) return;
        const load = this.#load[at] as InstanceLoad;
        const quiet = performance.now() - load.lastProgress;
        const other = quiet >= this.#stallMs ? this.#leastBusy(at) : undefined;
        if (other === undefined) {
          // Answering other calls (only this one is slow), or no other instance is answering.
          timer = setTimeout(
            check,
            quiet < this.#stallMs ? Math.max(this.#stallMs - quiet, 10) : this.#stallMs,
          );
          return;
        }
        timer = undefined;
        this.#suspect(at);
        start(other);
      };
      start(at);
      timer = setTimeout(check, this.#stallMs);
    });
  }

  /** Passes the instance over until it answers a probe, the first sent at once. */
  #suspect(at: number): void {
    const load = this.#load[at] as InstanceLoad;
    if (load.suspect) return;
    load.suspect = true;
    // One instance alone is never passed over: nothing to find out.
    if (this.#clients.length > 1) this.#probeIn(at, 0);
  }

  #probeIn(at: number, delayMs: number): void {
    const load = this.#load[at] as InstanceLoad;
    if (load.probeTimer !== undefined || load.probing || this.#closing.signal.aborted) return;
    load.probeTimer = setTimeout(() => {
      load.probeTimer = undefined;
      void this.#probe(at);
    }, delayMs);
    // Probes alone do not keep a process up.
    load.probeTimer.unref();
  }

  /**
   * The instance with the fewest requests under way among those answering (among all when none
   * is); among equals, each in turn (the turn goes round the equals only, so that one passed over
   * does not hand its share to the instance after it).
   */
  #leastBusy(): number;
  /** The same among the instances answering other than `except`; `undefined` when none is. */
  #leastBusy(except: number): number | undefined;
  #leastBusy(except?: number): number | undefined {
    const n = this.#clients.length;
    if (n === 1) return except === undefined ? 0 : undefined;
    const now = performance.now();
    const answering = this.#load.map(
      (load, at) =>
        at !== except && !load.suspect && (load.inFlight === 0 || now - load.lastProgress < this.#stallMs),
    );
    if (!answering.includes(true) && except !== undefined) return undefined;
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

  /**
   * Asks an instance passed over after a request got no answer whether it is back: any answer to
   * `GET /health/live` within `stallMs` puts it back among those answering; else it is asked again
   * `coolDownMs` after this probe started, whether or not calls come in.
   */
  async #probe(at: number): Promise<void> {
    const load = this.#load[at] as InstanceLoad;
    const client = this.#clients[at] as ServiceClient;
    // A call it answered in the meantime said it is back.
    if (!load.suspect) return;
    load.probing = true;
    // The next probe is due coolDownMs after this one started, not after it gave up.
    const begun = performance.now();
    try {
      const signal = this.#closing.signal;
      const limit = this.#stallMs;
      await client.request({
        method: 'GET',
        path: PROBE_PATH,
        retry: false,
        timeout: limit,
        deadline: limit,
        signal,
      });
      load.suspect = false;
      load.lastProgress = performance.now();
    } catch {
      // Still not answering (or closed): asked again later.
    } finally {
      load.probing = false;
    }
    if (load.suspect) this.#probeIn(at, Math.max(0, begun + this.#coolDownMs - performance.now()));
  }

  async close(): Promise<void> {
    this.#closing.abort();
    for (const load of this.#load) clearTimeout(load.probeTimer);
    await Promise.all(this.#clients.map((c) => c.close()));
  }
}

/**
 * A refused connection or an open breaker: the request never reached the service (nor did an earlier
 * attempt of it).
 */
export function nothingWasSent(error: unknown): boolean {
  return (
    (isConnectionError(error) && error.errorCode === 'ECONNREFUSED' && !error.earlierAttemptSent) ||
    isCircuitOpenError(error)
  );
}
