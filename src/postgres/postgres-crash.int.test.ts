import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EventStore } from '../eventstore/store.js';
import { silentLogger } from '../logging/logger.js';
import { onLines, spawnFixture } from '../testing/child-process.js';
import { FaultProxy } from '../testing/fault-proxy.js';
import { dropSchemas, postgresTestUrl, testSchemaName } from '../testing/postgres.js';
import { waitFor } from '../testing/wait.js';
import { PostgresEventStoreBackend } from './postgres-backend.js';

const schemas: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(() => dropSchemas(schemas));

function freshSchema(): string {
  const schema = testSchemaName('crash');
  schemas.push(schema);
  return schema;
}

async function openStore(schema: string, url = postgresTestUrl()): Promise<EventStore> {
  const backend = new PostgresEventStoreBackend({ url, schema, poolSize: 4, logger: silentLogger });
  await backend.open();
  const store = new EventStore(backend, { logger: silentLogger });
  cleanups.push(() => store.close());
  return store;
}

function fixture(name: string, schema: string): ChildProcess {
  const child = spawnFixture(fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)), {
    PG_URL: postgresTestUrl(),
    PG_SCHEMA: schema,
  });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

describe('PostgreSQL event store when processes crash', () => {
  it('leaves no partial batch when the appending process is SIGKILLed', async () => {
    // Must not be lost: every append the process saw resolve. Must not exist: part of a batch.
    const schema = freshSchema();
    await (await openStore(schema)).close();
    const child = fixture('append-process.ts', schema);
    const confirmed = new Map<string, number>();
    onLines(child, (line) => {
      const [word, streamId, version] = line.split(' ');
      if (word === 'appended')
        confirmed.set(streamId!, Math.max(confirmed.get(streamId!) ?? -1, Number(version)));
    });
    await waitFor(
      () => [...confirmed.values()].length >= 20 && sum(confirmed) > 2000,
      'appends to land',
      30_000,
    );
    await kill(child);

    const store = await openStore(schema);
    for (let s = 0; s < 20; s++) {
      const events = await store.readStream(`stream-${s}`);
      expect(events.length % 10).toBe(0);
      expect(events.map((e) => e.version)).toEqual(events.map((_, i) => i));
      expect(events.length).toBeGreaterThan(confirmed.get(`stream-${s}`) ?? -1);
    }
  }, 60_000);

  it('keeps appends exactly once when the network resets connections under them', async () => {
    // Must not be lost: every append that resolved. Must not be doubled: any of them (retries reuse event ids).
    const schema = freshSchema();
    await (await openStore(schema)).close();
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: 5432 });
    cleanups.push(() => proxy.close());
    const url = new URL(postgresTestUrl());
    url.port = String(proxy.port);
    const store = await openStore(schema, url.toString());

    let resolved = 0;
    let rejected = 0;
    let stop = false;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        try {
          await store.append(`w-${w}`, [{ type: 'E', data: { w, i } }]);
          resolved++;
        } catch {
          rejected++;
        }
      }
    });
    for (let k = 0; k < 5; k++) {
      await waitFor(() => resolved >= (k + 1) * 100, 'progress between resets', 20_000);
      proxy.reset();
    }
    stop = true;
    await Promise.all(writers);

    const check = await openStore(schema);
    let total = 0;
    for (let w = 0; w < 4; w++) {
      const events = await check.readStream(`w-${w}`);
      const keys = events.map((e) => JSON.stringify(e.data));
      expect(new Set(keys).size).toBe(keys.length);
      total += events.length;
    }
    // Appends cut by a reset were retried with their event ids: all resolved, each stored once.
    expect(rejected).toBe(0);
    expect(total).toBe(resolved);
  }, 60_000);
});

function sum(map: Map<string, number>): number {
  let total = 0;
  for (const version of map.values()) total += version + 1;
  return total;
}
