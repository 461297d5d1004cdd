/**
 * Waits for another service to be ready, for the few starts that go better after it (inventory's
 * catalog seed after orders has subscribed to `inventory.updated`). Never for ever: the caller goes on
 * either way.
 */
import { ServiceClient } from 'ferry';

export interface FirstReadyOptions {
  /** How long to wait in all, ms. @default 30000 */
  readonly withinMs?: number;
  /** Pause between two rounds of asking, ms. @default 250 */
  readonly everyMs?: number;
}

/**
 * Resolves `true` once any of `urls` (the instances of `service`) answers `GET /health/ready` with
 * 200 (each asked with a 1 s time limit, no retry), `false` when none has within `withinMs`.
 */
export async function firstReady(
  service: string,
  urls: readonly string[],
  options: FirstReadyOptions = {},
): Promise<boolean> {
  const withinMs = options.withinMs ?? 30_000;
  const everyMs = options.everyMs ?? 250;
  const deadline = Date.now() + withinMs;
  const clients = urls.map((url) => new ServiceClient(url, { name: service, retry: false, breaker: false }));
  const ready = async (client: ServiceClient): Promise<boolean> => {
    try {
      const left = Math.max(1, Math.min(1000, deadline - Date.now()));
      return (await client.request({ method: 'GET', path: '/health/ready', timeout: left })).status === 200;
    } catch {
      return false; // Not listening yet, or too slow to say.
    }
  };
  try {
    for (;;) {
      if ((await Promise.all(clients.map(ready))).includes(true)) return true;
      const pause = Math.min(everyMs, deadline - Date.now());
      if (pause <= 0) return false;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
}
