/**
 * The pause before writing again after losing a race (a `ConcurrencyError`): full jitter, up to 5 ms
 * doubling per attempt, at most 100 ms, so that writers who lost the same race do not collide again
 * in step. `attempt` counts from 0.
 */
export function pauseAfterLostRace(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(100, 5 * 2 ** attempt)));
}
