/**
 * A service as its callers see it: one or more instances (base URLs), each behind its own
 * ServiceClient (timeouts, retries of safe requests, a breaker per instance), taken in turn. A
 * request that could not reach an instance (refused connection: it is restarting) moves on to the
 * next one when it is safe to repeat (a GET, or a POST with an idempotency key).
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
}

export class Upstream {
  readonly name: string;
  readonly #clients: ServiceClient[];
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
    const first = this.#next++ % this.#clients.length;
    for (let i = 0; ; i++) {
      const client = this.#clients[(first + i) % this.#clients.length] as ServiceClient;
      try {
        return await client.request<T>(init);
      } catch (error) {
        // A refused connection or an open breaker: nothing was sent, another instance may take it.
        const notSent = nothingWasSent(error);
        const unreachable = notSent || isConnectionError(error);
        if (!(notSent || (repeatable && unreachable)) || i + 1 >= this.#clients.length) throw error;
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#clients.map((c) => c.close()));
  }
}

/** A refused connection or an open breaker: the request never reached the service. */
export function nothingWasSent(error: unknown): boolean {
  return (isConnectionError(error) && error.errorCode === 'ECONNREFUSED') || isCircuitOpenError(error);
}
