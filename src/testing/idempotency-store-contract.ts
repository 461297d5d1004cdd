import { randomBytes, randomUUID } from 'node:crypto';
import { isInvalidOptionsError } from '../errors/ferry-error.js';
import { isEventStoreClosedError } from '../eventstore/errors.js';
import {
  DEFAULT_MAX_STORED_BODY_BYTES,
  type IdempotencyBeginResult,
  type IdempotencyStore,
  type StoredResponse,
  storedBody,
} from '../http/server/idempotency.js';
import { vitest } from './vitest-api.js';
import { sleep } from './wait.js';

/** Options the contract gives a store; `undefined` values stand for the store's defaults. */
export interface IdempotencyStoreContractOptions {
  readonly leaseMs?: number | undefined;
  readonly ttlMs?: number | undefined;
}

/** What the idempotency store contract suite needs. */
export interface IdempotencyStoreHarness {
  /** A store with these options (passed on as given: the suite also gives invalid ones). */
  create(options?: IdempotencyStoreContractOptions): Promise<IdempotencyStoreUnderTest>;
}

export interface IdempotencyStoreUnderTest {
  readonly store: IdempotencyStore;
  /** Another store on the same storage (another instance of the service): durable stores only. */
  sibling?(options?: IdempotencyStoreContractOptions): Promise<IdempotencyStore>;
  /** Closes this store's connection and opens a new one on the same storage (a restart): durable stores only. */
  restart?(): Promise<IdempotencyStore>;
  /** Closes the storage this store lives on (its event store backend): durable stores only. */
  close?(): Promise<void>;
}

const json: StoredResponse = {
  status: 201,
  headers: { 'content-type': 'application/json', location: '/orders/1' },
  body: '{"id":1}',
};
const other: StoredResponse = { status: 200, headers: {}, body: 'the other answer' };

/** A key no other test (or earlier run on the same storage) uses. */
const freshKey = (label: string) => `${label}-${randomUUID()}`;

function claimOf(result: IdempotencyBeginResult): string | undefined {
  if (result.state !== 'new') throw new Error(`expected the key to be claimed, got ${result.state}`);
  return result.claim;
}

/**
 * The contract of an `IdempotencyStore`, as the HTTP idempotency middleware relies on it: every store
 * (memory, SQLite, PostgreSQL) must pass it. `durable` stores, shared by instances and kept across
 * restarts, also pass the tests of sharing, and their harness provides `sibling` and `restart`.
 * Lease and retention tests use short real leases (100 ms) and wait past them.
 */
