import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createBus } from '../connect/create-bus.js';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { SqliteEventStoreBackend } from '../sqlite/sqlite-backend.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { waitFor } from '../testing/wait.js';
import { createOutbox } from './outbox.js';
import type { OutboxBacklogReport } from './outbox-reports.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Child {
  readonly process: ChildProcess;
  readonly committed: Set<string>;
  readonly handled: Set<string>;
  /** The last `backlog` line: pending, awaiting settlement. */
  backlog: readonly [number, number] | undefined;
}

function start(path: string, env: Record<string, string>): Child {
  const child = spawnFixture(fileURLToPath(new URL('./fixtures/memory-bus-process.ts', import.meta.url)), {
    FERRY_SQLITE_PATH: path,
    ...env,
  });
  cleanups.push(() => kill(child));
  const seen: Child = { process: child, committed: new Set(), handled: new Set(), backlog: undefined };
  onLines(child, (line) => {
    const [word, a, b] = line.split(' ');
    if (word === 'committed') seen.committed.add(a!);
    else if (word === 'handled') seen.handled.add(a!);
    else if (word === 'backlog') seen.backlog = [Number(a), Number(b)];
  });
  return seen;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** What the file holds: the effects of handled messages (one row per run), and the outbox's backlog. */
async function inspect(path: string): Promise<{ effects: string[]; backlog: OutboxBacklogReport }> {
  const backend = new SqliteEventStoreBackend({ path, busyTimeoutMs: 10_000 });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  const bus = await createBus({
    url: `memory://crash-${Math.random()}`,
    service: 'inspect',
    logger: silentLogger,
  });
  const outbox = await createOutbox({ store, bus, relay: false, logger: silentLogger });
  try {
    const rows = await outbox.unitOfWork((work) =>
      work.query<{ message_id: string }>('SELECT message_id FROM effects ORDER BY rowid'),
    );
    return { effects: rows.map((r) => r.message_id), backlog: await outbox.backlog() };
  } finally {
    await outbox.close();
    await bus.close();
    await store.close();
  }
}

describe('outbox with the memory bus: a process SIGKILLed with messages published and not yet handled', () => {
  it('hands every committed message to its transactional inbox exactly once after the restart', async () => {
    // Must not be lost: a message committed through the outbox and published on the memory bus
    // (which held it in process memory only) whose handler had not committed when the process was
    // killed. Must not be applied twice: a message handled before the kill whose row was still in
    // the outbox (it goes out again, and the inbox drops it).
    const dir = mkdtempSync(join(tmpdir(), 'ferry-outbox-crash-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'inventory.db');

    const first = start(path, { MODE: 'produce', COUNT: '40', KEYS: '4', HANDLE_MS: '50', LEASE_MS: '500' });
    await waitFor(
      () => first.committed.size === 40 && first.handled.size >= 3,
      'every message committed and a few handled',
      30_000,
    );
    await kill(first.process);
    const committed = [...first.committed];

    // Killed mid-stream: messages were committed, published, and not handled. Each of those is
    // still in the outbox (a row is deleted only once every subscription settled its message).
    const before = await inspect(path);
    const unhandled = committed.filter((id) => !before.effects.includes(id));
    expect(unhandled.length).toBeGreaterThan(0);
    expect(before.backlog.pending + before.backlog.awaitingSettlement).toBeGreaterThanOrEqual(
      unhandled.length,
    );

    const second = start(path, { MODE: 'resume', HANDLE_MS: '5', LEASE_MS: '500' });
    await waitFor(
      () => unhandled.every((id) => second.handled.has(id)),
      () =>
        `the messages not handled before the kill (${unhandled.filter((id) => second.handled.has(id)).length}/${unhandled.length})`,
      30_000,
    );
    await waitFor(() => second.backlog?.[0] === 0 && second.backlog[1] === 0, 'the outbox to empty', 30_000);
    await kill(second.process);

    const after = await inspect(path);
    // Each committed message applied once: none lost, none twice, nothing else.
    expect([...after.effects].sort()).toEqual([...committed].sort());
    expect(after.backlog).toMatchObject({ pending: 0, awaitingSettlement: 0, failed: 0 });
  }, 90_000);
});
