import { getEventListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { linkSignals, withLinkedSignal } from './linked-signal.js';

describe('withLinkedSignal', () => {
  it('aborts with whichever signal aborts first, with its reason', async () => {
    for (const which of ['short', 'long'] as const) {
      const short = new AbortController();
      const long = new AbortController();
      const reason = new Error(which);
      const work = withLinkedSignal(short.signal, long.signal, (signal) =>
        sleep(10_000, undefined, { signal }),
      );
      (which === 'short' ? short : long).abort(reason);
      await expect(work).rejects.toMatchObject({ cause: reason });
    }
  });

  it('hands work an aborted signal when either was aborted already', async () => {
    const short = new AbortController();
    const long = new AbortController();
    long.abort(new Error('closing'));
    const seen = await withLinkedSignal(short.signal, long.signal, async (signal) => signal.reason);
    expect(seen).toEqual(new Error('closing'));
  });

  it('leaves nothing attached to either signal once work settles, whether it succeeds or fails', async () => {
    const long = new AbortController();
    for (let i = 0; i < 1000; i++) {
      const short = new AbortController();
      await withLinkedSignal(short.signal, long.signal, async () => {
        if (i % 2 === 1) throw new Error('failed');
      }).catch(() => {});
      expect(getEventListeners(short.signal, 'abort')).toHaveLength(0);
    }
    expect(getEventListeners(long.signal, 'abort')).toHaveLength(0);
  });

  it('runs many at once on one long-lived signal without a leak warning, and detaches them all after', async () => {
    // The shop's payments printed MaxListenersExceededWarning: eleven charges at once, one listener
    // each on the service's stopping signal (outside review).
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const long = new AbortController();
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      const runs = Array.from({ length: 50 }, () =>
        withLinkedSignal(new AbortController().signal, long.signal, () => released),
      );
      expect(getEventListeners(long.signal, 'abort')).toHaveLength(50);
      release();
      await Promise.all(runs);
      await new Promise((resolve) => setImmediate(resolve));
      expect(getEventListeners(long.signal, 'abort')).toHaveLength(0);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('linkSignals: unlink detaches from both and leaves the linked signal as it was', () => {
    const a = new AbortController();
    const b = new AbortController();
    const { signal, unlink } = linkSignals(a.signal, b.signal);
    unlink();
    unlink();
    expect(getEventListeners(a.signal, 'abort')).toHaveLength(0);
    expect(getEventListeners(b.signal, 'abort')).toHaveLength(0);
    b.abort(new Error('late'));
    expect(signal.aborted).toBe(false);
  });
});
