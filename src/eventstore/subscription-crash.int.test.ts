import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../messaging/logger.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { createEventStore } from './create.js';
import type { EventStore } from './store.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-subcrash-'));
const schemas: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dropSchemas(schemas);
});

interface Target {
  readonly url: string;
  readonly schema?: string;
}

const backends: [string, () => Target][] = [
  ['sqlite', () => ({ url: `sqlite:${join(dir, `${testSchemaName('s')}.db`)}` })],
  [
    'postgres',
    () => {
      const schema = testSchemaName('subcrash');
      schemas.push(schema);
      return { url: postgresTestUrl(), schema };
    },
  ],
];

function open(target: Target): Promise<EventStore> {
  return createEventStore({
    url: target.url,
    ...(target.schema ? { postgres: { schema: target.schema } } : {}),
    logger: silentLogger,
  });
}

function run(target: Target, onHandled: (position: bigint) => void): ChildProcess {
  const child = spawnFixture(fileURLToPath(new URL('./fixtures/subscription-process.ts', import.meta.url)), {
    STORE_URL: target.url,
    ...(target.schema ? { STORE_SCHEMA: target.schema } : {}),
  });
  children.push(child);
  onLines(child, (line) => {
    if (line.startsWith('handled ')) onHandled(BigInt(line.slice(8)));
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

describe.each(backends)('a subscription SIGKILLed and restarted (%s)', (_name, target) => {
  it('resumes from its checkpoint without skipping an event', async () => {
    // Must not be lost: any of the 3,000 events; the restarted run may repeat some (at least once).
    const t = target();
    const store = await open(t);
    for (let i = 0; i < 30; i++) {
      await store.append(
        `s-${i % 7}`,
        Array.from({ length: 100 }, (_, n) => ({ type: 'E', data: { i, n } })),
      );
    }
    const positions: bigint[] = [];
    for await (const e of store.readAll()) positions.push(e.position);
    await store.close();
    expect(positions).toHaveLength(3000);

    const firstRun = new Set<bigint>();
    const first = run(t, (p) => firstRun.add(p));
    await waitFor(() => firstRun.size >= 700, 'the first run to handle some', 30_000);
    await kill(first);
    expect(firstRun.size).toBeLessThan(3000);

    const secondRun: bigint[] = [];
    const second = run(t, (p) => secondRun.push(p));
    await waitFor(
      () => secondRun.includes(positions[positions.length - 1]!),
      'the second run to reach the end',
      30_000,
    );
    await kill(second);

    // Every event handled by one run or the other. The second run starts at the checkpoint, which
    // is at or before the last event the first run printed, and goes on in order from there.
    const union = new Set([...firstRun, ...secondRun]);
    expect(positions.every((p) => union.has(p))).toBe(true);
    const resumedAt = positions.indexOf(secondRun[0]!);
    expect(resumedAt).toBeGreaterThan(0);
    expect(positions.slice(0, resumedAt).every((p) => firstRun.has(p))).toBe(true);
    expect(secondRun).toEqual(positions.slice(resumedAt, resumedAt + secondRun.length));
  }, 60_000);
});
