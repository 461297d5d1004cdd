import { randomUUID } from 'node:crypto';
import { createBus } from '../connect/create-bus.js';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { StoreUnavailableError } from '../eventstore/errors.js';
import { MemoryInbox } from '../inbox/inbox.js';
import { silentLogger } from '../logging/logger.js';
import type { Bus } from '../messaging/bus.js';
import type { Contracts, NoContracts } from '../messaging/contracts.js';
import type { Envelope, Message } from '../messaging/envelope.js';
import {
  BrokerConnectionError,
  isBusClosedError,
  isUnroutableError,
  PublishBufferFullError,
} from '../messaging/errors.js';
import type { Outcome, Transport } from '../messaging/transport.js';
import type { WireMessage } from '../messaging/wire.js';
import { vitest, zod } from './vitest-api.js';
import { sleep, waitFor } from './wait.js';

/** What the contract suite needs from a transport under test. */
export interface TransportHarness {
  /** A new, unconnected transport; all transports of a harness share one broker namespace. */
  createTransport(): Transport;
  /** Publishes bytes to the bus's topic as a producer that knows nothing of Ferry. */
  publishRaw(message: WireMessage): Promise<void>;
}

/** Promises a transport makes beyond the common contract. */
export interface TransportFeatures {
  /** Messages from one publisher reach a single-concurrency subscriber in publish order. */
  readonly orderedPerPublisher: boolean;
}

const FAST_RETRY = { initialDelayMs: 40, factor: 2, maxDelayMs: 200 };

/**
 * The transport contract: one suite of behaviour every transport must show, run against each of
 * them (memory, RabbitMQ, …). Each test uses its own random topic prefix and groups, so tests can
 * share a broker.
 */
