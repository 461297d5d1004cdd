import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createEventStore } from '../connect/create-event-store.js';
import { silentLogger } from '../logging/logger.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
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
    LEASE_MS: '1000',
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

describe.each(backends)(
  'a subscription running in two processes, the active one SIGKILLed (%s)',
  (_name, target) => {
    it('runs in one process at a time, and the standby resumes from the checkpoint without skipping an event', async () => {
      // Must not be lost: any of the 3,000 events. Must not happen: the standby handling while the
      // active process lives. The standby may repeat what followed the last checkpoint (at least once).
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

      const runs: bigint[][] = [[], []];
      const processes = [run(t, (p) => runs[0]!.push(p)), run(t, (p) => runs[1]!.push(p))];
      await waitFor(() => runs[0]!.length + runs[1]!.length >= 700, 'one process to handle some', 30_000);
      const active = runs[0]!.length > 0 ? 0 : 1;
      const standby = 1 - active;
      await kill(processes[active]!);
      const first = runs[active]!;
      expect(runs[standby]).toEqual([]);
      expect(first.length).toBeLessThan(3000);

      const second = runs[standby]!;
      await waitFor(
        () => second.includes(positions[positions.length - 1]!),
        'the standby to reach the end',
        30_000,
      );
      await kill(processes[standby]!);

      // Every event handled by one process or the other. The standby starts at the checkpoint, which
      // is at or before the last event the first printed, and goes on in order from there.
      const firstSet = new Set(first);
      const union = new Set([...first, ...second]);
      expect(positions.every((p) => union.has(p))).toBe(true);
      const resumedAt = positions.indexOf(second[0]!);
      expect(resumedAt).toBeGreaterThan(0);
      expect(positions.slice(0, resumedAt).every((p) => firstSet.has(p))).toBe(true);
      expect(second).toEqual(positions.slice(resumedAt, resumedAt + second.length));
      expect(first).toEqual(positions.slice(0, first.length));
    }, 60_000);
  },
);
