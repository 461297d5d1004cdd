import { describe, expect, it } from 'vitest';
import { constantBackoff } from './backoff.js';
import { bulkhead } from './bulkhead.js';
import { circuitBreaker } from './circuit-breaker.js';
import { compose } from './compose.js';
import type { Policy } from './policy.js';
import { retry } from './retry.js';
import { timeout } from './timeout.js';

// Real timers: the point is what runs at the same time while timeouts fire.
describe('compose order and concurrency', () => {
  // Work that ignores its signal, as much real work does: it goes on after a timeout fires.
  async function run(policy: Policy): Promise<{ maxRunning: number; rejected: number }> {
    let running = 0;
    let maxRunning = 0;
    const work = async (): Promise<void> => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((resolve) => setTimeout(resolve, 60));
      running--;
    };
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => policy.execute(work)));
    // Let the work the timeouts gave up on finish before counting.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(running).toBe(0);
    return { maxRunning, rejected: results.filter((r) => r.status === 'rejected').length };
  }

  it('bounds concurrency in the documented order: the bulkhead inside the timeout keeps its slot until the work ends', async () => {
    const policy = compose(
      retry({ maxAttempts: 2, backoff: constantBackoff(1) }),
      timeout({ ms: 20 }),
      bulkhead({ maxConcurrent: 2, maxQueue: 100 }),
      circuitBreaker({ minimumVolume: 1000 }),
    );
    const { maxRunning, rejected } = await run(policy);
    expect(maxRunning).toBe(2);
    expect(rejected).toBe(20);
  });

  it('does not bound it with the bulkhead outside the timeout (why the order matters)', async () => {
    const policy = compose(bulkhead({ maxConcurrent: 2, maxQueue: 100 }), timeout({ ms: 20 }));
    const { maxRunning } = await run(policy);
    expect(maxRunning).toBeGreaterThan(2);
  });
});