export function testTransport(name: string, harness: TransportHarness, features: TransportFeatures): void {
  const { afterEach, describe, expect, it } = vitest('testTransport');
  const schema = zod('testTransport').z;
  describe(`transport contract: ${name}`, () => {
    const buses: Bus<Contracts>[] = [];
    afterEach(async () => {
      await Promise.all(buses.splice(0).map((bus) => bus.close()));
    });

    async function bus<C extends Contracts = NoContracts>(
      service: string,
      extra: { contracts?: C; inbox?: MemoryInbox; closeTimeoutMs?: number } = {},
    ): Promise<Bus<C>> {
      const b = await createBus<C>({
        transport: harness.createTransport(),
        service,
        logger: silentLogger,
        closeTimeoutMs: 2000,
        subscriptionDefaults: { backoff: FAST_RETRY },
        ...extra,
      });
      buses.push(b as unknown as Bus<Contracts>);
      return b;
    }

    /** A unique word so that this test's topics and groups meet no other test's. */
    function unique(): string {
      return `t${randomUUID().slice(0, 8)}`;
    }

    /**
     * A bus with a raw message type whose handler always fails, 3 attempts 10 ms apart; `seen` holds
     * what each attempt saw (`[id, type, time, attempt]`).
     */
    async function alwaysFailing() {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.raw`;
      const seen: [string, string, string, number][] = [];
      await b.subscribe(
        type,
        async (m) => {
          seen.push([m.id, m.type, m.time, m.attempt]);
          throw new Error('always');
        },
        { maxAttempts: 3, backoff: { initialDelayMs: 10, maxDelayMs: 10 } },
      );
      return { p, b, type, seen };
    }

    /**
     * A bus whose `close` gives up on handlers after 100 ms, and a handler that never ends (its runs
     * counted), subscribed one at a time in a group of its own: what a closing subscriber gives back.
     */
    async function abandoning(word: string) {
      const p = unique();
      const b = await bus(`svc-${p}`, { closeTimeoutMs: 100 });
      const group = `g-${p}`;
      const counted = { runs: 0 };
      const hang = async () => {
        counted.runs++;
        await new Promise(() => {}); // never settles
      };
      return {
        p,
        b,
        type: `${p}.${word}`,
        group,
        counted,
        hang,
        options: { group, concurrency: 1, handlerTimeoutMs: 0 },
      };
    }

    it('matches topics with AMQP semantics: * is one word, # is zero or more', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const patterns = [
        `${p}.order.*`,
        `${p}.order.#`,
        `${p}.#`,
        `${p}.*.created`,
        `${p}.order.created`,
        `${p}.#.x`,
      ];
      const got = new Map<string, string[]>(patterns.map((pattern) => [pattern, []]));
      for (const [i, pattern] of patterns.entries()) {
        await b.subscribe(pattern, async (m) => void got.get(pattern)!.push(m.type), { group: `g${i}-${p}` });
      }
      const types = [
        `${p}.order.created`,
        `${p}.order`,
        `${p}.order.item.added`,
        `${p}.user.created`,
        `${p}.x`,
      ];
      for (const type of types) await b.publish(type, {});
      const expected: Record<string, string[]> = {
        [`${p}.order.*`]: [`${p}.order.created`],
        [`${p}.order.#`]: [`${p}.order.created`, `${p}.order`, `${p}.order.item.added`],
        [`${p}.#`]: types,
        [`${p}.*.created`]: [`${p}.order.created`, `${p}.user.created`],
        [`${p}.order.created`]: [`${p}.order.created`],
        [`${p}.#.x`]: [`${p}.x`],
      };
      const total = Object.values(expected).reduce((n, list) => n + list.length, 0);
      await waitFor(
        () => [...got.values()].reduce((n, l) => n + l.length, 0) >= total,
        'all matching deliveries',
      );
      await sleep(150);
      for (const pattern of patterns)
        expect([...got.get(pattern)!].sort(), pattern).toEqual([...expected[pattern]!].sort());
    });

    it('delivers each message once to every group, and to one member of a group', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.item.made`;
      const a1: number[] = [];
      const a2: number[] = [];
      const other: number[] = [];
      const slow = async (into: number[], m: Message) => {
        await sleep(2);
        into.push((m.data as { n: number }).n);
      };
      await b.subscribe(type, (m) => slow(a1, m), { group: `a-${p}`, concurrency: 1 });
      await b.subscribe(type, (m) => slow(a2, m), { group: `a-${p}`, concurrency: 1 });
      await b.subscribe(type, (m) => slow(other, m), { group: `b-${p}`, concurrency: 5 });
      const n = 60;
      await Promise.all(Array.from({ length: n }, (_, i) => b.publish(type, { n: i })));
      await waitFor(
        () => a1.length + a2.length >= n && other.length >= n,
        'group a and b to get every message',
      );
      await sleep(100);
      const all = [...a1, ...a2].sort((x, y) => x - y);
      expect(all).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(a1.length).toBeGreaterThan(0);
      expect(a2.length).toBeGreaterThan(0);
      expect([...other].sort((x, y) => x - y)).toEqual(all);
    });

    if (features.orderedPerPublisher) {
      it('keeps the order of one publisher for a single-concurrency subscriber', async () => {
        const p = unique();
        const b = await bus(`svc-${p}`);
        const type = `${p}.seq`;
        const got: number[] = [];
        await b.subscribe(type, async (m) => void got.push((m.data as { i: number }).i), { concurrency: 1 });
        const n = 300;
        await Promise.all(Array.from({ length: n }, (_, i) => b.publish(type, { i })));
        await waitFor(() => got.length >= n, 'every message');
        expect(got).toEqual(Array.from({ length: n }, (_, i) => i));
      });
    }

    it('runs the handlers of a single-concurrency subscriber one at a time, in publish order', async () => {
      // Must not happen: a transport that takes more deliveries at once than the subscription's
      // concurrency, so that handlers of a concurrency 1 subscriber overlap and a later message,
      // quicker to handle, finishes first.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.one`;
      const n = 8;
      let running = 0;
      let most = 0;
      const started: number[] = [];
      const finished: number[] = [];
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      await b.subscribe(
        type,
        async (m) => {
          const { i } = m.data as { i: number };
          running++;
          most = Math.max(most, running);
          started.push(i);
          await gate;
          // Later messages take less time: handlers that overlapped would finish in reverse.
          await sleep((n - i) * 5);
          finished.push(i);
          running--;
        },
        { concurrency: 1 },
      );
      try {
        for (let i = 0; i < n; i++) await b.publish(type, { i });
        await waitFor(() => started.length >= 1, 'the first handler to start');
        // Every message waits while the first handler holds the only slot.
        await sleep(200);
        expect(started, 'handlers started while the first one ran').toHaveLength(1);
      } finally {
        release();
      }
      await waitFor(() => finished.length >= n, 'every message');
      await sleep(100);
      expect(most).toBe(1);
      const inOrder = Array.from({ length: n }, (_, i) => i);
      if (features.orderedPerPublisher) expect(finished).toEqual(inOrder);
      else expect([...finished].sort((x, y) => x - y)).toEqual(inOrder);
    });

    it('runs as many handlers of a subscription at once as its concurrency when that many messages wait, and never more', async () => {
      // Must not happen: a transport that ignores the subscription's concurrency either way, running
      // every waiting message at once or one at a time.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.some`;
      const concurrency = 3;
      const n = 3 * concurrency;
      let running = 0;
      let most = 0;
      let done = 0;
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      await b.subscribe(
        type,
        async () => {
          running++;
          most = Math.max(most, running);
          await gate;
          await sleep(20);
          running--;
          done++;
        },
        { concurrency },
      );
      try {
        for (let i = 0; i < n; i++) await b.publish(type, { i });
        await waitFor(
          () => running >= concurrency,
          () => `${concurrency} handlers running at once (${running} are)`,
        );
        // The other messages wait while every slot is held.
        await sleep(200);
        expect(running).toBe(concurrency);
      } finally {
        release();
      }
      await waitFor(() => done >= n, 'every message');
      await sleep(100);
      expect(done).toBe(n);
      expect(most).toBe(concurrency);
    });

    it('hands handlers a CloudEvents envelope and carries headers', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.order.created`;
      let received: Message | undefined;
      await b.subscribe(type, async (m) => {
        received = m;
      });
      const before = Date.now();
      await b.publish(
        type,
        { orderId: 42, items: ['a'] },
        { id: 'msg-1', correlationId: 'corr-1', headers: { tenant: 'acme' } },
      );
      await waitFor(() => received !== undefined, 'the message');
      const m = received!;
      expect(m).toMatchObject({
        specversion: '1.0',
        id: 'msg-1',
        source: `svc-${p}`,
        type,
        datacontenttype: 'application/json',
        data: { orderId: 42, items: ['a'] },
        correlationid: 'corr-1',
        attempt: 1,
        headers: { tenant: 'acme' },
      });
      expect(m.causationid).toBeUndefined();
      expect(Date.parse(m.time)).toBeGreaterThanOrEqual(before - 1000);
      expect(Date.parse(m.time)).toBeLessThanOrEqual(Date.now() + 1000);
    });

    it('flows correlation and causation from a handled message to what its handler publishes', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      let first: Message | undefined;
      let second: Message | undefined;
      await b.subscribe(`${p}.first`, async (m) => {
        first = m;
        await b.publish(`${p}.second`, { from: m.id });
      });
      await b.subscribe(`${p}.second`, async (m) => {
        second = m;
      });
      await b.publish(`${p}.first`, {});
      await waitFor(() => second !== undefined, 'the second message');
      expect(first!.correlationid).toBe(first!.id);
      expect(second!.correlationid).toBe(first!.correlationid);
      expect(second!.causationid).toBe(first!.id);
    });

    it('retries a failing handler with growing delays, then succeeds', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.flaky`;
      const seen: { attempt: number; at: number }[] = [];
      await b.subscribe(
        type,
        async (m) => {
          seen.push({ attempt: m.attempt, at: Date.now() });
          if (m.attempt < 3) throw new Error(`fail ${m.attempt}`);
        },
        { maxAttempts: 4, backoff: { initialDelayMs: 100, factor: 2, maxDelayMs: 1000 } },
      );
      await b.publish(type, { x: 1 });
      await waitFor(() => seen.length >= 3, 'three attempts');
      await sleep(400);
      expect(seen.map((s) => s.attempt)).toEqual([1, 2, 3]);
      // Redelivery waits out the backoff (100 ms, then 200 ms) rather than coming straight back.
      expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(90);
      expect(seen[2]!.at - seen[1]!.at).toBeGreaterThanOrEqual(190);
      expect(await b.listDeadLetters()).toEqual([]);
    });

    it("keeps retrying, uncounted, a message whose handler's own database or broker is unavailable or full, past maxAttempts, and handles it once that is over", async () => {
      // What must not happen: an outage longer than the attempts dead-letters a message that is not
      // at fault (a saga's order.created, say: the order then stayed pending for ever).
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.during.outage`;
      const down = [
        new StoreUnavailableError('postgres', 'could not start a unit of work: connect ECONNREFUSED'),
        new BrokerConnectionError('the broker could not be reached'),
        new Error('append failed', {
          cause: Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }),
        }),
      ];
      const attempts: number[] = [];
      let runs = 0;
      await b.subscribe(
        type,
        async (m) => {
          attempts.push(m.attempt);
          runs++;
          // Down for 3 runs (more than maxAttempts), then a failure of the message's own, then back.
          if (runs <= 3) throw down[runs - 1];
          if (runs === 4) throw new Error('a failure of its own: counted');
        },
        // Outages are waited out by the longest delay when it is 1 s or more.
        { maxAttempts: 2, backoff: { initialDelayMs: 1000, maxDelayMs: 1000 } },
      );
      await b.publish(type, { x: 1 });
      await waitFor(() => runs >= 5, 'the message handled once the outage is over', 15_000);
      await sleep(200);
      expect(runs).toBe(5);
      // The outage's failures did not count; the handler's own failure did.
      expect(attempts).toEqual([1, 1, 1, 1, 2]);
      expect(await b.listDeadLetters()).toEqual([]);
    });

    it('counts an unavailable store as any failure when there is no delay of 1 s to wait it out (no delays, or maxAttempts 1), and a full publish buffer always', async () => {
      // What must not happen: a message run again and again without a pause for as long as an
      // outage lasts (a 0 ms backoff starved the embedded broker's event loop), or retried for ever
      // because its own handler publishes more than the buffer takes.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const cases = [
        {
          name: 'zero',
          options: { maxAttempts: 3, backoff: { initialDelayMs: 0, maxDelayMs: 0 } },
          error: () => new StoreUnavailableError('postgres', 'could not start a unit of work'),
          attempts: 3,
        },
        {
          name: 'once',
          options: { maxAttempts: 1 },
          error: () => new StoreUnavailableError('postgres', 'could not start a unit of work'),
          attempts: 1,
        },
        {
          name: 'buffer',
          options: { maxAttempts: 2, backoff: { initialDelayMs: 1000, maxDelayMs: 1000 } },
          error: () => new PublishBufferFullError(5),
          attempts: 2,
        },
      ];
      const runs = new Map<string, number>();
      for (const c of cases) {
        await b.subscribe(
          `${p}.${c.name}`,
          () => {
            runs.set(c.name, (runs.get(c.name) ?? 0) + 1);
            throw c.error();
          },
          { group: `${p}-${c.name}`, ...c.options },
        );
        await b.publish(`${p}.${c.name}`, { x: 1 });
      }
      await waitFor(
        async () => {
          for (const c of cases)
            if ((await b.listDeadLetters({ group: `${p}-${c.name}` })).length === 0) return false;
          return true;
        },
        'every dead letter',
        10_000,
      );
      await sleep(200);
      for (const c of cases) {
        expect(runs.get(c.name), c.name).toBe(c.attempts);
        expect(await b.listDeadLetters({ group: `${p}-${c.name}` }), c.name).toMatchObject([
          { attempts: c.attempts, reason: { kind: 'handler-error' } },
        ]);
      }
    });

    it('dead-letters after maxAttempts with the error and routing, and replays on demand', async () => {
      const p = unique();
      const service = `svc-${p}`;
      const b = await bus(service);
      const type = `${p}.order.failed`;
      let fail = true;
      const attempts: number[] = [];
      const handled: Message[] = [];
      await b.subscribe(
        `${p}.order.*`,
        async (m) => {
          attempts.push(m.attempt);
          if (fail) throw new Error('payment gateway said no');
          handled.push(m);
        },
        { maxAttempts: 3 },
      );
      await b.publish(type, { orderId: 7 }, { id: 'dead-1' });
      await waitFor(async () => (await b.listDeadLetters()).length === 1, 'the dead letter');
      expect(attempts).toEqual([1, 2, 3]);
      const [dead] = await b.listDeadLetters();
      expect(dead).toMatchObject({
        group: service,
        pattern: `${p}.order.*`,
        routingKey: type,
        attempts: 3,
        reason: { kind: 'handler-error', message: 'payment gateway said no' },
        envelope: { id: 'dead-1', type, data: { orderId: 7 }, source: service },
      });
      expect(dead!.reason.stack).toContain('payment gateway said no');
      expect(JSON.parse(dead!.body)).toEqual({ orderId: 7 });
      // Listing does not consume.
      expect(await b.listDeadLetters()).toHaveLength(1);

      fail = false;
      expect(await b.replayDeadLetters({ deadLetterIds: [dead!.deadLetterId] })).toBe(1);
      await waitFor(() => handled.length === 1, 'the replayed message');
      expect(handled[0]).toMatchObject({ id: 'dead-1', type, attempt: 1, data: { orderId: 7 } });
      expect(await b.listDeadLetters()).toEqual([]);
    });

    it('lists dead letters without changing them: the same first ones each time, headers as published', async () => {
      // Must not happen: each listing returning another slice (a rotated queue), or the broker's own
      // headers (x-delivery-count) showing in listed or replayed copies.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.job.failed`;
      let fail = true;
      const replayed: Message[] = [];
      await b.subscribe(
        type,
        async (m) => {
          if (fail) throw new Error('no');
          replayed.push(m);
        },
        { maxAttempts: 1 },
      );
      for (let i = 0; i < 5; i++) await b.publish(type, { i }, { id: `dl-${p}-${i}`, headers: { h: 'v' } });
      await waitFor(async () => (await b.listDeadLetters()).length === 5, 'five dead letters');
      const all = (await b.listDeadLetters()).map((d) => d.envelope?.id);
      for (let round = 0; round < 4; round++) {
        const some = await b.listDeadLetters({ limit: 2 });
        expect(some.map((d) => d.envelope?.id)).toEqual(all.slice(0, 2));
        for (const dead of some) expect(dead.envelope?.headers).toEqual({ h: 'v' });
      }
      fail = false;
      expect(await b.replayDeadLetters()).toBe(5);
      await waitFor(() => replayed.length === 5, 'the replayed messages');
      for (const m of replayed) expect(m.headers).toEqual({ h: 'v' });
    });

    it('takes dead-letter listings and replays of one group in turns when called at once, from one bus or two: nothing lost, nothing twice', async () => {
      // Must not happen: a listing that holds the letters (RabbitMQ: fetched, not yet handed back)
      // while a replay looks for them and reports 0, a listing that comes back short or shuffled, a
      // letter replayed twice.
      const n = 6;
      const { p, b: b1, group, handled, succeed } = await deadLettered(n);
      const b2 = await bus(`svc-${p}`);
      const letters = await b1.listDeadLetters({ group });
      const ids = letters.map((d) => d.deadLetterId);
      const messageIds = letters.map((d) => d.envelope?.id);
      expect(messageIds).toEqual(Array.from({ length: n }, (_, i) => `${p}-${i}`));
      succeed();
      const listed = (list: Promise<{ envelope?: { id: string } }[]>) =>
        list.then((dead) => dead.map((d) => d.envelope?.id));
      const [l1, r1, l2, r2, r3, l3] = await Promise.all([
        listed(b1.listDeadLetters({ group })),
        b2.replayDeadLetters({ group, deadLetterIds: [ids[0]!, ids[1]!] }),
        listed(b2.listDeadLetters({ group })),
        b1.replayDeadLetters({ group, deadLetterIds: [ids[2]!, ids[3]!] }),
        // The second of these was replayed two calls before: only the first is left to replay.
        b1.replayDeadLetters({ group, deadLetterIds: [ids[4]!, ids[1]!] }),
        listed(b2.listDeadLetters({ group })),
      ]);
      expect(l1).toEqual(messageIds);
      expect(r1).toBe(2);
      expect(l2).toEqual(messageIds.slice(2));
      expect(r2).toBe(2);
      expect(r3).toBe(1);
      expect(l3).toEqual(messageIds.slice(5));
      await waitFor(() => handled.length >= 5, 'the replayed messages');
      await sleep(200);
      expect([...handled].sort()).toEqual(messageIds.slice(0, 5).sort());
      expect(await listed(b2.listDeadLetters({ group }))).toEqual(messageIds.slice(5));
    });

    /**
     * `n` messages dead-lettered in order by a subscriber of a new group that fails until `succeed()`,
     * then records what it handles in `handled`.
     */
    async function deadLettered(n: number) {
      const p = unique();
      const group = `dl-${p}`;
      const b = await bus(`svc-${p}`);
      const type = `${p}.job.failed`;
      let fail = true;
      const handled: string[] = [];
      await b.subscribe(
        type,
        async (m) => {
          if (fail) throw new Error('no');
          handled.push(m.id);
        },
        { group, maxAttempts: 1, concurrency: 1 },
      );
      for (let i = 0; i < n; i++) await b.publish(type, { i }, { id: `${p}-${i}` });
      await waitFor(
        async () => (await b.listDeadLetters({ group, limit: n })).length === n,
        'the dead letters',
      );
      const listed = async () => (await b.listDeadLetters({ group, limit: n })).map((d) => d.envelope?.id);
      const succeed = () => {
        fail = false;
      };
      return { p, b, group, handled, listed, succeed };
    }

    it('replays dead letters chosen by id and leaves the others where they were, in their order', async () => {
      // Must not happen: the letters a replay by id passes over coming back in another order (RabbitMQ
      // quorum queues: handed back all at once, or by a closing channel), or any letter lost or kept
      // twice. More letters than RabbitMQ 3.x takes back in order at once (about 32).
      const n = 40;
      const { p, b, group, handled, listed, succeed } = await deadLettered(n);
      const letters = await b.listDeadLetters({ group, limit: n });
      const messageIds = letters.map((d) => d.envelope?.id);
      expect(messageIds).toEqual(Array.from({ length: n }, (_, i) => `${p}-${i}`));
      const idOf = (i: number) => letters[i]!.deadLetterId;
      succeed();

      expect(await b.replayDeadLetters({ group, deadLetterIds: [idOf(20)] })).toBe(1);
      expect(await listed()).toEqual(messageIds.filter((_, i) => i !== 20));
      // Asked in another order than the queue's, with one already replayed and one unknown.
      expect(
        await b.replayDeadLetters({ group, deadLetterIds: [idOf(35), 'no-such-letter', idOf(3), idOf(20)] }),
      ).toBe(2);
      const left = messageIds.filter((_, i) => i !== 3 && i !== 20 && i !== 35);
      expect(await listed()).toEqual(left);
      // A replay by position sees the order the replays by id left.
      expect(await b.replayDeadLetters({ group, limit: 1 })).toBe(1);
      expect(await listed()).toEqual(left.slice(1));

      await waitFor(() => handled.length >= 4, 'the replayed messages');
      await sleep(200);
      expect(handled).toEqual([messageIds[20], messageIds[3], messageIds[35], messageIds[0]]);
      // Every letter is either still a dead letter or was handled, once.
      expect([...(await listed()), ...handled].sort()).toEqual([...messageIds].sort());
    });

    it('replays at most limit dead letters, the first listed, and leaves the others listed in their order', async () => {
      // Must not happen: a replay given a limit sending back every letter of the group.
      const { p, b, group, handled, listed, succeed } = await deadLettered(3);
      const messageIds = await listed();
      expect(messageIds).toEqual([`${p}-0`, `${p}-1`, `${p}-2`]);
      succeed();

      expect(await b.replayDeadLetters({ group, limit: 1 })).toBe(1);
      expect(await listed()).toEqual(messageIds.slice(1));
      await waitFor(() => handled.length >= 1, 'the replayed message');
      await sleep(200);
      expect(handled).toEqual([messageIds[0]]);

      // With ids too, the limit still holds: one of the two asked for.
      const ids = (await b.listDeadLetters({ group })).map((d) => d.deadLetterId);
      expect(await b.replayDeadLetters({ group, deadLetterIds: ids, limit: 1 })).toBe(1);
      const left = await listed();
      expect(left).toHaveLength(1);
      await waitFor(() => handled.length >= 2, 'the second replayed message');
      await sleep(200);
      expect([...handled, ...left].sort()).toEqual([...messageIds].sort());
    });

    it('counts anything a handler throws as a handler failure: retried, then dead-lettered as handler-error', async () => {
      // Must not happen: an odd thrown value looping forever, or counted as a consumer crash.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const hostile = new Proxy(
        {},
        {
          get() {
            throw new Error('no property for you');
          },
          getPrototypeOf() {
            throw new Error('no prototype for you');
          },
        },
      );
      const badMessage = new Error('x');
      Object.defineProperty(badMessage, 'message', {
        get() {
          throw new Error('no message for you');
        },
      });
      const thrown: Record<string, () => unknown> = {
        nullPrototype: () => Object.create(null),
        plainObject: () => ({ code: 42 }),
        undefined: () => undefined,
        null: () => null,
        string: () => 'plain string',
        number: () => 7,
        hostileProxy: () => hostile,
        errorWithThrowingMessage: () => badMessage,
      };
      const names = Object.keys(thrown);
      const runs = new Map<string, number[]>();
      await b.subscribe(
        `${p}.#`,
        async (m) => {
          const name = names[Number(m.type.slice(p.length + 2))]!;
          runs.set(name, [...(runs.get(name) ?? []), m.attempt]);
          throw thrown[name]!();
        },
        { maxAttempts: 2, backoff: { initialDelayMs: 50, factor: 1, maxDelayMs: 50 } },
      );
      for (const i of names.keys()) await b.publish(`${p}.c${i}`, { i });
      await waitFor(
        async () => (await b.listDeadLetters()).length >= names.length,
        'every message dead-lettered',
        10_000,
      );
      await sleep(300);
      const dead = await b.listDeadLetters();
      expect(dead).toHaveLength(names.length);
      for (const [i, name] of names.entries()) {
        expect(runs.get(name), name).toEqual([1, 2]);
        const letter = dead.find((d) => d.routingKey === `${p}.c${i}`);
        expect(letter?.reason.kind, name).toBe('handler-error');
        expect(letter?.attempts, name).toBe(2);
        expect(typeof letter?.reason.message, name).toBe('string');
      }
      const byName = (name: string) => dead.find((d) => d.routingKey === `${p}.c${names.indexOf(name)}`)!;
      expect(byName('string').reason.message).toBe('plain string');
      expect(byName('plainObject').reason.message).toContain('{"code":42}');
      expect(byName('undefined').reason.message).toContain('undefined');
    });

    it('cuts a long dead-letter reason at 4,000 characters, the same way everywhere', async () => {
      // Must not happen: a 10,000-character error kept whole by one transport and cut at another length
      // (or in the middle of a character) by another.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const long = 'x'.repeat(10_000);
      // An emoji (two UTF-16 units) across the cut: cut before it, never between its halves.
      const straddling = `${'y'.repeat(3998)}😀${'z'.repeat(6000)}`;
      await b.subscribe(
        `${p}.#`,
        async (m) => {
          throw new Error(m.type.endsWith('long') ? long : straddling);
        },
        { maxAttempts: 1 },
      );
      await b.publish(`${p}.long`, {});
      await b.publish(`${p}.straddling`, {});
      await waitFor(async () => (await b.listDeadLetters()).length === 2, 'both dead letters');
      const dead = await b.listDeadLetters();
      const reason = (type: string) => dead.find((d) => d.routingKey === type)!.reason;
      expect(reason(`${p}.long`).message).toBe(`${'x'.repeat(3999)}…`);
      expect(reason(`${p}.straddling`).message).toBe(`${'y'.repeat(3998)}…`);
      for (const d of dead) {
        expect(d.reason.kind).toBe('handler-error');
        expect(d.reason.stack!.length).toBeLessThanOrEqual(4000);
        expect(d.reason.stack).toMatch(/^Error: (x+|y+)…$/);
      }
    });

    it('dead-letters a body that is not JSON and keeps consuming', async () => {
      const p = unique();
      const service = `svc-${p}`;
      const b = await bus(service);
      const type = `${p}.raw`;
      const handled: unknown[] = [];
      await b.subscribe(type, async (m) => void handled.push(m.data));
      await harness.publishRaw({ routingKey: type, body: Buffer.from('{not json'), messageId: 'bad-1' });
      await harness.publishRaw({ routingKey: type, body: Buffer.from(''), messageId: 'bad-2' });
      await harness.publishRaw({ routingKey: type, body: Buffer.from('{"ok":true}'), messageId: 'good-1' });
      await waitFor(() => handled.length === 1, 'the valid message');
      await waitFor(async () => (await b.listDeadLetters()).length === 2, 'two dead letters');
      const dead = await b.listDeadLetters();
      expect(dead.map((d) => d.reason.kind)).toEqual(['malformed', 'malformed']);
      expect(dead[0]!.reason.message).toMatch(/not valid JSON/);
      expect(dead[0]!.body).toBe('{not json');
      expect(dead[0]!.routingKey).toBe(type);
      expect(dead[1]!.reason.message).toMatch(/empty body/);
      expect(handled).toEqual([{ ok: true }]);
    });

    it('dead-letters a raw message whose time or expiry is not RFC 3339, and routes raw messages by their routing key', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.raw`;
      const handled: string[] = [];
      const types: string[] = [];
      await b.subscribe(type, async (m) => {
        handled.push(m.id);
        types.push(m.type);
      });
      const body = Buffer.from('{}');
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'bad-time',
        headers: { 'cloudEvents:time': 'yesterday' },
      });
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'bad-expiry',
        headers: { 'cloudEvents:expiresat': '2000-01-01T00:00:00' }, // no offset: whose midnight?
      });
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'good',
        headers: {
          'cloudEvents:time': '2026-01-02T03:04:05+01:00',
          'cloudEvents:expiresat': '2999-01-01T00:00:00Z',
        },
      });
      // A time that is not text cannot be read either (a number: seconds or milliseconds?).
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'number-expiry',
        headers: { 'cloudEvents:expiresat': 946684800000 },
      });
      // A type header naming another type does not change where the broker routes it.
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'renamed',
        headers: { 'x-ferry-routing-key': `${p}.other` },
      });
      await waitFor(() => handled.length === 2, 'the two valid messages');
      await waitFor(async () => (await b.listDeadLetters()).length === 3, 'three dead letters');
      const dead = await b.listDeadLetters();
      expect(dead.map((d) => [d.reason.kind, d.reason.message])).toEqual([
        ['malformed', 'cloudEvents:time "yesterday" is not an RFC 3339 time'],
        ['malformed', 'cloudEvents:expiresat "2000-01-01T00:00:00" is not an RFC 3339 time'],
        ['malformed', 'cloudEvents:expiresat is a number, not an RFC 3339 time'],
      ]);
      expect(handled.sort()).toEqual(['good', 'renamed']);
      // Nor the type: a plain producer's copy of Ferry's header named a type the pattern does not match.
      expect(types).toEqual([type, type]);
    });

    it("takes a plain producer's message as a first delivery whatever Ferry headers it carries: its attempts are counted from 1 and it is dead-lettered after maxAttempts", async () => {
      // The memory transport decoded a raw message at attempt 1 every time: one that failed was
      // retried for ever, never dead-lettered. A producer's x-ferry-attempt set its attempt (99: no
      // retry) and x-ferry-routing-key its type.
      const { p, b, type, seen } = await alwaysFailing();
      await harness.publishRaw({
        routingKey: type,
        body: Buffer.from('{"n":1}'),
        messageId: 'forged',
        headers: {
          'x-ferry-attempt': 99,
          'x-ferry-routing-key': `${p}.admin`,
          'x-ferry-redeliveries': 50,
          'x-app': 'kept',
        },
      });
      await waitFor(async () => (await b.listDeadLetters()).length === 1, 'the dead letter');
      expect(seen.map(([id, t, , attempt]) => [id, t, attempt])).toEqual([
        ['forged', type, 1],
        ['forged', type, 2],
        ['forged', type, 3],
      ]);
      const [dead] = await b.listDeadLetters();
      expect(dead).toMatchObject({ routingKey: type, attempts: 3, reason: { kind: 'handler-error' } });
      // Replayed, it starts again from attempt 1, with its type and its own headers.
      expect(await b.replayDeadLetters()).toBe(1);
      await waitFor(() => seen.length >= 4, 'the replayed message');
      expect([seen[3]![0], seen[3]![1], seen[3]![3]]).toEqual(['forged', type, 1]);
    });

    it.each([
      ['a published message, its handler timed', 'published', 5000],
      ['a published message, its handler not timed', 'published', 0],
      ["a plain producer's message without an id, its handler timed", 'raw', 5000],
      ["a plain producer's message without an id, its handler not timed", 'raw', 0],
    ] as const)(
      'settles %s by what it was when delivered, whatever its handler writes to it: attempts counted, dead-lettered with its routing and id, replayed as it was',
      async (_what, how, handlerTimeoutMs) => {
        // Must not happen: a handler (JavaScript, or TypeScript through a cast) that writes to the
        // readonly message it is handed makes it retry for ever without delay, or moves its dead
        // letter (and so its replay) to another type.
        const p = unique();
        const b = await bus(`svc-${p}`);
        const type = `${p}.placed`;
        const seen: [string, string, number][] = [];
        let fail = true;
        await b.subscribe(
          type,
          async (m) => {
            seen.push([m.id, m.type, m.attempt]);
            if (!fail) return;
            const writable = m as { -readonly [K in keyof Message]: Message[K] };
            writable.attempt = 0;
            writable.type = `${p}.renamed`;
            writable.id = 'forged-id';
            throw new Error('no');
          },
          { maxAttempts: 3, backoff: { initialDelayMs: 10, maxDelayMs: 10 }, handlerTimeoutMs },
        );
        if (how === 'published') await b.publish(type, { n: 1 }, { id: 'original-id' });
        else await harness.publishRaw({ routingKey: type, body: Buffer.from('{"n":1}') });
        await waitFor(async () => (await b.listDeadLetters()).length === 1, 'the dead letter');
        const id = seen[0]![0];
        if (how === 'published') expect(id).toBe('original-id');
        expect(seen).toEqual([
          [id, type, 1],
          [id, type, 2],
          [id, type, 3],
        ]);
        const [dead] = await b.listDeadLetters();
        expect(dead).toMatchObject({ routingKey: type, attempts: 3, envelope: { id, type } });
        fail = false;
        expect(await b.replayDeadLetters()).toBe(1);
        await waitFor(() => seen.length === 4, 'the replayed message');
        expect(seen[3]).toEqual([id, type, 1]);
      },
    );

    it('gives a raw message without an id or a time of its own one id and one time, kept through its retries and its dead letter', async () => {
      // Must not happen: a new id at every attempt, so that an inbox took each retry for another
      // message (a hung first run and its retry ran side by side, both to the end).
      const { b, type, seen } = await alwaysFailing();
      await harness.publishRaw({ routingKey: type, body: Buffer.from('{"n":1}') });
      await waitFor(async () => (await b.listDeadLetters()).length === 1, 'the dead letter');
      const [[id, , time]] = seen as [[string, string, string, number]];
      expect(seen).toEqual([
        [id, type, time, 1],
        [id, type, time, 2],
        [id, type, time, 3],
      ]);
      const [dead] = await b.listDeadLetters();
      expect(dead!.envelope).toMatchObject({ id, time });
    });

    it('dead-letters a raw message whose routing key is not a valid message type, or whose body is not UTF-8', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const handled: string[] = [];
      await b.subscribe(`${p}.*`, async (m) => void handled.push(m.id));
      await harness.publishRaw({ routingKey: `${p}.a b`, body: Buffer.from('{}'), messageId: 'space' });
      await harness.publishRaw({ routingKey: `${p}.*`, body: Buffer.from('{}'), messageId: 'star' });
      // "\xff\xfe": handled as two U+FFFD, the data altered without a word.
      await harness.publishRaw({
        routingKey: `${p}.x`,
        body: Buffer.from([0x22, 0xff, 0xfe, 0x22]),
        messageId: 'latin',
      });
      await harness.publishRaw({ routingKey: `${p}.x`, body: Buffer.from('"é"'), messageId: 'good' });
      await waitFor(async () => (await b.listDeadLetters()).length === 3, 'three dead letters');
      await waitFor(() => handled.length === 1, 'the valid message');
      expect(handled).toEqual(['good']);
      const dead = (await b.listDeadLetters()).map((d) => [d.routingKey, d.reason.kind, d.reason.message]);
      expect(dead.sort()).toEqual([
        [`${p}.*`, 'malformed', expect.stringMatching(/^the message type is not valid: .*"\*"/)],
        [`${p}.a b`, 'malformed', expect.stringMatching(/^the message type is not valid: .*"a b"/)],
        [`${p}.x`, 'malformed', 'body is not valid UTF-8 (JSON text must be)'],
      ]);
    });

    it('dead-letters at once a raw message whose id, correlation id or causation id holds NUL, as publishing refuses them', async () => {
      // PostgreSQL text holds no NUL: on a PostgreSQL inbox such a message failed every attempt with
      // the database's "invalid byte sequence", then went to the dead letters as a handler error.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.raw`;
      const handled: string[] = [];
      let runs = 0;
      await b.subscribe(type, async (m) => {
        runs++;
        handled.push(m.id);
      });
      const body = Buffer.from('{}');
      await harness.publishRaw({ routingKey: type, body, messageId: 'nul\u0000id' });
      await harness.publishRaw({ routingKey: type, body, messageId: 'nul-corr', correlationId: 'c\u0000' });
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'nul-cause',
        headers: { 'cloudEvents:causationid': 'x\u0000y' },
      });
      await harness.publishRaw({ routingKey: type, body, messageId: 'good' });
      await waitFor(async () => (await b.listDeadLetters()).length === 3, 'three dead letters');
      const dead = await b.listDeadLetters();
      expect(dead.map((d) => [d.reason.kind, d.reason.message, d.attempts])).toEqual([
        ['malformed', "the message id holds NUL or a lone surrogate, which Ferry's stores cannot keep", 1],
        [
          'malformed',
          "the correlation id holds NUL or a lone surrogate, which Ferry's stores cannot keep",
          1,
        ],
        ['malformed', "the causation id holds NUL or a lone surrogate, which Ferry's stores cannot keep", 1],
      ]);
      await waitFor(() => handled.length === 1, 'the valid message');
      expect(handled).toEqual(['good']);
      expect(runs).toBe(1);
    });

    it('dead-letters at once a raw message whose causation id is over 255 bytes, as publishing refuses it', async () => {
      // It reached the handler, whose own publishes (taking its ids) were all refused: a handler error
      // on every attempt rather than one malformed letter.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.raw`;
      const handled: string[] = [];
      await b.subscribe(type, async (m) => void handled.push(m.id));
      const body = Buffer.from('{}');
      await harness.publishRaw({
        routingKey: type,
        body,
        messageId: 'long-cause',
        headers: { 'cloudEvents:causationid': 'é'.repeat(128) },
      });
      await harness.publishRaw({ routingKey: type, body, messageId: 'good' });
      await waitFor(async () => (await b.listDeadLetters()).length === 1, 'one dead letter');
      const dead = await b.listDeadLetters();
      expect(dead.map((d) => [d.reason.kind, d.reason.message, d.attempts])).toEqual([
        ['malformed', 'the causation id is 256 bytes long (at most 255)', 1],
      ]);
      await waitFor(() => handled.length === 1, 'the valid message');
      expect(handled).toEqual(['good']);
    });

    it('wraps messages of plain producers into envelopes', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.order.created`;
      let received: Message | undefined;
      await b.subscribe(type, async (m) => {
        received = m;
      });
      const timestamp = Date.parse('2026-01-02T03:04:05.678Z');
      await harness.publishRaw({
        routingKey: type,
        body: Buffer.from(JSON.stringify({ orderId: 'o-1', items: [1, 2] })),
        messageId: 'legacy-1',
        timestamp,
      });
      await waitFor(() => received !== undefined, 'the message');
      expect(received).toMatchObject({
        specversion: '1.0',
        id: 'legacy-1',
        type,
        time: '2026-01-02T03:04:05.678Z',
        data: { orderId: 'o-1', items: [1, 2] },
        correlationid: 'legacy-1',
        attempt: 1,
      });
    });

    it('validates against contracts: rejects bad data at publish, dead-letters it at consume', async () => {
      const p = unique();
      const type = `${p}.order.placed`;
      const contracts = {
        [type]: schema.object({ orderId: schema.string(), qty: schema.number().int().positive() }),
      };
      const b = await bus(`svc-${p}`, { contracts });
      const handled: unknown[] = [];
      await b.subscribe(type, async (m) => void handled.push(m.data));
      await expect(b.publish(type, { orderId: 'o1', qty: -1 })).rejects.toMatchObject({
        code: 'MESSAGE_INVALID',
        issues: [{ path: 'qty' }],
      });
      await harness.publishRaw({ routingKey: type, body: Buffer.from('{"orderId":5}'), messageId: 'inv-1' });
      await b.publish(type, { orderId: 'o2', qty: 2 });
      await waitFor(() => handled.length === 1, 'the valid message');
      await waitFor(
        async () => (await b.listDeadLetters()).length === 1,
        'the invalid message dead-lettered',
      );
      const [dead] = await b.listDeadLetters();
      expect(dead!.reason.kind).toBe('invalid');
      expect(dead!.reason.message).toMatch(/orderId/);
      expect(handled).toEqual([{ orderId: 'o2', qty: 2 }]);
    });

    it('rejects a message that no subscription would receive', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const error = await b.publish(`${p}.nobody.listens`, {}).catch((e: unknown) => e);
      expect(isUnroutableError(error)).toBe(true);
    });

    it('processes a re-sent message once with an inbox', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`, { inbox: new MemoryInbox() });
      const type = `${p}.pay`;
      const handled: string[] = [];
      await b.subscribe(type, async (m) => void handled.push(m.id), { concurrency: 4 });
      for (let i = 0; i < 3; i++) await b.publish(type, { amount: 5 }, { id: 'same-id' });
      await b.publish(type, { amount: 6 }, { id: 'other-id' });
      await waitFor(() => handled.length >= 2, 'both distinct messages');
      await sleep(150);
      expect(handled.sort()).toEqual(['other-id', 'same-id']);
    });

    it('deletes a subscription nobody consumes any more, with what it held, and refuses while one does', async () => {
      // Must not happen: a deleted subscription still collecting messages, or deleting one in use.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const group = `old-${p}`;
      const seen: number[] = [];
      let failOnce = true;
      const sub = await b.subscribe(
        `${p}.item.*`,
        async (m) => {
          if (failOnce) {
            failOnce = false;
            throw new Error('waits in a delay queue');
          }
          seen.push(m.data as number);
        },
        { group, backoff: { initialDelayMs: 2000, factor: 2, maxDelayMs: 2000 }, maxAttempts: 2 },
      );
      const options = {
        group,
        backoff: { initialDelayMs: 2000, factor: 2, maxDelayMs: 2000 },
        maxAttempts: 2,
      };
      await expect(b.deleteSubscription(`${p}.item.*`, options)).rejects.toMatchObject({
        code: 'SUBSCRIPTION_IN_USE',
      });
      await b.publish(`${p}.item.added`, 1); // fails once, then waits out its retry delay
      await sleep(300);
      await sub.close();
      await b.publish(`${p}.item.added`, 2);
      await b.publish(`${p}.item.added`, 3);
      // One waiting out its retry delay, two in the queue.
      expect(await b.deleteSubscription(`${p}.item.*`, options)).toBe(3);
      // Gone: nothing routes there any more, and a new subscription starts empty.
      await expect(b.publish(`${p}.item.added`, 4)).rejects.toSatisfy(isUnroutableError);
      const fresh: number[] = [];
      await b.subscribe(`${p}.item.*`, async (m) => void fresh.push(m.data as number), { group });
      await b.publish(`${p}.item.added`, 5);
      await waitFor(() => fresh.length === 1, 'the fresh subscription');
      await sleep(2500); // past the old retry delay: the message it held must not come back
      expect(fresh).toEqual([5]);
      expect(seen).toEqual([]);
      expect(await b.deleteSubscription(`${p}.never.*`, { group })).toBe(0);
    });

    it('deleting a subscription with other retry options leaves the retries of its own delays, which reach it if made again', async () => {
      // The same on every transport: RabbitMQ finds delay queues by the delays it is given.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const group = `redo-${p}`;
      const pattern = `${p}.item.*`;
      const own = { group, backoff: { initialDelayMs: 1500, factor: 1, maxDelayMs: 1500 }, maxAttempts: 2 };
      const runs: { n: number; attempt: number }[] = [];
      const handler = async (m: Message) => {
        runs.push({ n: m.data as number, attempt: m.attempt });
        if (m.attempt === 1) throw new Error('waits in a delay queue');
      };
      const sub = await b.subscribe(pattern, handler, own);
      await b.publish(`${p}.item.added`, 1);
      await waitFor(() => runs.length === 1, 'the first attempt');
      await sleep(200);
      await sub.close();
      // Other delays: the retry waiting out 1500 ms is not found, nor counted.
      const other = { group, backoff: { initialDelayMs: 700, factor: 1, maxDelayMs: 700 }, maxAttempts: 2 };
      expect(await b.deleteSubscription(pattern, other)).toBe(0);
      // Made again before the retry is due: the retry reaches it.
      await b.subscribe(pattern, handler, own);
      await waitFor(() => runs.length === 2, 'the retry left in its delay queue', 5000);
      expect(runs).toEqual([
        { n: 1, attempt: 1 },
        { n: 1, attempt: 2 },
      ]);
    });

    it('gives every payload the outcome of a JSON round trip: the same data, or MESSAGE_NOT_SERIALIZABLE at publish', async () => {
      // Must not happen: an embedded bus handing handlers what a distributed one never could.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const received = new Map<string, unknown>();
      await b.subscribe(`${p}.#`, async (m) => void received.set(m.type, m.data));
      let deep: unknown = 'bottom';
      for (let i = 0; i < 1000; i++) deep = [deep];
      let tooDeep: unknown = {};
      for (let i = 0; i < 1_000_000; i++) tooDeep = { d: tooDeep };
      const cyclic: Record<string, unknown> = { name: 'loop' };
      cyclic.self = cyclic;
      class Point {
        x = 1;
        #secret = 2;
        get y(): number {
          return this.#secret;
        }
      }
      const at = new Date('2026-01-02T03:04:05.678Z');
      const sparse: unknown[] = [1];
      sparse[2] = 3;
      const cases: Record<string, unknown> = {
        date: { at },
        dateTop: at,
        bigint: { n: 10n },
        bigintTop: 1n,
        undefinedField: { a: undefined, b: 1 },
        undefinedTop: undefined,
        undefinedInArray: [undefined, 1],
        nonFinite: { nan: Number.NaN, inf: Number.POSITIVE_INFINITY, ninf: Number.NEGATIVE_INFINITY },
        nanTop: Number.NaN,
        negativeZero: { z: -0, list: [-0] },
        negativeZeroTop: -0,
        mapSet: { map: new Map([['k', 1]]), set: new Set([1, 2]) },
        classInstance: new Point(),
        cycle: cyclic,
        protoKey: JSON.parse('{"__proto__": {"polluted": true}, "a": 1}'),
        functions: { f: () => 1, list: [() => 1, 2] },
        functionTop: () => 1,
        symbolTop: Symbol('top'),
        symbols: { s: Symbol('s'), list: [Symbol('t')], [Symbol('key')]: 1 },
        toJsonUndefined: { a: { toJSON: () => undefined }, b: 2 },
        toJsonUndefinedTop: { toJSON: () => undefined },
        toJsonThrows: {
          a: {
            toJSON: () => {
              throw new Error('no');
            },
          },
        },
        megabyte: { s: 'x'.repeat(1024 * 1024) },
        nonBmp: { s: '😀 𝄞 𠜎' },
        loneSurrogates: { s: 'a\ud800b\udfffc', 'k\ud800': 1 },
        nul: { s: 'a\u0000b', 'k\u0000': 'v' },
        deepNesting: deep,
        tooDeep,
        sparseArray: sparse,
        nullPrototype: Object.assign(Object.create(null) as object, { a: 1 }),
        numericKeys: { b: 1, 2: 'two', a: 2, 1: 'one' },
        plain: { orderId: 'o-1', qty: 3, items: [{ sku: 'a', price: 9.5 }], ok: true, none: null },
      };
      const expected = new Map<string, { json: string } | { error: true }>();
      const names = Object.keys(cases);
      for (const [i, name] of names.entries()) {
        const data = cases[name];
        let json: string | undefined;
        try {
          // Data that is itself a function or a symbol is refused (JSON has no text for it: sent
          // as null, a payload builder passed uncalled would go unnoticed).
          if (typeof data === 'function' || typeof data === 'symbol') throw new TypeError('no JSON text');
          json = JSON.stringify(data) ?? 'null';
        } catch {
          expected.set(`${p}.c${i}`, { error: true });
          await expect(b.publish(`${p}.c${i}`, data), name).rejects.toMatchObject({
            code: 'MESSAGE_NOT_SERIALIZABLE',
          });
          continue;
        }
        expected.set(`${p}.c${i}`, { json });
        await b.publish(`${p}.c${i}`, data);
      }
      const delivered = [...expected.values()].filter((e) => 'json' in e).length;
      await waitFor(() => received.size >= delivered, 'every encodable payload');
      await sleep(100);
      for (const [i, name] of names.entries()) {
        const outcome = expected.get(`${p}.c${i}`)!;
        const got = received.get(`${p}.c${i}`);
        if ('error' in outcome) {
          expect(received.has(`${p}.c${i}`), name).toBe(false);
          continue;
        }
        expect(got, name).toStrictEqual(JSON.parse(outcome.json));
        expect(JSON.stringify(got), name).toBe(outcome.json);
      }
      // Spot checks of what the table means for a user.
      const at0 = names.indexOf('date');
      expect(received.get(`${p}.c${at0}`)).toEqual({ at: '2026-01-02T03:04:05.678Z' });
      const proto = received.get(`${p}.c${names.indexOf('protoKey')}`) as Record<string, unknown>;
      expect(Object.getPrototypeOf(proto)).toBe(Object.prototype);
      expect(Object.keys(proto)).toEqual(['__proto__', 'a']);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(received.get(`${p}.c${names.indexOf('negativeZeroTop')}`)).toBe(0);
      expect(Object.is(received.get(`${p}.c${names.indexOf('negativeZeroTop')}`), 0)).toBe(true);
    });

    it('hands every delivery its own copy of data and headers, taken at publish', async () => {
      // Must not happen: a handler seeing the publisher's later changes, or another handler's.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.shared`;
      const seenA: unknown[] = [];
      const seenB: unknown[] = [];
      await b.subscribe(
        type,
        async (m) => {
          const data = m.data as { list: number[]; at: unknown };
          seenA.push(structuredClone({ ...data, tenant: m.headers?.tenant }));
          data.list.push(99);
          (m.headers as Record<string, string>).tenant = 'changed-by-a';
          if (m.attempt === 1) throw new Error('retry me');
        },
        { group: `a-${p}`, maxAttempts: 2 },
      );
      await b.subscribe(
        type,
        async (m) => {
          await sleep(50);
          seenB.push(structuredClone({ ...(m.data as object), tenant: m.headers?.tenant }));
        },
        { group: `b-${p}` },
      );
      const data = { list: [1], at: new Date('2026-01-02T03:04:05.678Z') };
      const headers: Record<string, string> = { tenant: 't1' };
      await b.publish(type, data, { headers });
      data.list.push(2);
      data.at.setFullYear(2000);
      headers.tenant = 'changed-by-publisher';
      await waitFor(() => seenA.length === 2 && seenB.length === 1, 'both groups and the retry');
      const original = { list: [1], at: '2026-01-02T03:04:05.678Z', tenant: 't1' };
      // The retry gets the message as published, not as the first attempt left it.
      expect(seenA).toEqual([original, original]);
      expect(seenB).toEqual([original]);
      expect(data.list).toEqual([1, 2]);
    });

    it('replays a dead letter into its subscription as it is now: kept while deleted, delivered once subscribed again', async () => {
      // Must not happen: a replay that reports success while the letter vanishes into a deleted queue.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const pattern = `${p}.order.*`;
      const group = `g-${p}`;
      const sub = await b.subscribe(
        pattern,
        async () => {
          throw new Error('always fails');
        },
        { group, maxAttempts: 1 },
      );
      await b.publish(`${p}.order.placed`, { n: 1 }, { id: 'replay-1' });
      await waitFor(async () => (await b.listDeadLetters({ group })).length === 1, 'the dead letter');
      await sub.close();
      await b.deleteSubscription(pattern, { group, maxAttempts: 1 });
      expect(await b.replayDeadLetters({ group })).toBe(0);
      // RabbitMQ hands a letter it could not replay back to the dead-letter queue, which a quorum
      // queue may show a moment later.
      await waitFor(async () => (await b.listDeadLetters({ group })).length === 1, 'the letter kept');
      const [kept] = await b.listDeadLetters({ group });
      expect(kept).toMatchObject({ pattern, routingKey: `${p}.order.placed`, envelope: { id: 'replay-1' } });

      const handled: Message[] = [];
      await b.subscribe(pattern, async (m) => void handled.push(m), { group, maxAttempts: 1 });
      expect(await b.replayDeadLetters({ group, deadLetterIds: [kept!.deadLetterId] })).toBe(1);
      await waitFor(() => handled.length === 1, 'the replayed message in the new subscription');
      expect(handled[0]).toMatchObject({ id: 'replay-1', attempt: 1, data: { n: 1 } });
      expect(await b.listDeadLetters({ group })).toEqual([]);
    });

    it('fails a handler past handlerTimeoutMs although it ignores its signal, frees its slot, and dead-letters as timeout', async () => {
      // Must not happen: a hung handler holding its concurrency slot forever.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.job`;
      const runs: { n: number; attempt: number }[] = [];
      let hungSignal: AbortSignal | undefined;
      await b.subscribe(
        type,
        async (m, { signal }) => {
          const n = (m.data as { n: number }).n;
          runs.push({ n, attempt: m.attempt });
          if (n === 1) {
            hungSignal = signal;
            await new Promise(() => {}); // never settles, never looks at its signal
          }
        },
        {
          concurrency: 1,
          maxAttempts: 2,
          handlerTimeoutMs: 150,
          backoff: { initialDelayMs: 50, factor: 1, maxDelayMs: 50 },
        },
      );
      await b.publish(type, { n: 1 });
      await b.publish(type, { n: 2 });
      await waitFor(() => runs.some((r) => r.n === 2), 'message 2 in the slot the hung handler held');
      await waitFor(async () => (await b.listDeadLetters()).length === 1, 'the hung message dead-lettered');
      const [dead] = await b.listDeadLetters();
      expect(dead).toMatchObject({ routingKey: type, attempts: 2, reason: { kind: 'timeout' } });
      expect(runs.filter((r) => r.n === 1).map((r) => r.attempt)).toEqual([1, 2]);
      expect(hungSignal?.aborted).toBe(true);
    });

    it('dead-letters a message that arrives after its expiresat, or drops it if the subscription says so', async () => {
      // Must not happen: a message handled after the time its publisher said it was worthless.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.offer`;
      const handled: string[] = [];
      const dropped: string[] = [];
      const keep = await b.subscribe(type, async (m) => void handled.push(m.id), { group: `dl-${p}` });
      const drop = await b.subscribe(type, async (m) => void dropped.push(m.id), {
        group: `drop-${p}`,
        onExpired: 'drop',
      });
      await keep.close();
      await drop.close();
      await b.publish(type, { n: 1 }, { id: 'short', ttlMs: 100 });
      await b.publish(type, { n: 2 }, { id: 'long', expiresAt: new Date(Date.now() + 60_000) });
      await sleep(300);
      await b.subscribe(type, async (m) => void handled.push(m.id), { group: `dl-${p}` });
      await b.subscribe(type, async (m) => void dropped.push(m.id), {
        group: `drop-${p}`,
        onExpired: 'drop',
      });
      await waitFor(() => handled.length === 1 && dropped.length === 1, 'the live message in both groups');
      await waitFor(
        async () => (await b.listDeadLetters({ group: `dl-${p}` })).length === 1,
        'the expired one',
      );
      await sleep(100);
      expect(handled).toEqual(['long']);
      expect(dropped).toEqual(['long']);
      const [dead] = await b.listDeadLetters({ group: `dl-${p}` });
      expect(dead).toMatchObject({ reason: { kind: 'expired' }, envelope: { id: 'short' } });
      expect(await b.listDeadLetters({ group: `drop-${p}` })).toEqual([]);
    });

    it('close waits for handlers in flight, and nothing is delivered after it', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.slow`;
      const finished: number[] = [];
      let started = 0;
      const sub = await b.subscribe(
        type,
        async (m) => {
          started++;
          await sleep(300);
          finished.push((m.data as { n: number }).n);
        },
        { concurrency: 1 },
      );
      await b.publish(type, { n: 1 });
      await waitFor(() => started === 1, 'the handler to start');
      await sub.close();
      expect(finished).toEqual([1]);
      await b.publish(type, { n: 2 });
      await sleep(300);
      expect(started).toBe(1);
      // The queue outlives the subscriber: a new subscriber of the group gets what was published meanwhile.
      const later: number[] = [];
      await b.subscribe(type, async (m) => void later.push((m.data as { n: number }).n));
      await waitFor(() => later.length === 1, 'the message published while nobody listened');
      expect(later).toEqual([2]);
      await b.close();
      expect(isBusClosedError(await b.publish(type, { n: 3 }).catch((e: unknown) => e))).toBe(true);
    });

    it('lets a handler in flight at close publish: close waits for it, the message it publishes is delivered, and the original is neither retried nor dead-lettered', async () => {
      // Must not happen: an orderly shutdown failing the handlers it waits for with BUS_CLOSED, so
      // that the message is retried or dead-lettered and its side effects run again.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const other = await bus(`other-${p}`);
      const type = `${p}.order`;
      const followUp = `${p}.paid`;
      const group = `pay-${p}`;
      const fast = { initialDelayMs: 50, factor: 1, maxDelayMs: 50 };
      const paid: string[] = [];
      await other.subscribe(followUp, async (m) => void paid.push(m.causationid ?? ''), { group: `w-${p}` });
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let runs = 0;
      let published: unknown = 'not reached';
      await b.subscribe(
        type,
        async () => {
          runs++;
          await gate;
          published = await b.publish(followUp, {}).then(
            () => 'ok',
            (e: unknown) => e,
          );
        },
        { group, maxAttempts: 2, backoff: fast, handlerTimeoutMs: 0 },
      );
      await other.publish(type, {}, { id: `${p}-order` });
      await waitFor(() => runs === 1, 'the handler to start');
      const closing = b.close();
      release();
      await closing;
      expect(published).toBe('ok');
      await waitFor(() => paid.length === 1, 'the message the handler published during close');
      expect(paid).toEqual([`${p}-order`]);
      // Past the retry delay: a failed attempt would come back to the next subscriber of the group.
      const later: number[] = [];
      await other.subscribe(type, async (m) => void later.push(m.attempt), {
        group,
        maxAttempts: 2,
        backoff: fast,
      });
      await sleep(400);
      expect(later).toEqual([]);
      expect(await other.listDeadLetters({ group })).toEqual([]);
      // Once close is done, publish is refused.
      expect(isBusClosedError(await b.publish(followUp, {}).catch((e: unknown) => e))).toBe(true);
    });

    it('gives up on a handler still running at close after closeTimeoutMs: its message goes to the next subscriber', async () => {
      // Must not be lost: the message whose handler never finished (RabbitMQ requeues what a closed
      // channel held; the embedded broker must too).
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.stuck`;
      let firstRuns = 0;
      const sub = await b.subscribe(
        type,
        async () => {
          firstRuns++;
          await new Promise(() => {}); // never settles
        },
        { concurrency: 1, handlerTimeoutMs: 0 },
      );
      await b.publish(type, { n: 1 }, { id: `${p}-stuck` });
      await waitFor(() => firstRuns === 1, 'the handler to start');
      const started = Date.now();
      await sub.close();
      // The contract's buses close after 2 s.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
      const later: { id: string; n: number }[] = [];
      await b.subscribe(type, async (m) => void later.push({ id: m.id, n: (m.data as { n: number }).n }), {
        handlerTimeoutMs: 0,
      });
      await waitFor(() => later.length === 1, 'the message the stuck handler held, delivered again');
      expect(later).toEqual([{ id: `${p}-stuck`, n: 1 }]);
      await sleep(200);
      expect(later).toHaveLength(1);
    });

    it('settles a message once when its handler limit passes as its close gives up: retried or handed back, never both', async () => {
      // Must not happen: the retry's copy made and the original handed back besides (RabbitMQ gave the
      // message back while its copy's confirm was awaited: handled as attempt 1 and as attempt 2).
      for (const extraMs of [1, 3, 5]) {
        const p = unique();
        const first = await bus(`svc-${p}`, { closeTimeoutMs: 300 + extraMs });
        const next = await bus(`svc-${p}`);
        const type = `${p}.late`;
        const options = {
          group: `g-${p}`,
          handlerTimeoutMs: 300,
          maxAttempts: 2,
          backoff: { initialDelayMs: 50, maxDelayMs: 50 },
        };
        let started!: () => void;
        const running = new Promise<void>((resolve) => {
          started = resolve;
        });
        await first.subscribe(
          type,
          async () => {
            started();
            await sleep(1000); // ignores its signal
          },
          options,
        );
        await next.publish(type, {});
        await running;
        await first.close();
        const attempts: number[] = [];
        await next.subscribe(type, async (m) => void attempts.push(m.attempt), options);
        await waitFor(() => attempts.length > 0, 'the message, retried or handed back');
        await sleep(300);
        expect(attempts, `closeTimeoutMs ${300 + extraMs}`).toHaveLength(1);
        expect(await next.listDeadLetters({ group: options.group })).toEqual([]);
      }
    });

    for (const handlerTimeoutMs of [0, 10_000]) {
      it(`aborts the signal of a handler close gives up on (handlerTimeoutMs ${handlerTimeoutMs}), asked for before or after, and not of one that ended`, async () => {
        const p = unique();
        const b = await bus(`svc-${p}`, { closeTimeoutMs: 100 });
        const type = `${p}.work`;
        const seen: string[] = [];
        let endedSignal: AbortSignal | undefined;
        const sub = await b.subscribe(
          type,
          async (m, { signal }) => {
            const { n } = m.data as { n: number };
            if (n === 1) {
              endedSignal = signal;
              return;
            }
            if (n === 2) {
              // Heeds its signal: stops when it aborts.
              await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
              seen.push(`2 ${(signal.reason as { code?: string }).code}`);
              return;
            }
            // Asks for its signal only after the close gave up.
            await sleep(400);
            const late = signal;
            seen.push(`3 ${late.aborted ? (late.reason as { code?: string }).code : 'not aborted'}`);
          },
          { concurrency: 3, handlerTimeoutMs },
        );
        await b.publish(type, { n: 1 });
        await waitFor(() => endedSignal !== undefined, 'the first handler to end');
        await sleep(20);
        await b.publish(type, { n: 2 });
        await b.publish(type, { n: 3 });
        await sleep(50);
        expect(seen).toEqual([]);
        await sub.close();
        await waitFor(() => seen.length === 2, 'both handlers given up on to see their signal aborted', 3000);
        expect(seen.sort()).toEqual(['2 BUS_CLOSED', '3 BUS_CLOSED']);
        expect(endedSignal!.aborted).toBe(false);
      });
    }

    it('dead-letters a message whose handler never ends once maxRedeliveries (5) subscribers in a row gave it back at close, with reason redelivered', async () => {
      // Must not happen: a message that hangs every handler handed to each new subscriber for ever
      // (RabbitMQ counts what a closed channel gave back; the embedded broker must too).
      const { p, b, type, group, counted, hang, options } = await abandoning('poison');
      // The first delivery and 5 counted redeliveries each run the handler, which close gives up on.
      for (let k = 0; k < 6; k++) {
        const sub = await b.subscribe(type, hang, options);
        if (k === 0) await b.publish(type, { n: 1 }, { id: `${p}-poison` });
        await waitFor(() => counted.runs === k + 1, `run ${k + 1} of the handler`);
        await sub.close();
      }
      // The next subscriber to take it moves it to the dead letters without running it.
      await b.subscribe(type, hang, options);
      await waitFor(async () => (await b.listDeadLetters({ group })).length === 1, 'the dead letter');
      await sleep(200);
      expect(counted.runs).toBe(6);
      const dead = await b.listDeadLetters({ group });
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({
        reason: { kind: 'redelivered' },
        attempts: 1,
        envelope: { id: `${p}-poison`, data: { n: 1 } },
      });
    });

    it("counts a plain producer's message given back at close from its first delivery, whatever redeliveries header it carries", async () => {
      // Must not happen: a producer's copy of x-ferry-redeliveries (50) dead-lettering the message as
      // redelivered the first time a subscriber gave it back.
      const { p, b, type, group, counted, hang, options } = await abandoning('raw');
      const first = await b.subscribe(type, hang, options);
      await harness.publishRaw({
        routingKey: type,
        body: Buffer.from('{}'),
        messageId: `${p}-raw`,
        headers: { 'x-ferry-redeliveries': 50 },
      });
      await waitFor(() => counted.runs === 1, 'the first run');
      await first.close();
      await b.subscribe(type, hang, options);
      await waitFor(() => counted.runs === 2, 'the message run again by the next subscriber');
      expect(await b.listDeadLetters({ group })).toEqual([]);
    });

    it('ignores what a handler close gave up on decides later: no retry, no dead letter, and the next subscriber gets the message once', async () => {
      // Must not happen: the late throw of an abandoned handler dead-lettering the message, or
      // scheduling a retry, while the message itself went back to its queue (a copy too many).
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.late`;
      const fast = { initialDelayMs: 50, factor: 1, maxDelayMs: 50 };
      // One group would dead-letter at the first failure, the other would retry.
      const groups = { [`dl-${p}`]: 1, [`retry-${p}`]: 2 };
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let started = 0;
      const subs = [];
      for (const [group, maxAttempts] of Object.entries(groups)) {
        subs.push(
          await b.subscribe(
            type,
            async () => {
              started++;
              await gate;
              throw new Error('decided after close gave up');
            },
            { group, maxAttempts, backoff: fast, handlerTimeoutMs: 0, concurrency: 1 },
          ),
        );
      }
      await b.publish(type, { n: 1 }, { id: `${p}-late` });
      await waitFor(() => started === 2, 'both handlers to start');
      await Promise.all(subs.map((sub) => sub.close()));
      release();
      await sleep(300);
      const later: Record<string, { id: string; attempt: number }[]> = {};
      for (const [group, maxAttempts] of Object.entries(groups)) {
        const got: { id: string; attempt: number }[] = [];
        later[group] = got;
        await b.subscribe(type, async (m) => void got.push({ id: m.id, attempt: m.attempt }), {
          group,
          maxAttempts,
          backoff: fast,
          handlerTimeoutMs: 0,
        });
      }
      await waitFor(
        () => Object.values(later).every((got) => got.length >= 1),
        'the message in both groups again',
      );
      // Past the retry delay: a retry scheduled by the late throw would show up now as attempt 2.
      await sleep(500);
      const once = [{ id: `${p}-late`, attempt: 1 }];
      expect(later).toEqual({ [`dl-${p}`]: once, [`retry-${p}`]: once });
      for (const group of Object.keys(groups)) expect(await b.listDeadLetters({ group }), group).toEqual([]);
    });

    it('refuses retry delays past 2^31-1 ms alike everywhere, at subscribe and in subscriptionDefaults, and takes 2^31-1 ms itself', async () => {
      // Must not happen: a delay of 2^31 ms retried at once by one transport (a timer that overflows)
      // and waited out by another, or one transport subscribing where another fails with a broker error.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const constant = (ms: number) => ({ initialDelayMs: ms, factor: 1, maxDelayMs: ms });
      for (const ms of [2 ** 31, 1e15, Number.POSITIVE_INFINITY]) {
        const refused = await b
          .subscribe(`${p}.job`, async () => {}, { maxAttempts: 2, backoff: constant(ms) })
          .then(
            () => 'subscribed',
            (e: unknown) => e,
          );
        expect(isInvalidOptionsError(refused), `a delay of ${ms} ms`).toBe(true);
        expect((refused as Error).message).toContain('2147483647');
        const defaults = await createBus({
          transport: harness.createTransport(),
          service: `svc-${p}`,
          logger: silentLogger,
          subscriptionDefaults: { maxAttempts: 2, backoff: constant(ms) },
        }).then(
          async (made) => {
            await made.close();
            return 'made';
          },
          (e: unknown) => e,
        );
        expect(isInvalidOptionsError(defaults), `a default delay of ${ms} ms`).toBe(true);
      }
      // Growing delays are checked as they come out: the fourth retry would wait 2^31 ms.
      const growing = { initialDelayMs: 2 ** 28, factor: 2, maxDelayMs: Number.POSITIVE_INFINITY };
      const refused = await b
        .subscribe(`${p}.job`, async () => {}, { maxAttempts: 5, backoff: growing })
        .then(
          () => 'subscribed',
          (e: unknown) => e,
        );
      expect(isInvalidOptionsError(refused)).toBe(true);
      const sub = await b.subscribe(`${p}.job`, async () => {}, { maxAttempts: 4, backoff: growing });
      await sub.close();
      const longest = await b.subscribe(`${p}.job`, async () => {}, {
        group: `longest-${p}`,
        maxAttempts: 2,
        backoff: constant(2 ** 31 - 1),
      });
      await longest.close();
    });

    it('connects once however often connect is called, and refuses to connect once closed, with BUS_CLOSED', async () => {
      const transport = harness.createTransport();
      // Called at once, the later calls resolve when the first has connected, not before.
      await Promise.all([transport.connect(), transport.connect(), transport.connect()]);
      await transport.connect();
      await transport.close(1000);
      expect(isBusClosedError(await transport.connect().catch((e: unknown) => e))).toBe(true);
    });

    it('refuses dead-letter listings and replays once closed, with BUS_CLOSED', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      await b.close();
      expect(isBusClosedError(await b.listDeadLetters().catch((e: unknown) => e))).toBe(true);
      expect(isBusClosedError(await b.replayDeadLetters().catch((e: unknown) => e))).toBe(true);
      expect(isBusClosedError(await b.deleteSubscription(`${p}.x`).catch((e: unknown) => e))).toBe(true);
    });

    it('refuses reserved header names alike everywhere, through the bus and straight to the transport: CC, BCC, x-ferry-*, the broker x- names and cloudEvents:* in any case', async () => {
      // Must not happen: a CC header routing copies to other queues (or closing the channel) on
      // RabbitMQ while the embedded broker carries it, or an X-Ferry-Attempt taken by one transport.
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.hdr`;
      const got: Message[] = [];
      await b.subscribe(type, async (m) => void got.push(m));
      const reserved = [
        'CC',
        'BCC',
        'x-ferry-attempt',
        'X-Ferry-Attempt',
        'X-Death',
        'x-delivery-count',
        'X-Delay',
        'cloudEvents:time',
        'CLOUDEVENTS:TIME',
      ];
      const transport = harness.createTransport();
      await transport.connect();
      try {
        for (const name of reserved) {
          const viaBus = await b.publish(type, {}, { headers: { [name]: 'q' } }).then(
            () => 'published',
            (e: unknown) => e,
          );
          expect(isInvalidOptionsError(viaBus), name).toBe(true);
          const envelope: Envelope = {
            specversion: '1.0',
            id: `${p}-${name}`,
            source: 'raw',
            type,
            time: new Date().toISOString(),
            datacontenttype: 'application/json',
            data: {},
            correlationid: `${p}-${name}`,
            headers: { [name]: 'q' },
          };
          const direct = await transport.publish(envelope).then(
            () => 'published',
            (e: unknown) => e,
          );
          expect(isInvalidOptionsError(direct), `${name} straight to the transport`).toBe(true);
          expect((direct as Error).message).toContain(name);
        }
      } finally {
        await transport.close(1000);
      }
      // RabbitMQ reads CC and BCC exactly so: other spellings are the application's own headers.
      // Other x- names are the application's too.
      const ordinary = { cc: 'me', Bcc: 'you', 'xx-y': 'z', 'x-tenant': 'acme', 'X-Request-Id': 'r-1' };
      await b.publish(type, {}, { id: `${p}-ok`, headers: ordinary });
      await waitFor(() => got.length === 1, 'the message with ordinary headers');
      await sleep(200);
      expect(got.map((m) => [m.id, m.headers])).toEqual([[`${p}-ok`, ordinary]]);
    });

    it('carries headers whose names only start like a reserved one (x-deathly, x-delivery-count2), first and retried deliveries alike', async () => {
      // Must not happen: a header publish accepted, reaching handlers on one transport and silently
      // dropped on another (RabbitMQ's decoder stripped every name starting with x-death).
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.hdr`;
      const headers = {
        'x-deathly': 'a',
        'x-death-note': 'b',
        'X-Death-Note': 'c',
        'x-delivery-count2': 'd',
        'x-delivery-countdown': 'e',
        'x-delays': 'f',
        'x-received-from-app': 'g',
        'x-tenant': 'acme',
      };
      const got: Message[] = [];
      await b.subscribe(
        type,
        async (m) => {
          got.push(m);
          if (m.attempt === 1) throw new Error('once more, through the retry path');
        },
        { maxAttempts: 2, backoff: { initialDelayMs: 50, factor: 1, maxDelayMs: 50 } },
      );
      await b.publish(type, {}, { id: `${p}-h`, headers });
      await waitFor(() => got.length === 2, 'the first and the retried delivery');
      expect(got.map((m) => [m.attempt, m.headers])).toEqual([
        [1, headers],
        [2, headers],
      ]);
    });

    it('refuses what RabbitMQ cannot carry as given, alike everywhere: ids that are not strings, lone surrogates', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const type = `${p}.odd`;
      const got: unknown[] = [];
      await b.subscribe(type, async (m) => void got.push(m.id));
      const refused = async (publish: () => Promise<void>): Promise<unknown> =>
        publish().then(
          () => 'published',
          (e: unknown) => (e as { code?: string }).code,
        );
      for (const id of [123, { id: 'x' }, ['a'], null] as unknown as string[]) {
        expect(await refused(() => b.publish(type, {}, { id }))).toBe('INVALID_OPTIONS');
        expect(await refused(() => b.publish(type, {}, { correlationId: id }))).toBe('INVALID_OPTIONS');
        expect(await refused(() => b.publish(type, {}, { causationId: id }))).toBe('INVALID_OPTIONS');
      }
      const lone = '\ud800';
      expect(await refused(() => b.publish(`${p}.odd${lone}`, {}))).toBe('INVALID_TOPIC');
      // The message shows which character it is.
      await expect(b.publish(`${p}.odd${lone}`, {})).rejects.toThrow(`${p}.odd\\ud800`);
      expect(await refused(() => b.publish(type, {}, { headers: { [`x${lone}`]: 'v' } }))).toBe(
        'INVALID_OPTIONS',
      );
      expect(await refused(() => b.publish(type, {}, { headers: { h: `v${lone}` } }))).toBe(
        'INVALID_OPTIONS',
      );
      await expect(b.subscribe(`${p}.${lone}`, async () => {})).rejects.toMatchObject({
        code: 'INVALID_TOPIC',
      });
      // Well-formed text of any script goes through as it is.
      await b.publish(type, {}, { id: `${p}-😀`, headers: { h: 'é😀' } });
      await waitFor(() => got.length === 1, 'the well-formed message');
      expect(got).toEqual([`${p}-😀`]);
    });

    it('refuses an envelope handed to the transport directly that it would carry other than as given, alike everywhere', async () => {
      const p = unique();
      const b = await bus(`svc-${p}`);
      const got: Message[] = [];
      await b.subscribe(`${p}.#`, async (m) => void got.push(m));
      const transport = harness.createTransport();
      await transport.connect();
      try {
        const good: Envelope = {
          specversion: '1.0',
          id: `${p}-good`,
          source: 'producer',
          type: `${p}.direct`,
          time: '2026-12-04T10:00:00.000Z',
          datacontenttype: 'application/json',
          data: { n: 1 },
          correlationid: `${p}-good`,
        };
        const refusal = async (changes: Record<string, unknown>): Promise<unknown> =>
          transport.publish({ ...good, ...changes, id: `${p}-${randomUUID()}` } as Envelope).then(
            () => 'published',
            (e: unknown) => (e as { code?: string }).code,
          );
        expect(await refusal({ specversion: '2.0' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ time: 'yesterday' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ time: 1_700_000_000_000 })).toBe('INVALID_OPTIONS');
        expect(await refusal({ expiresat: 'never' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ datacontenttype: 'text/plain' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ source: '' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ source: 'svc\ud800' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ type: `${p}.bad\ud800` })).toBe('INVALID_TOPIC');
        expect(await refusal({ type: `${p}.*` })).toBe('INVALID_TOPIC');
        expect(await refusal({ headers: { n: 5 } })).toBe('INVALID_OPTIONS');
        expect(await refusal({ headers: null })).toBe('INVALID_OPTIONS');
        // Not a plain object: its entries would be lost (Object.keys of a Map is empty).
        expect(await refusal({ headers: new Map([['h', 'v']]) })).toBe('INVALID_OPTIONS');
        expect(await refusal({ headers: new (class Headers {})() })).toBe('INVALID_OPTIONS');
        // RabbitMQ carries the time as ms from 1970: another form would arrive rewritten.
        expect(await refusal({ time: '2026-12-04T10:00:00+05:30' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ time: '2026-12-04T10:00:00.123456Z' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ time: '2026-12-04t10:00:00.000z' })).toBe('INVALID_OPTIONS');
        expect(await refusal({ time: '1969-12-31T23:59:59.000Z' })).toBe('INVALID_OPTIONS');
        expect(() => transport.check?.({ ...good, time: '1969-12-31T23:59:59.000Z' })).toThrow(/1970/);
        // Headers that are not a plain object, through the bus, are refused too (a Map was lost).
        for (const headers of [new Map([['a', 'b']]), 'acme', null, ['a']]) {
          await expect(
            b.publish(`${p}.direct`, {}, { headers: headers as unknown as Record<string, string> }),
          ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
        }
        await expect(transport.publish({ ...good, time: 'yesterday' })).rejects.toThrow(
          /time must be an RFC 3339 time/,
        );
        // None of them reached the subscriber; a well-formed envelope arrives as it was given.
        await transport.publish({
          ...good,
          datacontenttype: 'application/cloudevents+json',
          headers: { h: 'v' },
          expiresat: '2999-01-01T00:00:00Z',
        });
        // Empty headers arrive as none, as RabbitMQ carries them.
        await b.publish(`${p}.direct`, { n: 2 }, { id: `${p}-empty`, headers: {} });
        await waitFor(() => got.length === 2, 'the well-formed envelope and the message with empty headers');
        await sleep(100);
        expect(got).toHaveLength(2);
        const empty = got.find((m) => m.id === `${p}-empty`);
        expect(empty && 'headers' in empty).toBe(false);
        got.splice(got.indexOf(empty as Message), 1);
        expect(got[0]).toMatchObject({
          id: `${p}-good`,
          source: 'producer',
          type: `${p}.direct`,
          time: '2026-12-04T10:00:00.000Z',
          datacontenttype: 'application/cloudevents+json',
          data: { n: 1 },
          headers: { h: 'v' },
          expiresat: '2999-01-01T00:00:00Z',
        });
      } finally {
        await transport.close(2000);
      }
    });

    it('settles a tracked publish only once every queue it reached has handled its copy (transports with publishTracked)', async () => {
      const transport = harness.createTransport();
      // A transport without publishTracked keeps what it confirmed durably: its confirm is enough,
      // and there is no settlement to check.
      if (typeof transport.publishTracked !== 'function') return;
      await transport.connect();
      try {
        const p = unique();
        let release!: () => void;
        const gate = new Promise<Outcome>((resolve) => {
          release = () => resolve({ action: 'ack' });
        });
        const handled: string[] = [];
        const spec = (group: string) => ({ group, pattern: `${p}.#`, concurrency: 1, retryDelays: [] });
        await transport.subscribe(spec(`fast-${p}`), async () => {
          handled.push('fast');
          return { action: 'ack' };
        });
        await transport.subscribe(spec(`slow-${p}`), async () => {
          handled.push('slow');
          return gate;
        });
        const envelope: Envelope = {
          specversion: '1.0',
          id: `${p}-tracked`,
          source: 'producer',
          type: `${p}.tracked`,
          time: new Date().toISOString(),
          datacontenttype: 'application/json',
          data: { n: 1 },
          correlationid: `${p}-correlation`,
        };
        const { confirmed, settled } = transport.publishTracked(envelope);
        let settledYet = false;
        void settled.then(() => {
          settledYet = true;
        });
        await confirmed;
        await waitFor(() => handled.length === 2, 'both copies being handled');
        await sleep(100);
        // One copy handled, the other's handler still running: not settled.
        expect(settledYet).toBe(false);
        release();
        await waitFor(() => settledYet, 'the settlement once the second copy was handled', 5_000);
      } finally {
        await transport.close(2000);
      }
    });
  });
}