export function testIdempotencyStore(
  name: string,
  harness: IdempotencyStoreHarness,
  features: { readonly durable: boolean },
): void {
  const { describe, expect, it } = vitest('testIdempotencyStore');
  describe(`idempotency store contract: ${name}`, () => {
    it('claims a fresh key, then answers in-progress for the same request and mismatch for another', async () => {
      const { store } = await harness.create();
      const key = freshKey('fresh');
      const begun = await store.begin(key, 'POST /orders sha256:a');
      expect(begun.state).toBe('new');
      const claim = claimOf(begun);
      if (claim !== undefined) expect(typeof claim).toBe('string');
      expect(await store.begin(key, 'POST /orders sha256:a')).toEqual({ state: 'in-progress' });
      expect(await store.begin(key, 'POST /orders sha256:b')).toEqual({ state: 'mismatch' });
      expect((await store.begin(freshKey('unrelated'), 'POST /orders sha256:a')).state).toBe('new');
    });

    it('refuses a key no store keeps apart (not a string, NUL, a lone surrogate) with INVALID_OPTIONS', async () => {
      // PostgreSQL took 'k-\uD800' as 'k-\uFFFD' and replayed that key's answer; NUL failed raw.
      const { store } = await harness.create();
      const key = freshKey('twin');
      const begun = await store.begin(`${key}\uFFFD`, 'POST /orders sha256:a');
      expect(begun.state).toBe('new');
      for (const odd of [`${key}\uD800`, `${key}\u0000`, 5]) {
        await expect(store.begin(odd as string, 'POST /orders sha256:a')).rejects.toMatchObject({
          code: 'INVALID_OPTIONS',
        });
      }
    });

    it('replays the completed response to the same request, and refuses it to another', async () => {
      const { store } = await harness.create();
      const key = freshKey('replay');
      const claim = claimOf(await store.begin(key, 'f'));
      await store.complete(key, json, claim);
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });
      expect(await store.begin(key, 'g')).toEqual({ state: 'mismatch' });
      // A completed key is not released, by its claim or without one.
      await store.abandon(key, claim);
      await store.abandon(key);
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });
      // Nor completed a second time.
      await store.complete(key, other, claim);
      await store.complete(key, other);
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });
    });

    it('replays status, headers and the body bytes exactly: binary, empty, text with NUL and non-ASCII', async () => {
      const { store } = await harness.create();
      const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const cases: StoredResponse[] = [
        {
          status: 200,
          headers: { 'content-type': 'application/octet-stream' },
          body: everyByte.toString('base64'),
          encoding: 'base64',
        },
        { status: 204, headers: {}, body: '' },
        {
          status: 200,
          headers: { 'content-type': 'application/octet-stream' },
          body: '',
          encoding: 'base64',
        },
        {
          status: 200,
          headers: { 'content-type': 'text/plain; charset=utf-8' },
          body: 'a\u0000b é ✓ 🚢 "quoted" \\ \n',
          encoding: 'utf8',
        },
        {
          status: 302,
          headers: {
            location: '/x?y=1&z=%20',
            link: '</a>; rel="next", </b>; rel="last"',
            etag: 'W/"1"',
            'content-encoding': 'gzip',
          },
          body: randomBytes(1000).toString('base64'),
          encoding: 'base64',
        },
        {
          status: 404,
          headers: { 'content-type': 'application/problem+json' },
          body: '{"title":"Not Found"}',
        },
      ];
      for (const [i, response] of cases.entries()) {
        const key = freshKey(`bytes-${i}`);
        await store.complete(key, response, claimOf(await store.begin(key, 'f')));
        const replayed = await store.begin(key, 'f');
        expect(replayed, `case ${i}`).toEqual({ state: 'replay', response });
        if (replayed.state !== 'replay') continue;
        expect(replayed.response.encoding, `case ${i}: encoding`).toBe(response.encoding);
        expect(storedBody(replayed.response).equals(storedBody(response)), `case ${i}: bytes`).toBe(true);
      }
    });

    it(`stores bodies up to the middleware's limit (${DEFAULT_MAX_STORED_BODY_BYTES} bytes)`, async () => {
      const { store } = await harness.create();
      const binary: StoredResponse = {
        status: 200,
        headers: { 'content-type': 'application/octet-stream' },
        body: randomBytes(DEFAULT_MAX_STORED_BODY_BYTES).toString('base64'),
        encoding: 'base64',
      };
      const text: StoredResponse = {
        status: 200,
        headers: { 'content-type': 'text/plain' },
        body: 'ü'.repeat(DEFAULT_MAX_STORED_BODY_BYTES / 2),
      };
      for (const response of [binary, text]) {
        const key = freshKey('large');
        await store.complete(key, response, claimOf(await store.begin(key, 'f')));
        const replayed = await store.begin(key, 'f');
        expect(replayed.state).toBe('replay');
        if (replayed.state !== 'replay') continue;
        expect(replayed.response.body === response.body, 'the same body').toBe(true);
        expect(storedBody(replayed.response).length).toBe(DEFAULT_MAX_STORED_BODY_BYTES);
      }
    });

    it('refuses a response it could not replay as it was, keeping the key held for a good one', async () => {
      const { store } = await harness.create();
      const key = freshKey('bad-answer');
      const claim = claimOf(await store.begin(key, 'f'));
      const ok = { status: 201, headers: { 'content-type': 'application/json' }, body: '{}' };
      for (const bad of [
        { ...ok, status: Number.NaN },
        { ...ok, status: 200.5 },
        { ...ok, status: 1000 },
        { ...ok, status: '200' },
        { ...ok, headers: null },
        { ...ok, headers: { 'x-n': 1 } },
        { ...ok, body: 42 },
        { ...ok, encoding: 'hex' },
        { ...ok, body: 'not base64!', encoding: 'base64' },
        null,
      ]) {
        await expect(
          store.complete(key, bad as unknown as StoredResponse, claim),
          JSON.stringify(bad),
        ).rejects.toMatchObject({
          code: 'INVALID_OPTIONS',
        });
      }
      expect(await store.begin(key, 'f')).toEqual({ state: 'in-progress' });
      await store.complete(key, ok, claim);
      expect(await store.begin(key, 'f')).toMatchObject({ state: 'replay', response: { status: 201 } });
    });

    it('frees an abandoned key for the next request, whatever its fingerprint', async () => {
      const { store } = await harness.create();
      const key = freshKey('abandon');
      await store.abandon(key); // unknown key: nothing to do
      await store.abandon(key, claimOf(await store.begin(key, 'f')));
      const again = await store.begin(key, 'another fingerprint');
      expect(again.state).toBe('new');
      await store.abandon(key);
      expect((await store.begin(key, 'f')).state).toBe('new');
    });

    it("acts only on its own claim: a released claim cannot complete or release the next holder's", async () => {
      const { store } = await harness.create();
      const key = freshKey('own');
      const first = claimOf(await store.begin(key, 'f'));
      await store.abandon(key, first);
      const second = claimOf(await store.begin(key, 'f'));
      if (first === undefined || second === undefined) return; // a store without claims
      expect(second).not.toBe(first);
      await store.complete(key, other, first);
      await store.abandon(key, first);
      expect(await store.begin(key, 'f')).toEqual({ state: 'in-progress' });
      await store.complete(key, json, second);
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });
    });

    it("lets the next request take over a lapsed lease; the lapsed claim then ends nothing of the new holder's", async () => {
      const { store } = await harness.create({ leaseMs: 100 });
      const completed = freshKey('lapsed-complete');
      const released = freshKey('lapsed-abandon');
      const staleCompleter = claimOf(await store.begin(completed, 'f'));
      const staleReleaser = claimOf(await store.begin(released, 'f'));
      await sleep(250);
      // Taken over whatever the fingerprint: the first request never answered.
      const current = claimOf(await store.begin(completed, 'f'));
      const currentToo = claimOf(await store.begin(released, 'another fingerprint'));
      if (staleCompleter !== undefined) expect(current).not.toBe(staleCompleter);
      await store.complete(completed, other, staleCompleter);
      await store.abandon(released, staleReleaser);
      // The current holders still end their keys (even past their own lease, since nobody took over):
      // had the stale calls acted, these would find the key answered or gone.
      await store.complete(completed, json, current);
      await store.complete(released, json, currentToo);
      expect(await store.begin(completed, 'f')).toEqual({ state: 'replay', response: json });
      expect(await store.begin(released, 'another fingerprint')).toEqual({ state: 'replay', response: json });
    });

    it('stores the answer of a lapsed claim that nobody took over', async () => {
      const { store } = await harness.create({ leaseMs: 100 });
      const key = freshKey('late');
      const claim = claimOf(await store.begin(key, 'f'));
      await sleep(250);
      await store.complete(key, json, claim);
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });
    });

    it('forgets a completed key after ttlMs, and keeps it until then', async () => {
      const short = await harness.create({ ttlMs: 100 });
      const key = freshKey('ttl');
      await short.store.complete(key, json, claimOf(await short.store.begin(key, 'f')));
      await sleep(250);
      expect((await short.store.begin(key, 'another fingerprint')).state).toBe('new');

      const { store } = await harness.create({ ttlMs: 60_000 });
      const kept = freshKey('kept');
      await store.complete(kept, json, claimOf(await store.begin(kept, 'f')));
      await sleep(250);
      expect(await store.begin(kept, 'f')).toEqual({ state: 'replay', response: json });
    });

    it('lets exactly one of 20 concurrent requests with one key run', async () => {
      const underTest = await harness.create();
      const stores = [underTest.store];
      if (features.durable) stores.push(await underTest.sibling!(), await underTest.sibling!());
      for (const round of [1, 2, 3]) {
        const key = freshKey(`race-${round}`);
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => stores[i % stores.length]!.begin(key, 'f')),
        );
        const states = results.map((r) => r.state);
        expect(
          states.filter((s) => s === 'new'),
          `round ${round}: ${states.join(', ')}`,
        ).toHaveLength(1);
        expect(states.filter((s) => s === 'in-progress')).toHaveLength(19);
      }
    });

    it('takes options given as undefined for their defaults, and refuses nonsensical ones', async () => {
      const { store } = await harness.create({ leaseMs: undefined, ttlMs: undefined });
      const key = freshKey('defaults');
      const claim = claimOf(await store.begin(key, 'f'));
      await sleep(150);
      // The default lease (minutes), not none at all.
      expect(await store.begin(key, 'f')).toEqual({ state: 'in-progress' });
      await store.complete(key, json, claim);
      await sleep(150);
      expect(await store.begin(key, 'f')).toEqual({ state: 'replay', response: json });

      const bad: unknown[] = [0, -1, Number.NaN, 1.5, Number.POSITIVE_INFINITY, '100'];
      for (const value of bad) {
        for (const option of ['leaseMs', 'ttlMs']) {
          await expect(
            harness.create({ [option]: value as number }),
            `${option} ${String(value)}`,
          ).rejects.toSatisfy(isInvalidOptionsError);
        }
      }
    });

    if (!features.durable) return;

    it('after its storage is closed, rejects every call with EventStoreClosedError', async () => {
      const underTest = await harness.create();
      const key = freshKey('closed');
      const claim = claimOf(await underTest.store.begin(key, 'f'));
      await underTest.close!();
      await expect(underTest.store.begin(freshKey('after-close'), 'f')).rejects.toSatisfy(
        isEventStoreClosedError,
      );
      await expect(underTest.store.complete(key, json, claim)).rejects.toSatisfy(isEventStoreClosedError);
      await expect(underTest.store.abandon(key, claim)).rejects.toSatisfy(isEventStoreClosedError);
    });

    it('is shared by every instance on the same storage: held by one, in progress for the others, then replayed', async () => {
      const underTest = await harness.create();
      const sibling = await underTest.sibling!();
      const key = freshKey('shared');
      const claim = claimOf(await underTest.store.begin(key, 'f'));
      expect(await sibling.begin(key, 'f')).toEqual({ state: 'in-progress' });
      expect(await sibling.begin(key, 'g')).toEqual({ state: 'mismatch' });
      await underTest.store.complete(key, json, claim);
      expect(await sibling.begin(key, 'f')).toEqual({ state: 'replay', response: json });

      // A sibling's abandon with the holder's claim releases the key for everyone.
      const released = freshKey('released');
      const held = claimOf(await sibling.begin(released, 'f'));
      await underTest.store.abandon(released, held);
      expect((await sibling.begin(released, 'f')).state).toBe('new');
    });

    it('keeps completed and held keys across a restart', async () => {
      const underTest = await harness.create();
      const done = freshKey('restart-done');
      const held = freshKey('restart-held');
      await underTest.store.complete(done, json, claimOf(await underTest.store.begin(done, 'f')));
      const heldClaim = claimOf(await underTest.store.begin(held, 'f'));
      const restarted = await underTest.restart!();
      expect(await restarted.begin(done, 'f')).toEqual({ state: 'replay', response: json });
      expect(await restarted.begin(held, 'f')).toEqual({ state: 'in-progress' });
      // The claim, taken before the restart, still ends its key.
      await restarted.complete(held, other, heldClaim);
      expect(await restarted.begin(held, 'f')).toEqual({ state: 'replay', response: other });
    });
  });
}
