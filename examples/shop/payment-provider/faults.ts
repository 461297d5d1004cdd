/** The provider's fault switch: a share of calls fails with 503, after a delay. */
import { z } from 'zod';

/** The longest delay the switch takes, ms: clients that must reach the provider allow more. */
export const MAX_LATENCY_MS = 60_000;

export const faultsSchema = z.strictObject({
  /** Share of charge and refund calls answered 503, from 0 (none) to 1 (all). @default 0 */
  failureRate: z.number().min(0).max(1).default(0),
  /** Delay before every charge and refund call is answered (a slow provider), in ms. @default 0 */
  latencyMs: z.number().int().min(0).max(MAX_LATENCY_MS).default(0),
});
export type Faults = z.infer<typeof faultsSchema>;

/** What `PUT /faults` takes: a setting left out keeps its value (`{"failureRate":0}` keeps the latency). */
export const faultsUpdateSchema = z.strictObject({
  failureRate: z.number().min(0).max(1).optional(),
  latencyMs: z.number().int().min(0).max(MAX_LATENCY_MS).optional(),
});

export const NO_FAULTS: Faults = Object.freeze({ failureRate: 0, latencyMs: 0 });

export class FaultSwitch {
  #faults: Faults;
  readonly #random: () => number;

  constructor(initial: Faults = NO_FAULTS, random: () => number = Math.random) {
    this.#faults = faultsSchema.parse(initial);
    this.#random = random;
  }

  /** Applies from the next call; calls already waiting out their delay keep what they drew. */
  set(faults: Faults): void {
    this.#faults = Object.freeze(faultsSchema.parse(faults));
  }

  get(): Faults {
    return this.#faults;
  }

  /** Draws the fate of one call: how long it waits, and whether it then fails. */
  draw(): { readonly delayMs: number; readonly fail: boolean } {
    const { failureRate, latencyMs } = this.#faults;
    return { delayMs: latencyMs, fail: failureRate > 0 && this.#random() < failureRate };
  }
}
