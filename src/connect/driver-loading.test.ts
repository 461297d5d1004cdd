import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

/** Runs an ES module snippet in a fresh Node process that resolves `ferry` to the sources. */
async function probe(source: string): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    ['--conditions=ferry-source', '--import', 'tsx', '--input-type=module', '-e', source],
    { cwd: new URL('../..', import.meta.url).pathname, timeout: 30_000 },
  );
  return stdout.trim();
}

const loadedDrivers = `
import { createRequire } from 'node:module';
const cache = Object.keys(createRequire(import.meta.url).cache);
const drivers = ['amqplib', 'pg', 'better-sqlite3'].filter((d) => cache.some((k) => k.includes('/node_modules/' + d + '/')));
console.log(drivers.length > 0 ? drivers.join(' ') + ' loaded' : 'no driver loaded');
`;

describe('driver loading', () => {
  it('does not load amqplib for a memory bus', async () => {
    const out = await probe(`
      import { createBus, silentLogger } from 'ferry';
      const bus = await createBus({ url: 'memory://', service: 'probe', logger: silentLogger });
      await bus.close();
      ${loadedDrivers}
    `);
    expect(out).toBe('no driver loaded');
  });

  it('loads amqplib once an amqp URL asks for it', async () => {
    const out = await probe(`
      import { createBus, silentLogger } from 'ferry';
      const bus = await createBus({ url: 'amqp://guest:guest@127.0.0.1:5672', service: 'probe', logger: silentLogger });
      await bus.close();
      ${loadedDrivers}
    `);
    expect(out).toBe('amqplib loaded');
  });

  it('loads no driver for a memory event store', async () => {
    const out = await probe(`
      import { createEventStore } from 'ferry';
      const store = await createEventStore({ url: 'memory://' });
      await store.close();
      ${loadedDrivers}
    `);
    expect(out).toBe('no driver loaded');
  });

  it('loads better-sqlite3, and only it, once a sqlite URL asks for it', async () => {
    const out = await probe(`
      import { createEventStore } from 'ferry';
      const store = await createEventStore({ url: 'sqlite::memory:' });
      await store.close();
      ${loadedDrivers}
    `);
    expect(out).toBe('better-sqlite3 loaded');
  });
});
