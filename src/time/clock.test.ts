import { afterEach, describe, expect, it, vi } from 'vitest';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import {
  DEFAULT_VIRTUAL_CLOCK_OPTIONS,
  isVirtualClockRunawayError,
  systemClock,
  VirtualClock,
  VirtualClockRunawayError,
} from './clock.js';

const START = 1_000_000;

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

describe('VirtualClock', () => {
  it('starts at the given epoch ms, or at the fixed default', () => {
    expect(new VirtualClock({ start: START }).now()).toBe(START);
    expect(new VirtualClock().now()).toBe(DEFAULT_VIRTUAL_CLOCK_OPTIONS.start);
    expect(new VirtualClock().now()).toBe(Date.parse('2026-01-01T00:00:00.000Z'));
  });

  it('fires due timers in due-time order, not scheduling order, and ends at start + ms', async () => {
    const clock = new VirtualClock({ start: START });
    const fired: string[] = [];
    clock.setTimeout(() => fired.push('c'), 300);
    clock.setTimeout(() => fired.push('a'), 100);
    clock.setTimeout(() => fired.push('late'), 1_001);
    clock.setTimeout(() => fired.push('b'), 200);
    await clock.advance(1_000);
    expect(fired).toEqual(['a', 'b', 'c']);
    expect(clock.now()).toBe(START + 1_000);
    expect(clock.pending).toBe(1);
    await clock.advance(1);
    expect(fired).toEqual(['a', 'b', 'c', 'late']);
    expect(clock.pending).toBe(0);
  });

  it('fires timers due at the same time in scheduling order', async () => {
    const clock = new VirtualClock({ start: START });
    const fired: number[] = [];
    clock.setTimeout(() => fired.push(1), 50);
    clock.setTimeout(() => fired.push(0), 10);
    clock.setTimeout(() => fired.push(2), 50);
    clock.setTimeout(() => fired.push(3), 50);
    await clock.advance(50);
    expect(fired).toEqual([0, 1, 2, 3]);
  });

  it('now() inside a callback is that timer due time', async () => {
    const clock = new VirtualClock({ start: START });
    const seen: number[] = [];
    clock.setTimeout(() => seen.push(clock.now()), 250);
    clock.setTimeout(() => seen.push(clock.now()), 40);
    await clock.advance(10_000);
    expect(seen).toEqual([START + 40, START + 250]);
    expect(clock.now()).toBe(START + 10_000);
  });

  it('a cancelled timer never fires, even when an earlier callback in the same advance cancels it', async () => {
    const clock = new VirtualClock({ start: START });
    const fired: string[] = [];
    const cancelled = clock.setTimeout(() => fired.push('cancelled'), 10);
    const later = clock.setTimeout(() => fired.push('later'), 30);
    clock.setTimeout(() => {
      fired.push('canceller');
      later.cancel();
    }, 20);
    cancelled.cancel();
    cancelled.cancel();
    expect(clock.pending).toBe(2);
    await clock.advance(100);
    expect(fired).toEqual(['canceller']);
    expect(clock.pending).toBe(0);
    later.cancel();
    expect(clock.pending).toBe(0);
  });

  it('fires, in the same advance, timers armed by callbacks within the window, at their own due time', async () => {
    const clock = new VirtualClock({ start: START });
    const seen: [string, number][] = [];
    clock.setTimeout(() => {
      seen.push(['first', clock.now()]);
      clock.setTimeout(() => seen.push(['chained', clock.now()]), 100);
      clock.setTimeout(() => seen.push(['outside', clock.now()]), 10_000);
    }, 100);
    clock.setTimeout(() => seen.push(['between', clock.now()]), 150);
    await clock.advance(1_000);
    expect(seen).toEqual([
      ['first', START + 100],
      ['between', START + 150],
      ['chained', START + 200],
    ]);
    expect(clock.pending).toBe(1);
  });

  it('fires timers armed by promise continuations of a callback within the same advance', async () => {
    const clock = new VirtualClock({ start: START });
    const seen: number[] = [];
    // A retry loop in the shape Ferry's code has: await a delay, do async work, arm the next delay.
    const sleep = (ms: number) => new Promise<void>((resolve) => clock.setTimeout(resolve, ms));
    const loop = (async () => {
      for (let attempt = 0; attempt < 3; attempt++) {
        await sleep(1_000);
        await Promise.resolve();
        await new Promise<void>((resolve) => queueMicrotask(resolve));
        seen.push(clock.now());
      }
    })();
    await clock.advance(3_000);
    expect(seen).toEqual([START + 1_000, START + 2_000, START + 3_000]);
    await loop;
  });

  it('lets work started before advance arm its timer first (continuations settle before time moves)', async () => {
    const clock = new VirtualClock({ start: START });
    const seen: number[] = [];
    void Promise.resolve()
      .then(() => undefined)
      .then(() => clock.setTimeout(() => seen.push(clock.now()), 5));
    await clock.advance(5);
    expect(seen).toEqual([START + 5]);
  });

  it('fires timers with a delay of 0 or less on the next advance(0), not before', async () => {
    const clock = new VirtualClock({ start: START });
    const fired: string[] = [];
    clock.setTimeout(() => fired.push('zero'), 0);
    clock.setTimeout(() => fired.push('negative'), -50);
    expect(fired).toEqual([]);
    expect(clock.pending).toBe(2);
    await clock.advance(0);
    expect(fired).toEqual(['zero', 'negative']);
    expect(clock.now()).toBe(START);
  });

  it('rejects negative, NaN and infinite durations with InvalidOptionsError', () => {
    const clock = new VirtualClock({ start: START });
    for (const ms of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(isInvalidOptionsError(caught(() => clock.advance(ms)))).toBe(true);
    }
    expect(isInvalidOptionsError(caught(() => clock.setTimeout(() => undefined, Number.NaN)))).toBe(true);
    expect(isInvalidOptionsError(caught(() => new VirtualClock({ start: Number.NaN })))).toBe(true);
    expect(isInvalidOptionsError(caught(() => new VirtualClock({ limit: 0 })))).toBe(true);
    expect(isInvalidOptionsError(caught(() => clock.runAll(1.5)))).toBe(true);
    expect(clock.now()).toBe(START);
  });

  it('runAll fires every timer, including ones they arm, and stops at the last due time', async () => {
    const clock = new VirtualClock({ start: START });
    const seen: number[] = [];
    clock.setTimeout(() => {
      seen.push(clock.now());
      clock.setTimeout(() => seen.push(clock.now()), 60_000);
    }, 5_000);
    clock.setTimeout(() => seen.push(clock.now()), 10);
    await clock.runAll();
    expect(seen).toEqual([START + 10, START + 5_000, START + 65_000]);
    expect(clock.now()).toBe(START + 65_000);
    expect(clock.pending).toBe(0);
  });

  it('runAll throws a VirtualClockRunawayError when timers keep rescheduling beyond its limit', async () => {
    const clock = new VirtualClock({ start: START });
    let ticks = 0;
    const tick = (): void => {
      ticks++;
      clock.setTimeout(tick, 1_000);
    };
    clock.setTimeout(tick, 1_000);
    const error = await clock.runAll(25).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VirtualClockRunawayError);
    expect(isVirtualClockRunawayError(error)).toBe(true);
    expect((error as VirtualClockRunawayError).limit).toBe(25);
    expect((error as VirtualClockRunawayError).pending).toBe(1);
    expect(ticks).toBe(25);
    expect(clock.now()).toBe(START + 25_000);
  });

  it('advance throws a VirtualClockRunawayError when a timer reschedules itself with no delay', async () => {
    const clock = new VirtualClock({ start: START, limit: 50 });
    let ticks = 0;
    const spin = (): void => {
      ticks++;
      clock.setTimeout(spin, 0);
    };
    clock.setTimeout(spin, 10);
    const error = await clock.advance(100).catch((e: unknown) => e);
    expect(isVirtualClockRunawayError(error)).toBe(true);
    expect(ticks).toBe(50);
    // A heartbeat that does move time is not a runaway, however many times it fires.
    const steady = new VirtualClock({ start: START, limit: 50 });
    let beats = 0;
    const beat = (): void => {
      beats++;
      steady.setTimeout(beat, 1);
    };
    steady.setTimeout(beat, 1);
    await steady.advance(500);
    expect(beats).toBe(500);
  });

  it('a throwing callback rejects advance, leaving later timers pending and time at its due time', async () => {
    const clock = new VirtualClock({ start: START });
    const fired: string[] = [];
    clock.setTimeout(() => {
      throw new Error('boom');
    }, 10);
    clock.setTimeout(() => fired.push('after'), 20);
    await expect(clock.advance(100)).rejects.toThrow('boom');
    expect(clock.now()).toBe(START + 10);
    expect(clock.pending).toBe(1);
    await clock.advance(90);
    expect(fired).toEqual(['after']);
    expect(clock.now()).toBe(START + 100);
  });

  it('runs overlapping advance calls one after the other', async () => {
    const clock = new VirtualClock({ start: START });
    const seen: number[] = [];
    clock.setTimeout(() => seen.push(clock.now()), 150);
    const first = clock.advance(100);
    const second = clock.advance(100);
    await Promise.all([first, second]);
    expect(seen).toEqual([START + 150]);
    expect(clock.now()).toBe(START + 200);
  });

  it('advances an hour of one-second heartbeats without touching real timers or Date.now', async () => {
    const realTimeout = vi.spyOn(globalThis, 'setTimeout');
    const systemTimeout = vi.spyOn(systemClock, 'setTimeout');
    const dateNow = vi.spyOn(Date, 'now');
    const clock = new VirtualClock({ start: START });
    let beats = 0;
    const beat = (): void => {
      beats++;
      clock.setTimeout(beat, 1_000);
    };
    clock.setTimeout(beat, 1_000);
    await clock.advance(60 * 60 * 1_000);
    expect(beats).toBe(3_600);
    expect(clock.now()).toBe(START + 3_600_000);
    expect(realTimeout).not.toHaveBeenCalled();
    expect(systemTimeout).not.toHaveBeenCalled();
    expect(dateNow).not.toHaveBeenCalled();
  });

  it('keeps working while the test has installed fake timers', async () => {
    vi.useFakeTimers();
    const clock = new VirtualClock({ start: START });
    const seen: number[] = [];
    clock.setTimeout(() => seen.push(clock.now()), 1_000);
    await clock.advance(1_000);
    expect(seen).toEqual([START + 1_000]);
  });

  it('virtual unref is a no-op returning the timer', async () => {
    const clock = new VirtualClock({ start: START });
    let fired = false;
    const timer = clock.setTimeout(() => {
      fired = true;
    }, 1);
    expect(timer.unref?.()).toBe(timer);
    await clock.advance(1);
    expect(fired).toBe(true);
  });

  it('nextDue is the due time of the earliest armed timer, skipping cancelled and fired ones', async () => {
    const clock = new VirtualClock({ start: START });
    expect(clock.nextDue).toBeUndefined();
    const soon = clock.setTimeout(() => undefined, 10);
    clock.setTimeout(() => undefined, 30);
    expect(clock.nextDue).toBe(START + 10);
    soon.cancel();
    expect(clock.nextDue).toBe(START + 30);
    await clock.advance(30);
    expect(clock.nextDue).toBeUndefined();
  });
});

describe('systemClock', () => {
  it('reads Date.now and arms real timers that can be cancelled and unref-ed', async () => {
    vi.useFakeTimers({ now: START });
    expect(systemClock.now()).toBe(START);
    const fired: string[] = [];
    const kept = systemClock.setTimeout(() => fired.push('kept'), 100);
    const cancelled = systemClock.setTimeout(() => fired.push('cancelled'), 50);
    cancelled.cancel();
    expect(kept.unref?.()).toBe(kept);
    await vi.advanceTimersByTimeAsync(100);
    expect(fired).toEqual(['kept']);
  });

  it('passes unref through to the Node timer, so it does not hold the process open', () => {
    const handle = { unref: vi.fn() };
    vi.spyOn(globalThis, 'setTimeout').mockReturnValue(handle as unknown as NodeJS.Timeout);
    const clear = vi.spyOn(globalThis, 'clearTimeout').mockImplementation(() => undefined);
    const timer = systemClock.setTimeout(() => undefined, 10);
    timer.unref?.();
    expect(handle.unref).toHaveBeenCalledTimes(1);
    timer.cancel();
    expect(clear).toHaveBeenCalledWith(handle);
  });
});
