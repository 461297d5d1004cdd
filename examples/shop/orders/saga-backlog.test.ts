import { describe, expect, it } from 'vitest';
import { SagaBacklog } from './saga-backlog.js';

/**
 * A backlog on a clock of the test's; refusing (by default) as soon as the oldest order waits at all,
 * and with no cap on the orders pending unless given.
 */
function backlogAt(limitMs: number, minWaitMs = 1, minPending = 1_000_000) {
  const clock = { now: 1_000_000 };
  const backlog = new SagaBacklog({ limitMs, minWaitMs, minPending, windowMs: 2000, now: () => clock.now });
  /** Places `n` orders at the clock's time, returning that time. */
  let ids = 0;
  const place = (n = 1) => {
    const at = backlog.now();
    for (let i = 0; i < n; i++) backlog.placed(`o-${++ids}`, at);
    return at;
  };
  return { backlog, clock, place };
}

describe('SagaBacklog', () => {
  it('is not behind with nothing waiting, however late the last answers came', () => {
    const { backlog, clock, place } = backlogAt(5000);
    expect(backlog.behindFor()).toBeUndefined();
    const at = place(3);
    clock.now += 60_000;
    backlog.ended(at);
    expect(backlog.waiting).toBe(0);
    expect(backlog.behindFor()).toBeUndefined();
  });

  it('foretells from the rate answers come: refuses once orders waiting outnumber what that rate answers within the limit', () => {
    // 50 answers a second; a limit of 1 s: up to about 50 orders may wait.
    const { backlog, clock, place } = backlogAt(1000);
    let next = place(); // the oldest waiting, placed at this time
    for (let ms = 0; ms < 4000; ms += 20) {
      clock.now += 20;
      backlog.ended(next);
      next = place(); // one answered, one placed: steady
    }
    expect(backlog.waiting).toBe(1);
    expect(backlog.foretold()).toBe(20);
    expect(backlog.behindFor()).toBeUndefined();
    clock.now += 1; // placed after `next` (one placed in the same ms is taken as answered with it)
    place(48);
    expect(backlog.foretold()).toBe(980);
    expect(backlog.behindFor()).toBeUndefined();
    place(2);
    expect(backlog.foretold()).toBe(1020);
    expect(backlog.behindFor()).toBe(20);
    // Answers go on at their rate: orders are taken again once the queue is short enough.
    clock.now += 20;
    backlog.ended(next);
    expect(backlog.waiting).toBe(50);
    expect(backlog.foretold()).toBe(1000);
    expect(backlog.behindFor()).toBeUndefined();
  });

  it('takes an order as answered once one placed after it is (answers come roughly in order)', () => {
    const { backlog, clock, place } = backlogAt(5000);
    place();
    clock.now += 10;
    const second = place();
    clock.now += 10;
    place();
    backlog.ended(second);
    expect(backlog.waiting).toBe(1);
  });

  it('with no answer heard for its window, the wait of the oldest order not answered stands for the rate', () => {
    // A stall (inventory down) is seen before the deadline's timeouts come.
    const { backlog, clock, place } = backlogAt(5000);
    place();
    clock.now += 4000;
    place(100);
    expect(backlog.behindFor()).toBeUndefined();
    clock.now += 1001;
    expect(backlog.foretold()).toBe(5001);
    expect(backlog.behindFor()).toBe(1);
  });

  it('refuses a burst when answers come slowly, asking for at most 5 s', () => {
    const { backlog, clock, place } = backlogAt(1000);
    for (let i = 0; i < 30; i++) {
      clock.now += 100;
      backlog.ended(place()); // 10 a second, each answered at once
    }
    clock.now += 1;
    place(500);
    clock.now += 1;
    expect(backlog.foretold()).toBeCloseTo(50_000, -2);
    expect(backlog.behindFor()).toBe(5000);
  });

  it('does not refuse a burst while the oldest order of it has waited less than minWaitMs (a fifth of the limit by default)', () => {
    // Answers came slowly because few orders came, not because the saga is slow: a burst it answers
    // promptly must be taken.
    const clock = { now: 1_000_000 };
    const backlog = new SagaBacklog({ limitMs: 1000, minPending: 10_000, now: () => clock.now });
    expect(backlog.minWaitMs).toBe(200);
    for (let i = 0; i < 30; i++) {
      clock.now += 100;
      backlog.ended(clock.now);
    }
    clock.now += 1;
    const burst = clock.now;
    for (let i = 0; i < 500; i++) backlog.placed(`o-${i}`, burst);
    clock.now += 199;
    expect(backlog.foretold()).toBeGreaterThan(1000);
    expect(backlog.behindFor()).toBeUndefined();
    clock.now += 1;
    expect(backlog.oldestWait()).toBe(200);
    expect(backlog.behindFor()).toBe(5000);
    // Answered: taken again.
    backlog.ended(burst);
    expect(backlog.oldestWait()).toBe(0);
    expect(backlog.behindFor()).toBeUndefined();
  });

  it('answers that just resumed after a pause foretell short waits, until a window of them is heard', () => {
    // A broker connection closed, then back: not a reason to refuse orders on the first answer.
    const { backlog, clock, place } = backlogAt(1000);
    place(100);
    clock.now += 900;
    backlog.ended(clock.now - 5000);
    expect(backlog.foretold()).toBe(100); // 100 waiting, one answer in 1 ms
    clock.now += 1000;
    expect(backlog.foretold()).toBe(100_000); // still only one, over 1 s
  });

  it('forgets answers older than its window', () => {
    const { backlog, clock, place } = backlogAt(1000);
    for (let i = 0; i < 10; i++) {
      backlog.ended(clock.now - 1);
      clock.now += 100;
    }
    place(10);
    // 10 answers in the last second: 10 waiting wait 1 s.
    expect(backlog.foretold()).toBe(1000);
    clock.now += 1500; // the last 4 answers are within the 2 s window
    expect(backlog.foretold()).toBe((10 / 4) * 2000);
    clock.now += 1000;
    // None left: the oldest waiting order's wait (2.5 s).
    expect(backlog.foretold()).toBe(2500);
  });

  it('ignores a placing time that is not a number', () => {
    const { backlog, place } = backlogAt(1000);
    place();
    backlog.ended(Number.NaN);
    backlog.ended(Number.POSITIVE_INFINITY);
    expect(backlog.waiting).toBe(1);
    expect(backlog.foretold()).toBe(0);
  });

  it('holds no more than the orders waiting', () => {
    const { backlog, clock, place } = backlogAt(1000);
    for (let i = 0; i < 10_000; i++) {
      const at = place();
      clock.now += 1;
      backlog.ended(at);
    }
    expect(backlog.waiting).toBe(0);
    expect(backlog.behindFor()).toBeUndefined();
  });

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])(
    'refuses a limit, least wait or window of %s ms',
    (value) => {
      expect(() => new SagaBacklog({ limitMs: value })).toThrow(/limitMs must be a number of ms above 0/);
      expect(() => new SagaBacklog({ limitMs: 1000, minWaitMs: value })).toThrow(/minWaitMs/);
      expect(() => new SagaBacklog({ limitMs: 1000, windowMs: value })).toThrow(/windowMs/);
    },
  );

  describe('the cap on orders pending: what an idle shop takes before any order tells how fast they end', () => {
    it('takes minPending (128 by default) at once, then refuses the next for 1 s, waited or not', () => {
      const clock = { now: 1_000_000 };
      const backlog = new SagaBacklog({ limitMs: 15_000, now: () => clock.now });
      expect(backlog.minPending).toBe(128);
      for (let i = 0; i < 127; i++) backlog.placed(`o-${i}`, clock.now);
      expect(backlog.behindFor()).toBeUndefined();
      backlog.placed('o-127', clock.now);
      expect(backlog.behindFor()).toBe(1000);
    });

    it('grows to as many orders as ended within the last limitMs, and shrinks back as those age', () => {
      const { backlog, clock, place } = backlogAt(1000, 1000, 10);
      for (let i = 0; i < 40; i++) {
        clock.now += 10;
        backlog.ended(place());
      }
      expect(backlog.pendingCap()).toBe(40);
      clock.now += 1;
      place(39);
      expect(backlog.behindFor()).toBeUndefined();
      place();
      expect(backlog.behindFor()).toBe(1000);
      clock.now += 900; // the first 30 endings are more than 1 s old
      expect(backlog.pendingCap()).toBe(10);
    });

    it('counts an order let through (admit) as pending until placed or dropped: a burst let through at once keeps to the cap', async () => {
      const { backlog, clock } = backlogAt(1000, 1, 3);
      const none = async () => false;
      const answers = await Promise.all(Array.from({ length: 5 }, () => backlog.admit(none)));
      expect(answers.filter((a) => a === undefined)).toHaveLength(3);
      expect(answers.filter((a) => a === 1000)).toHaveLength(2);
      backlog.placed('o-1', clock.now);
      backlog.placed('o-2', clock.now);
      backlog.dropped();
      expect(backlog.waiting).toBe(2);
      const pending = async () => true;
      expect(await backlog.admit(pending)).toBeUndefined();
      expect(await backlog.admit(pending)).toBe(1000);
    });

    it('refuses a whole number of pending orders only', () => {
      expect(() => new SagaBacklog({ limitMs: 1000, minPending: 0 })).toThrow(/minPending/);
      expect(() => new SagaBacklog({ limitMs: 1000, minPending: 1.5 })).toThrow(/minPending/);
    });
  });

  describe('behindForChecked: asks whether the oldest order taken as waiting still is', () => {
    it('passes by orders found answered elsewhere (or cancelled), and takes orders again', async () => {
      // Another process heard their answers; with no answer heard here, this one would refuse
      // orders for good.
      const { backlog, clock, place } = backlogAt(1000);
      place();
      clock.now += 1;
      place();
      clock.now += 5000;
      expect(backlog.behindFor()).toBe(4001); // the oldest has waited 5001 ms
      const asked: string[] = [];
      expect(
        await backlogChecked(backlog, async (id) => {
          asked.push(id);
          return false;
        }),
      ).toBeUndefined();
      expect(asked).toEqual(['o-1', 'o-2']);
      expect(backlog.waiting).toBe(0);
      // Passed by, not heard: no rate of answers made up from them.
      clock.now += 1;
      place();
      clock.now += 1500;
      expect(backlog.foretold()).toBe(1500);
    });

    it('refuses while the oldest is found waiting, asking again only every 250 ms', async () => {
      const { backlog, clock, place } = backlogAt(1000);
      place();
      clock.now += 1;
      place();
      clock.now += 2000;
      let asked = 0;
      const waiting = async () => {
        asked++;
        return true;
      };
      expect(await backlogChecked(backlog, waiting)).toBe(1001); // the oldest has waited 2001 ms
      expect(await backlogChecked(backlog, waiting)).toBe(1001);
      clock.now += 249;
      expect(await backlogChecked(backlog, waiting)).toBe(1250);
      expect(asked).toBe(1);
      clock.now += 1;
      await backlogChecked(backlog, waiting);
      expect(asked).toBe(2);
    });

    it('asks nothing while not behind, counts a failed question as waiting, and passes by every order found ended, however many', async () => {
      const { backlog, clock, place } = backlogAt(1000);
      place();
      let asked = 0;
      expect(
        await backlogChecked(backlog, async () => {
          asked++;
          return false;
        }),
      ).toBeUndefined();
      expect(asked).toBe(0);
      clock.now += 2000;
      expect(
        await backlogChecked(backlog, async () => {
          throw new Error('the database is down');
        }),
      ).toBe(1000);
      for (let i = 0; i < 20; i++) {
        clock.now += 1;
        place();
      }
      clock.now += 2000;
      asked = 0;
      const behind = await backlogChecked(backlog, async () => {
        asked++;
        return false;
      });
      // More than 8 orders ended unheard (another instance heard of them): after 8 questions a call,
      // an idle process still refused.
      expect(asked).toBe(21);
      expect(behind).toBeUndefined();
      expect(backlog.waiting).toBe(0);
    });
  });
});

function backlogChecked(backlog: SagaBacklog, stillWaiting: (id: string) => Promise<boolean>) {
  return backlog.behindForChecked(stillWaiting);
}
