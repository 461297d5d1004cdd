import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { FaultServer } from '../testing/fault-server.js';

const fixture = fileURLToPath(new URL('./fixtures/first-calls.ts', import.meta.url));

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

interface Outcome {
  readonly outcome: string;
  readonly ms: number;
}

async function server(): Promise<FaultServer> {
  const s = await FaultServer.start({ default: { status: 200, body: { ok: true } } });
  cleanups.push(() => s.close());
  s.route('GET', '/hang', { hang: true });
  return s;
}

/** Runs the first calls of a fresh process (a fresh module cache: undici not loaded yet). */
async function firstCalls(url: string, scenario: string): Promise<Record<string, Outcome>> {
  const child = spawnFixture(fixture, { FERRY_URL: url, FERRY_SCENARIO: scenario });
  const lines: string[] = [];
  onLines(child, (line) => void lines.push(line));
  await once(child, 'exit');
  return Object.fromEntries(
    lines.map((line) => JSON.parse(line) as Outcome & { call: string }).map((c) => [c.call, c]),
  );
}

describe('ServiceClient cold start', () => {
  // Loading undici takes 100 ms or more in a fresh process, more when the process is busy starting:
  // it must not count against the first calls' timeout or deadline, which measure the call.
  it('does not count loading undici against the first calls of a process', async () => {
    const s = await server();
    const calls = await firstCalls(s.url, 'busy-start');
    expect(calls).toMatchObject({
      timeout: { outcome: 'ok' },
      deadline: { outcome: 'ok' },
      body: { outcome: 'ok' },
    });
    // What a call sends is read as it is made, not once undici is there.
    expect(s.requests.find((request) => request.path === '/orders')?.body).toBe('{"sku":"tea"}');
  });

  it('ends a first call at once when its signal aborts while undici loads, and one closed meanwhile', async () => {
    const s = await server();
    const { abort, close } = await firstCalls(s.url, 'waits');
    expect(abort).toMatchObject({ outcome: 'GAVE_UP' });
    expect(abort!.ms).toBeLessThan(50);
    // Closed before it could start: not made, and no pool created for it.
    expect(close).toMatchObject({ outcome: 'CLIENT_CLOSED' });
    // Neither call was made: the aborted one ended before undici was there.
    expect(s.requests).toHaveLength(0);
  });
});
